package batch_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/batch"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// hook counts single commands and pipelines, and can hold the PING
// commands until released, to keep a send in flight.
type hook struct {
	single, pipes, piped atomic.Int64
	gate                 chan struct{} // PING waits for it when not nil
	pinged               chan struct{} // receives once per held PING
}

func (h *hook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "ping" && h.gate != nil {
			h.pinged <- struct{}{}
			<-h.gate
		}
		if !handshake(cmd) {
			h.single.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && handshake(cmds[0]) {
			return next(ctx, cmds)
		}
		h.pipes.Add(1)
		h.piped.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// handshake reports the commands go-redis sends on its own: connection
// set-up and cluster discovery.
func handshake(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select", "cluster", "command":
		return true
	}
	return false
}

func clients(t *testing.T) map[string]redis.UniversalClient {
	return map[string]redis.UniversalClient{
		"single":  redistest.Client(t),
		"cluster": redistest.StartCluster(t),
	}
}

func mustNew(t *testing.T, c redis.UniversalClient, max int) *batch.Batcher {
	t.Helper()
	b, err := batch.New(c, max)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConcurrentReplies has many goroutines count on their own keys through
// one Batcher: every caller must get the reply of its own command, and the
// commands must have travelled in shared pipelines.
func TestConcurrentReplies(t *testing.T) {
	for name, c := range clients(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := &hook{}
			c.AddHook(h)
			b := mustNew(t, c, 1)
			ns := redistest.Namespace(t)
			ctx := t.Context()
			const goroutines, rounds = 64, 100
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					key := fmt.Sprintf("%s:%d", ns, g)
					for i := 1; i <= rounds; i++ {
						cmd := redis.NewIntCmd(ctx, "incr", key)
						if err := b.Process(ctx, cmd); err != nil {
							t.Errorf("INCR %s: %v", key, err)
							return
						}
						if cmd.Val() != int64(i) {
							t.Errorf("INCR %s returned %d, want %d", key, cmd.Val(), i)
							return
						}
					}
				})
			}
			wg.Wait()
			sent := h.single.Load() + h.piped.Load()
			if sent < goroutines*rounds {
				t.Fatalf("%d commands reached the client, want ≥ %d", sent, goroutines*rounds)
			}
			if h.pipes.Load() == 0 || h.piped.Load() < 2*h.pipes.Load() {
				t.Fatalf("%d pipelines carrying %d commands: no batching under load", h.pipes.Load(), h.piped.Load())
			}
			t.Logf("%d single sends, %d pipelines carrying %d commands", h.single.Load(), h.pipes.Load(), h.piped.Load())
		})
	}
}

// TestLoneCallerSendsDirectly checks that a caller alone never pipelines.
func TestLoneCallerSendsDirectly(t *testing.T) {
	c := redistest.Client(t)
	h := &hook{}
	c.AddHook(h)
	b := mustNew(t, c, 1)
	ctx, key := t.Context(), redistest.Namespace(t)+":k"
	for range 50 {
		if err := b.Process(ctx, redis.NewIntCmd(ctx, "incr", key)); err != nil {
			t.Fatal(err)
		}
	}
	if h.pipes.Load() != 0 || h.single.Load() != 50 {
		t.Fatalf("%d single sends and %d pipelines, want 50 and 0", h.single.Load(), h.pipes.Load())
	}
}

// TestQueuedCallerCancelled holds the only send slot, queues commands, and
// cancels one of them: it must return at once and never reach Redis, while
// the others are sent in one batch when the slot frees.
func TestQueuedCallerCancelled(t *testing.T) {
	c := redistest.Client(t)
	h := &hook{gate: make(chan struct{}), pinged: make(chan struct{}, 1)}
	c.AddHook(h)
	b := mustNew(t, c, 1)
	ctx, ns := t.Context(), redistest.Namespace(t)

	held := make(chan error, 1)
	go func() { held <- b.Process(ctx, redis.NewStatusCmd(ctx, "ping")) }()
	<-h.pinged // the slot is taken and stays taken

	cctx, cancel := context.WithCancel(ctx)
	cancelled := make(chan error, 1)
	go func() { cancelled <- b.Process(cctx, redis.NewIntCmd(cctx, "incr", ns+":cancelled")) }()
	results := make(chan *redis.IntCmd, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			cmd := redis.NewIntCmd(ctx, "incrby", ns+":sent", i+1)
			_ = b.Process(ctx, cmd)
			results <- cmd
		})
	}
	time.Sleep(50 * time.Millisecond) // let them queue
	cancel()
	select {
	case err := <-cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled queued command: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled queued command did not return")
	}

	close(h.gate)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(results)
	for cmd := range results {
		if cmd.Err() != nil {
			t.Fatalf("queued command: %v", cmd.Err())
		}
	}
	if n, err := c.Get(ctx, ns+":sent").Int(); err != nil || n != 6 {
		t.Fatalf("sum of the queued INCRBYs = %d, %v; want 6", n, err)
	}
	if n := c.Exists(ctx, ns+":cancelled").Val(); n != 0 {
		t.Fatal("the cancelled command reached Redis")
	}
	if h.pipes.Load() != 1 || h.piped.Load() != 3 {
		t.Fatalf("%d pipelines carrying %d commands, want 1 carrying 3", h.pipes.Load(), h.piped.Load())
	}
}

// TestErrorsStayWithTheirCommand checks that a failing command in a batch
// does not fail its neighbours.
func TestErrorsStayWithTheirCommand(t *testing.T) {
	c := redistest.Client(t)
	h := &hook{gate: make(chan struct{}), pinged: make(chan struct{}, 1)}
	c.AddHook(h)
	b := mustNew(t, c, 1)
	ctx, ns := t.Context(), redistest.Namespace(t)
	if err := c.Set(ctx, ns+":text", "not a number", 0).Err(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.Process(ctx, redis.NewStatusCmd(ctx, "ping")) }()
	<-h.pinged
	bad := redis.NewIntCmd(ctx, "incr", ns+":text")
	good := redis.NewIntCmd(ctx, "incr", ns+":n")
	var wg sync.WaitGroup
	wg.Go(func() { _ = b.Process(ctx, bad) })
	wg.Go(func() { _ = b.Process(ctx, good) })
	time.Sleep(50 * time.Millisecond)
	close(h.gate)
	wg.Wait()
	if bad.Err() == nil {
		t.Fatal("INCR of a string succeeded")
	}
	if good.Err() != nil || good.Val() != 1 {
		t.Fatalf("neighbour of a failing command: %d, %v", good.Val(), good.Err())
	}
}

func TestNewRejectsZero(t *testing.T) {
	if _, err := batch.New(redistest.Client(t), 0); err == nil {
		t.Fatal("New with maxInFlight 0 succeeded")
	}
}

func TestCancelledBeforeSending(t *testing.T) {
	b := mustNew(t, redistest.Client(t), 1)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	cmd := redis.NewStatusCmd(ctx, "ping")
	if err := b.Process(ctx, cmd); !errors.Is(err, context.Canceled) || !errors.Is(cmd.Err(), context.Canceled) {
		t.Fatalf("Process with a cancelled context: %v, cmd %v", err, cmd.Err())
	}
}

// panicHook panics on GET, as a faulty user hook might.
type panicHook struct{}

func (panicHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (panicHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "get" {
			panic("hook failure")
		}
		return next(ctx, cmd)
	}
}
func (panicHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestPanicFreesTheSlot checks that a panic while sending does not leave
// the send slot taken for ever.
func TestPanicFreesTheSlot(t *testing.T) {
	c := redistest.Client(t)
	c.AddHook(panicHook{})
	b := mustNew(t, c, 1)
	ctx := t.Context()
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the hook's panic did not reach the caller")
			}
		}()
		_ = b.Process(ctx, redis.NewStringCmd(ctx, "get", "k"))
	}()
	done := make(chan error, 1)
	go func() { done <- b.Process(ctx, redis.NewStatusCmd(ctx, "ping")) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the slot stayed taken after a panic")
	}
}

// pipePanicHook holds PING at a gate, like hook, and panics in every
// pipeline, as a faulty user hook might.
type pipePanicHook struct{ hook }

func (h *pipePanicHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && handshake(cmds[0]) {
			return next(ctx, cmds)
		}
		panic("pipeline hook failure")
	}
}

// TestPanicFailsTheWholeBatch: when sending a batch panics, the caller that
// sent it gets the panic and every other command of the batch an error,
// never a nil error with an empty reply.
func TestPanicFailsTheWholeBatch(t *testing.T) {
	c := redistest.Client(t)
	h := &pipePanicHook{hook{gate: make(chan struct{}), pinged: make(chan struct{}, 1)}}
	c.AddHook(h)
	b := mustNew(t, c, 1)
	ctx, ns := t.Context(), redistest.Namespace(t)
	if err := c.Set(ctx, ns+":k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.Process(ctx, redis.NewStatusCmd(ctx, "ping")) }()
	<-h.pinged
	type outcome struct {
		panicked bool
		err      error
	}
	outcomes := make(chan outcome, 3)
	for _, cmd := range []redis.Cmder{
		redis.NewStringCmd(ctx, "get", ns+":k"),
		redis.NewIntCmd(ctx, "del", ns+":k"),
		redis.NewIntCmd(ctx, "exists", ns+":k"),
	} {
		go func() {
			defer func() {
				if r := recover(); r != nil {
					outcomes <- outcome{panicked: true}
				}
			}()
			outcomes <- outcome{err: b.Process(ctx, cmd)}
		}()
	}
	time.Sleep(50 * time.Millisecond) // let them queue
	close(h.gate)
	panics := 0
	for range 3 {
		o := <-outcomes
		switch {
		case o.panicked:
			panics++
		case o.err == nil:
			t.Error("a command of a batch that panicked reports success")
		}
	}
	if panics != 1 {
		t.Fatalf("%d callers got the panic, want the one that sent the batch", panics)
	}
}
