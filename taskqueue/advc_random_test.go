package taskqueue_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// advcChaos breaks connections at random: a write of a script (EVALSHA)
// or a BLPOP has its reply lost after Redis ran it, with probability p;
// and now and then a subscription's connection is closed.
type advcChaos struct {
	p      float64
	on     atomic.Bool
	resets atomic.Int64
	mu     sync.Mutex
	subs   []*advcChaosConn
}

func (ch *advcChaos) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &advcChaosConn{Conn: c, ch: ch}, nil
}

type advcChaosConn struct {
	net.Conn
	ch      *advcChaos
	pending atomic.Bool
	sub     atomic.Bool
}

func (c *advcChaosConn) Write(b []byte) (int, error) {
	lb := bytes.ToLower(b)
	if bytes.Contains(lb, []byte("subscribe")) && c.sub.CompareAndSwap(false, true) {
		c.ch.mu.Lock()
		c.ch.subs = append(c.ch.subs, c)
		c.ch.mu.Unlock()
	}
	if c.ch.on.Load() && (bytes.Contains(lb, []byte("evalsha")) || bytes.Contains(lb, []byte("blpop"))) && rand.Float64() < c.ch.p {
		c.pending.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *advcChaosConn) Read(b []byte) (int, error) {
	if !c.pending.Load() {
		return c.Conn.Read(b)
	}
	n, err := c.Conn.Read(b)
	if err != nil {
		return n, err
	}
	c.pending.Store(false)
	c.ch.resets.Add(1)
	time.Sleep(5 * time.Millisecond)
	_ = c.Conn.Close()
	return 0, io.EOF
}

// killSub closes a random subscription connection.
func (ch *advcChaos) killSub() {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if len(ch.subs) == 0 {
		return
	}
	i := rand.IntN(len(ch.subs))
	_ = ch.subs[i].Conn.Close()
	ch.subs = append(ch.subs[:i], ch.subs[i+1:]...)
}

// TestAdvCRandomLoadWithResets: a randomized workload over a small id
// space — every policy, Submit, Wait, Cancel, Requeue, WithOnce, retries,
// listeners coming and going (two Listen calls per Queue value at times),
// one worker stalling — while connections lose replies at random (the
// command ran, go-redis resends it) and subscriptions are cut. Checked:
// the invariants, no two runs of one id at the same time on live workers,
// every call returns in time, every task ends once a clean listener runs.
func TestAdvCRandomLoadWithResets(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ch := &advcChaos{p: advcChaosP}
		var client func() redis.UniversalClient
		var opts []taskqueue.Option
		if tg.name == "single" {
			addr := redistest.Addr(t)
			client = func() redis.UniversalClient {
				c := redis.NewClient(&redis.Options{Addr: addr, Dialer: ch.dial, PoolSize: 64})
				t.Cleanup(func() { _ = c.Close() })
				return c
			}
			opts = []taskqueue.Option{taskqueue.WithBatching(0)}
		} else {
			addrs := redistest.ClusterAddrs(t)
			client = func() redis.UniversalClient {
				c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Dialer: ch.dial, PoolSize: 64})
				t.Cleanup(func() { _ = c.Close() })
				return c
			}
		}
		ns := redistest.Namespace(t)
		ctx := ctxT(t, 40*time.Second)
		vis := 300 * time.Millisecond
		names := []string{"ok", "fail", "flaky", "slow", "block"}

		var mu sync.Mutex
		runningLive := map[string]int{}
		var overlaps, runsTotal atomic.Int64
		var logged atomic.Int64
		fn := func(stalled *atomic.Bool) taskqueue.TaskFunc {
			return func(ctx context.Context, task *taskqueue.Task) (any, error) {
				runsTotal.Add(1)
				if !stalled.Load() {
					mu.Lock()
					runningLive[task.ID]++
					if runningLive[task.ID] > 1 {
						overlaps.Add(1)
						if logged.Add(1) <= 5 {
							t.Logf("overlap on %s (name %s, deliveries %d)", task.ID, task.Name, task.Deliveries)
						}
					}
					mu.Unlock()
					defer func() {
						mu.Lock()
						runningLive[task.ID]--
						mu.Unlock()
					}()
				}
				if rand.IntN(3) == 0 {
					_ = task.Update(ctx, 1, 3)
				}
				switch task.Name {
				case "fail":
					return nil, errors.New("fails")
				case "flaky":
					if task.Attempts < 1 {
						return nil, errors.New("flaky")
					}
				case "slow", "block":
					d := 60
					if task.Name == "block" {
						d = 400
					}
					select {
					case <-time.After(time.Duration(rand.IntN(d)) * time.Millisecond):
					case <-ctx.Done():
						return nil, context.Cause(ctx)
					}
				}
				return task.ID, nil
			}
		}
		backoff := taskqueue.WithRetryBackoff(func(int) time.Duration { return time.Duration(rand.IntN(30)) * time.Millisecond })
		type member struct {
			q       *taskqueue.Queue
			stalled *atomic.Bool
		}
		var members []member
		for range 4 {
			m := member{stalled: new(atomic.Bool)}
			q, err := taskqueue.New(client(), ns, append(append([]taskqueue.Option{}, opts...), taskqueue.WithVisibilityTimeout(vis),
				taskqueue.WithGracePeriod(100*time.Millisecond), backoff, taskqueue.WithMaxLost(3), taskqueue.WithTaskFunc(fn(m.stalled)))...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = q.Close() })
			m.q = q
			members = append(members, m)
		}
		checker, err := taskqueue.New(tg.client(t), ns)
		if err != nil {
			t.Fatal(err)
		}
		defer checker.Close()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var unexpected, ops, netErrs, knownStale atomic.Int64
		var problemsMu sync.Mutex
		problems := map[string]int{}
		fail := func(format string, args ...any) {
			unexpected.Add(1)
			if unexpected.Load() <= 10 {
				t.Errorf(format, args...)
			}
		}
		for i, m := range members {
			for j := range 2 { // two Listen calls per Queue value, at times
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						if j == 1 && rand.IntN(2) == 0 {
							time.Sleep(300 * time.Millisecond)
							continue
						}
						lctx, cancel := context.WithTimeout(ctx, time.Duration(300+rand.IntN(900))*time.Millisecond)
						err := m.q.Listen(lctx, names[(i+j)%3:], 1+rand.IntN(4))
						cancel()
						var ne net.Error
						if errors.As(err, &ne) || errors.Is(err, io.EOF) {
							netErrs.Add(1) // its first heartbeat failed: documented
						} else if err != nil && ctx.Err() == nil {
							fail("Listen: %v", err)
						}
						time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
					}
				})
			}
			if i == 0 {
				m.stalled.Store(true)
				wg.Go(func() {
					paused := false
					for {
						select {
						case <-stop:
							taskqueue.PauseHeartbeats(m.q, false)
							return
						case <-time.After(time.Duration(200+rand.IntN(400)) * time.Millisecond):
						}
						paused = !paused
						taskqueue.PauseHeartbeats(m.q, paused)
					}
				})
			}
		}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(300+rand.IntN(700)) * time.Millisecond):
				}
				ch.killSub()
			}
		})
		t0 := time.Now()
		var used sync.Map
		policies := []taskqueue.Policy{taskqueue.Auto, taskqueue.Local, taskqueue.Remote, taskqueue.LocalFirst, taskqueue.RemoteFirst}
		for c := range 12 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					ops.Add(1)
					m := members[1+rand.IntN(len(members)-1)]
					id := fmt.Sprintf("id%d-%d", rand.IntN(25), time.Since(t0)/(700*time.Millisecond))
					used.Store(id, true)
					// One name per id: a join with another name is
					// TestAdvCLapsedJoinWithOtherNameRunsTwice.
					name := names[len(id)%len(names)]
					timeout := time.Duration(200+rand.IntN(1500)) * time.Millisecond
					opts := []taskqueue.QueryOption{taskqueue.WithTimeout(timeout), taskqueue.WithMaxAttempts(1 + rand.IntN(3)),
						taskqueue.WithPolicy(policies[rand.IntN(len(policies))]), taskqueue.WithFallbackAfter(time.Duration(rand.IntN(300)) * time.Millisecond)}
					if rand.IntN(4) == 0 {
						opts = append(opts, taskqueue.WithOnce())
					}
					start := time.Now()
					var err error
					switch k := rand.IntN(10); {
					case k < 5:
						qctx, cancel := context.WithTimeout(ctx, time.Duration(100+rand.IntN(2000))*time.Millisecond)
						_, err = m.q.Query(qctx, id, name, c, opts...)
						cancel()
					case k < 7:
						_, err = m.q.Submit(ctx, id, name, c, opts...)
					case k < 8:
						wctx, cancel := context.WithTimeout(ctx, time.Duration(rand.IntN(500))*time.Millisecond)
						_, err = m.q.Wait(wctx, id)
						cancel()
					case k < 9:
						_, err = m.q.Cancel(ctx, id)
					default:
						err = m.q.Requeue(ctx, id)
						if errors.Is(err, taskqueue.ErrInvalidArgument) || errors.Is(err, taskqueue.ErrNotFound) {
							err = nil
						}
					}
					if el := time.Since(start); el > timeout+2500*time.Millisecond {
						fail("%s call took %v (timeout %v)", id, el, timeout)
					}
					var te *taskqueue.TaskError
					var ne net.Error
					switch {
					case errors.As(err, &ne), errors.Is(err, io.EOF):
						netErrs.Add(1) // retries used up: the outcome is unknown
					case err == nil, errors.As(err, &te), errors.Is(err, taskqueue.ErrTimeout), errors.Is(err, taskqueue.ErrNotFound), errors.Is(err, taskqueue.ErrCancelled),
						errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
					default:
						fail("%s: unexpected error %v", id, err)
					}
				}
			})
		}
		var checks atomic.Int64
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				p, err := invariants(ctx, checker)
				if err != nil {
					fail("checker: %v", err)
					return
				}
				checks.Add(1)
				problemsMu.Lock()
				for _, s := range p {
					if advcKnownStaleActive(s) {
						knownStale.Add(1) // TestAdvCLapsedSubmitLeavesActiveEntry
						continue
					}
					problems[advcProblemKind(s)]++
				}
				problemsMu.Unlock()
			}
		})
		ch.on.Store(true)
		time.Sleep(6 * time.Second)
		ch.on.Store(false)
		close(stop)
		wg.Wait()
		if len(problems) > 0 {
			t.Errorf("invariants broken (kind: checks seeing it): %v", problems)
		}
		if overlaps.Load() > 0 {
			t.Errorf("%d runs started while the same id ran on a live worker", overlaps.Load())
		}
		t.Logf("%d operations, %d runs, %d resets, %d calls failed with network errors, %d invariant checks (%d problems of the known stale T|a| entry), %d unexpected, %d overlapping runs on live workers",
			ops.Load(), runsTotal.Load(), ch.resets.Load(), netErrs.Load(), checks.Load(), knownStale.Load(), unexpected.Load(), overlaps.Load())
		clean, err := taskqueue.New(tg.client(t), ns, append(append([]taskqueue.Option{}, tg.opts...), taskqueue.WithVisibilityTimeout(vis),
			taskqueue.WithTaskFunc(fn(new(atomic.Bool))))...)
		if err != nil {
			t.Fatal(err)
		}
		defer clean.Close()
		listen(t, clean, names, 8)
		deadline := time.Now().Add(4 * time.Second)
		for {
			var open []string
			for id := range used.Range {
				id := id.(string)
				if got, err := clean.GetTask(ctx, id); err == nil && !got.State.Terminal() {
					open = append(open, fmt.Sprintf("%s %s (expiry %v ago)", id, got.State, time.Since(got.Expiry).Round(time.Millisecond)))
				}
			}
			if len(open) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("tasks still open 4 s after the load stopped, with a live listener: %v", open)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// advcKnownStaleActive reports whether an invariant problem is the one a
// Submit's lapsed-claim path leaves (a pending task still in T|a|).
func advcKnownStaleActive(s string) bool {
	f := strings.Fields(s)
	switch {
	case len(f) == 4 && f[0] == "pending" && f[2] == "in":
		sets := strings.Split(f[3], ",")
		return len(sets) == 2 && strings.HasPrefix(sets[0], "q|") && strings.HasPrefix(sets[1], "a|")
	case len(f) == 6 && strings.HasPrefix(f[0], "a|") && f[1] == "holds" && f[5] == "pending":
		return true
	case len(f) == 4 && f[0] == "active" && f[2] == "without":
		return true // the same entry, seen from the T|a| side
	}
	return false
}

// advcProblemKind reduces an invariant problem to its kind (ids dropped).
func advcProblemKind(s string) string {
	f := strings.Fields(s)
	var out []string
	for _, w := range f {
		if strings.HasPrefix(w, "id") {
			w = "<id>"
		}
		out = append(out, w)
	}
	return strings.Join(out, " ")
}

// advcChaosP is the chance that a script's reply is lost.
var advcChaosP = 0.03

func init() {
	if s := os.Getenv("ADVC_P"); s != "" {
		advcChaosP, _ = strconv.ParseFloat(s, 64)
	}
}

// TestAdvCBatchedResends: many concurrent queries through a batcher that
// lets 2 commands in flight (so most leave in pipelines, resent whole when
// a reply is lost), replies lost at random: every Query(Local) runs its
// task exactly once and gets its own result; every Query(Remote) gets its
// result, without overlapping runs; nothing is left open.
func TestAdvCBatchedResends(t *testing.T) {
	ch := &advcChaos{p: 0.3}
	addr := redistest.Addr(t)
	newClient := func() redis.UniversalClient {
		c := redis.NewClient(&redis.Options{Addr: addr, Dialer: ch.dial, PoolSize: 32})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ns := redistest.Namespace(t)
	ctx := ctxT(t, 30*time.Second)
	ov := newAdvcOverlap()
	var mu sync.Mutex
	runs := map[string]int{}
	fn := func(ctx context.Context, task *taskqueue.Task) (any, error) {
		defer ov.enter(task.ID)()
		mu.Lock()
		runs[task.ID]++
		mu.Unlock()
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		return "r-" + task.ID, nil
	}
	mk := func() *taskqueue.Queue {
		q, err := taskqueue.New(newClient(), ns, taskqueue.WithBatching(2), taskqueue.WithVisibilityTimeout(time.Second), taskqueue.WithTaskFunc(fn))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = q.Close() })
		return q
	}
	caller, worker := mk(), mk()
	listenCtx(t, worker, []string{"remote"}, 8)
	ch.on.Store(true)
	var wg sync.WaitGroup
	var netErrs, bad atomic.Int64
	for i := range 300 {
		wg.Go(func() {
			id := fmt.Sprint("id", i)
			pol, name := taskqueue.Local, "local"
			if i%2 == 1 {
				pol, name = taskqueue.Remote, "remote"
			}
			task, err := caller.Query(ctx, id, name, nil, taskqueue.WithPolicy(pol), taskqueue.WithTimeout(8*time.Second))
			var ne net.Error
			switch {
			case errors.As(err, &ne), errors.Is(err, io.EOF):
				netErrs.Add(1)
			case err != nil:
				bad.Add(1)
				t.Errorf("%s (%v): %v", id, pol, err)
			case string(task.Result) != `"r-`+id+`"`:
				bad.Add(1)
				t.Errorf("%s: result %s", id, task.Result)
			}
		})
	}
	wg.Wait()
	ch.on.Store(false)
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < 300; i += 2 {
		id := fmt.Sprint("id", i)
		if runs[id] > 1 {
			t.Errorf("Query(Local) %s ran %d times", id, runs[id])
		}
	}
	if ov.overlaps.Load() > 0 {
		t.Errorf("%d overlapping runs", ov.overlaps.Load())
	}
	t.Logf("%d resets, %d calls failed with network errors, %d bad", ch.resets.Load(), netErrs.Load(), bad.Load())
}
