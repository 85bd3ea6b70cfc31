package taskqueue_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// advcDialer breaks a connection after Redis ran a chosen command, at the
// worst moment: once armed, the first write matching match marks its
// connection; the reply is read from Redis (so the command surely ran),
// then cond decides whether to break it. When it does, during runs (other
// clients change the task meanwhile: the resend arrives after them), the
// connection is closed and the reply lost (io.EOF): go-redis resends the
// command unless MaxRetries is -1. When cond says no, the reply is
// delivered and the dialer stays armed.
type advcDialer struct {
	armed  atomic.Bool
	match  func([]byte) bool
	cond   func() bool // nil: always
	during func()      // nil: nothing
	fired  chan struct{}
	once   sync.Once
}

func newAdvcDialer(match func([]byte) bool) *advcDialer {
	return &advcDialer{match: match, fired: make(chan struct{})}
}

func (d *advcDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &advcConn{Conn: c, d: d}, nil
}

func (d *advcDialer) didFire() bool {
	select {
	case <-d.fired:
		return true
	default:
		return false
	}
}

type advcConn struct {
	net.Conn
	d       *advcDialer
	pending atomic.Bool
}

func (c *advcConn) Write(b []byte) (int, error) {
	if c.d.armed.Load() && c.d.match(b) && c.d.armed.CompareAndSwap(true, false) {
		c.pending.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *advcConn) Read(b []byte) (int, error) {
	if !c.pending.Load() {
		return c.Conn.Read(b)
	}
	n, err := c.Conn.Read(b) // the reply: Redis ran the command
	c.pending.Store(false)
	if err != nil || (c.d.cond != nil && !c.d.cond()) {
		if err == nil {
			c.d.armed.Store(true) // not this one: wait for the next
		}
		return n, err
	}
	time.Sleep(10 * time.Millisecond) // the rest of a pipeline runs too
	if c.d.during != nil {
		c.d.during()
	}
	c.d.once.Do(func() { close(c.d.fired) })
	_ = c.Conn.Close()
	return 0, io.EOF
}

// advcClient returns a client of the shared single server through d
// (MaxRetries: 0 default resends, -1 none).
func advcClient(t testing.TB, d *advcDialer, maxRetries int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: redistest.Addr(t), Dialer: d.dial, MaxRetries: maxRetries})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// advcState reads task id's state and owner straight from Redis.
func advcState(ctx context.Context, q *taskqueue.Queue, id string) (state, owner, token string) {
	m, _ := q.Raw().HGetAll(ctx, taskqueue.TaskKey(q, id)).Result()
	return m["s"], m["o"], m["tk"]
}

// advcStall starts a Query(Local) of id on a fresh Queue over the shared
// single server whose process then hangs: its heartbeats stop and its task
// function ignores its context until the test ends. It returns once the
// run started and its claim lapsed (the lease, vis, ran out); no listener
// reaps it. The hung Queue is closed at cleanup.
func advcStall(t *testing.T, e env, id, name string, params any, vis time.Duration, opts ...taskqueue.QueryOption) *taskqueue.Queue {
	t.Helper()
	release := make(chan struct{})
	started := make(chan struct{})
	var once sync.Once
	a := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			once.Do(func() { close(started) })
			<-release // hung: ignores ctx
			return "from the hung process", nil
		}))
	taskqueue.PauseHeartbeats(a, true)
	qctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = a.Query(qctx, id, name, params, append([]taskqueue.QueryOption{taskqueue.WithPolicy(taskqueue.Local)}, opts...)...)
	}()
	t.Cleanup(func() {
		close(release)
		cancel()
		_ = a.Close()
		<-done
	})
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the hung run never started")
	}
	tag := taskqueue.Tag(a)
	waitUntil(t, 5*time.Second, "the hung claim to lapse", func() bool {
		sc, err := a.Raw().ZScore(context.Background(), tag+"|a|"+name, id).Result()
		now, _ := a.Raw().Time(context.Background()).Result()
		return err == nil && int64(sc) < now.UnixMilli()
	})
	return a
}

// advcOverlap counts runs of the same id that overlap on live workers.
type advcOverlap struct {
	mu       sync.Mutex
	running  map[string]int
	overlaps atomic.Int64
	runs     atomic.Int64
}

func newAdvcOverlap() *advcOverlap { return &advcOverlap{running: map[string]int{}} }

// enter records the start of a run of id and returns its end.
func (o *advcOverlap) enter(id string) func() {
	o.runs.Add(1)
	o.mu.Lock()
	o.running[id]++
	if o.running[id] > 1 {
		o.overlaps.Add(1)
	}
	o.mu.Unlock()
	return func() {
		o.mu.Lock()
		o.running[id]--
		o.mu.Unlock()
	}
}
