package taskqueue_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// privateTargets: a private single server and a private cluster, for
// tests that break servers.
type privTarget struct {
	name  string
	make  func(t *testing.T) (client func(t testing.TB) redis.UniversalClient, admin func(ctx context.Context, f func(c *redis.Client) error) error)
	batch []taskqueue.Option
}

var privTargets = []privTarget{
	{name: "single", batch: []taskqueue.Option{taskqueue.WithBatching(0)}, make: func(t *testing.T) (func(t testing.TB) redis.UniversalClient, func(context.Context, func(*redis.Client) error) error) {
		srv := redistest.Server(t)
		admin := srv.Client(t)
		return func(t testing.TB) redis.UniversalClient { return srv.Client(t) },
			func(ctx context.Context, f func(*redis.Client) error) error { return f(admin) }
	}},
	{name: "cluster", make: func(t *testing.T) (func(t testing.TB) redis.UniversalClient, func(context.Context, func(*redis.Client) error) error) {
		cc := redistest.PrivateCluster(t)
		addrs := cc.Options().Addrs
		return func(t testing.TB) redis.UniversalClient {
				c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
				t.Cleanup(func() { _ = c.Close() })
				return c
			},
			func(ctx context.Context, f func(*redis.Client) error) error {
				return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return f(c) })
			}
	}},
}

func forPrivTargets(t *testing.T, f func(t *testing.T, client func(testing.TB) redis.UniversalClient, admin func(context.Context, func(*redis.Client) error) error, opts []taskqueue.Option)) {
	for _, pt := range privTargets {
		t.Run(pt.name, func(t *testing.T) {
			t.Parallel()
			client, admin := pt.make(t)
			f(t, client, admin, pt.batch)
		})
	}
}

func newQ(t testing.TB, c redis.UniversalClient, ns string, opts ...taskqueue.Option) *taskqueue.Queue {
	t.Helper()
	q, err := taskqueue.New(c, ns, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

// TestAdvAPubSubKillWhileWaiting: 200 queries wait for running tasks; every
// pub/sub connection is killed (CLIENT KILL TYPE pubsub) and the tasks
// complete right after, while the waiters' subscription is down (their
// messages are lost). Every query must still get its result, promptly
// (the resubscription kicks the waiters). Five rounds.
func TestAdvAPubSubKillWhileWaiting(t *testing.T) {
	forPrivTargets(t, func(t *testing.T, client func(testing.TB) redis.UniversalClient, admin func(context.Context, func(*redis.Client) error) error, opts []taskqueue.Option) {
		ns := redistest.NewNamespace(t.Name())
		ctx := ctxT(t, 60*time.Second)
		var release atomic.Pointer[chan struct{}]
		var running atomic.Int64
		worker := newQ(t, client(t), ns, append(opts, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			ch := *release.Load()
			running.Add(1)
			<-ch
			return task.ID, nil
		}))...)
		listen(t, worker, []string{"w"}, 200)
		caller := newQ(t, client(t), ns, opts...)
		var worst time.Duration
		for round := range 5 {
			ch := make(chan struct{})
			release.Store(&ch)
			running.Store(0)
			const n = 200
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					id := fmt.Sprintf("r%d-%d", round, i)
					task, err := caller.Query(ctx, id, "w", nil, taskqueue.WithPolicy(taskqueue.Remote))
					if err == nil && result(t, task) != id {
						err = fmt.Errorf("%s: wrong result", id)
					}
					errs <- err
				})
			}
			advaWaitFor(t, 10*time.Second, "200 running tasks", func() bool { return running.Load() == n })
			if err := admin(ctx, func(c *redis.Client) error { return c.ClientKillByFilter(ctx, "TYPE", "pubsub").Err() }); err != nil {
				t.Fatal(err)
			}
			close(ch)
			start := time.Now()
			wg.Wait()
			took := time.Since(start)
			worst = max(worst, took)
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("round %d: 200 results %v after the kill", round, took.Round(time.Millisecond))
		}
		if worst > 2*time.Second {
			t.Errorf("after a pub/sub kill, the last result arrived %v later", worst)
		}
	})
}

// TestAdvAScriptFlush: SCRIPT FLUSH, repeatedly, while queries, listeners
// and heartbeats run (batched pipelines included): every script falls back
// to EVAL, nothing fails.
func TestAdvAScriptFlush(t *testing.T) {
	forPrivTargets(t, func(t *testing.T, client func(testing.TB) redis.UniversalClient, admin func(context.Context, func(*redis.Client) error) error, opts []taskqueue.Option) {
		ns := redistest.NewNamespace(t.Name())
		ctx := ctxT(t, 30*time.Second)
		worker := newQ(t, client(t), ns, append(opts, taskqueue.WithVisibilityTimeout(150*time.Millisecond), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if err := task.Update(ctx, 1, 2); err != nil {
				return nil, err
			}
			time.Sleep(5 * time.Millisecond)
			return task.ID, nil
		}))...)
		listen(t, worker, []string{"f"}, 16)
		caller := newQ(t, client(t), ns, append(opts, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) { return task.ID, nil }))...)
		stop := make(chan struct{})
		var flushes atomic.Int64
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(3 * time.Millisecond):
				}
				_ = admin(ctx, func(c *redis.Client) error { return c.ScriptFlush(ctx).Err() })
				flushes.Add(1)
			}
		}()
		var wg sync.WaitGroup
		var bad atomic.Int64
		policies := []taskqueue.Policy{taskqueue.Remote, taskqueue.Local, taskqueue.Auto, taskqueue.RemoteFirst, taskqueue.LocalFirst}
		for i := range 400 {
			wg.Go(func() {
				id := fmt.Sprint("sf", i)
				task, err := caller.Query(ctx, id, "f", nil, taskqueue.WithPolicy(policies[i%5]), taskqueue.WithTimeout(10*time.Second))
				if err != nil || result(t, task) != id {
					bad.Add(1)
					t.Errorf("%s (%s): %v", id, policies[i%5], err)
				}
			})
		}
		wg.Wait()
		close(stop)
		t.Logf("400 queries, every policy, during %d SCRIPT FLUSHes: %d failed", flushes.Load(), bad.Load())
	})
}

// TestAdvAClientPauseLongerThanVisibility: CLIENT PAUSE WRITE for 3× the
// visibility timeout while tasks run on two listeners: heartbeats, claims
// and completions wait. Afterwards every query gets one result, the
// invariants hold, and no task is lost.
func TestAdvAClientPauseLongerThanVisibility(t *testing.T) {
	forPrivTargets(t, func(t *testing.T, client func(testing.TB) redis.UniversalClient, admin func(context.Context, func(*redis.Client) error) error, opts []taskqueue.Option) {
		ns := redistest.NewNamespace(t.Name())
		ctx := ctxT(t, 30*time.Second)
		vis := 400 * time.Millisecond
		r := newRuns()
		var concurrent sync.Map // id → *atomic.Int64
		var overlaps atomic.Int64
		mk := func(where string) *taskqueue.Queue {
			return newQ(t, client(t), ns, append(opts, taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
				v, _ := concurrent.LoadOrStore(task.ID, new(atomic.Int64))
				if v.(*atomic.Int64).Add(1) > 1 {
					overlaps.Add(1)
				}
				defer v.(*atomic.Int64).Add(-1)
				r.add(task.ID, where)
				select {
				case <-time.After(300 * time.Millisecond):
				case <-ctx.Done():
					return nil, context.Cause(ctx)
				}
				return where, nil
			}))...)
		}
		a, b := mk("a"), mk("b")
		listen(t, a, []string{"p"}, 8)
		listen(t, b, []string{"p"}, 8)
		caller := newQ(t, client(t), ns, opts...)
		const n = 40
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				_, err := caller.Query(ctx, fmt.Sprint("p", i), "p", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithTimeout(20*time.Second))
				errs <- err
			})
		}
		time.Sleep(150 * time.Millisecond)
		if err := admin(ctx, func(c *redis.Client) error {
			return c.Do(ctx, "client", "pause", (3 * vis).Milliseconds(), "write").Err()
		}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		runsTotal := 0
		for i := range n {
			runsTotal += r.count(fmt.Sprint("p", i))
		}
		problems, err := invariants(ctx, caller)
		t.Logf("%d tasks through a %v pause: all done %v after it began; %d runs in all, %d overlapping runs of one id; invariants %v %v",
			n, 3*vis, time.Since(start).Round(time.Millisecond), runsTotal, overlaps.Load(), problems, err)
		if len(problems) > 0 {
			t.Error(problems)
		}
	})
}

// TestAdvAClientKillNormal: every normal connection (listeners' BLPOP,
// claims, heartbeats, callers' scripts) is killed every 100 ms while 150
// tasks run. Every query must get a result; report duplicates.
func TestAdvAClientKillNormal(t *testing.T) {
	forPrivTargets(t, func(t *testing.T, client func(testing.TB) redis.UniversalClient, admin func(context.Context, func(*redis.Client) error) error, opts []taskqueue.Option) {
		ns := redistest.NewNamespace(t.Name())
		ctx := ctxT(t, 30*time.Second)
		r := newRuns()
		worker := newQ(t, client(t), ns, append(opts, taskqueue.WithVisibilityTimeout(500*time.Millisecond), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			r.add(task.ID, "w")
			time.Sleep(30 * time.Millisecond)
			return task.ID, nil
		}))...)
		listen(t, worker, []string{"k"}, 10)
		caller := newQ(t, client(t), ns, opts...)
		stop := make(chan struct{})
		var kills atomic.Int64
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				_ = admin(ctx, func(c *redis.Client) error { return c.ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Err() })
				kills.Add(1)
			}
		}()
		const n = 150
		var wg sync.WaitGroup
		var failed atomic.Int64
		start := time.Now()
		for i := range n {
			wg.Go(func() {
				id := fmt.Sprint("k", i)
				task, err := caller.Query(ctx, id, "k", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithTimeout(15*time.Second))
				if err != nil || result(t, task) != id {
					failed.Add(1)
					t.Errorf("%s: %v", id, err)
				}
			})
		}
		wg.Wait()
		close(stop)
		dup := 0
		for i := range n {
			if r.count(fmt.Sprint("k", i)) > 1 {
				dup++
			}
		}
		problems, _ := invariants(ctx, caller)
		t.Logf("%d tasks under %d kills in %v: %d failed, %d ran more than once; invariants %v", n, kills.Load(), time.Since(start).Round(time.Millisecond), failed.Load(), dup, problems)
	})
}

// TestAdvARestartWithAOF: a private server with appendonly yes is
// restarted while tasks are queued and running and queries wait. Queued
// and running tasks survive and complete; the waiting queries recover.
func TestAdvARestartWithAOF(t *testing.T) {
	srv := redistest.Server(t, "--appendonly", "yes", "--appendfsync", "always")
	ns := redistest.NewNamespace(t.Name())
	ctx := ctxT(t, 30*time.Second)
	r := newRuns()
	worker := newQ(t, srv.Client(t), ns, taskqueue.WithBatching(0), taskqueue.WithVisibilityTimeout(time.Second), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		r.add(task.ID, "w")
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		return task.ID, nil
	}))
	listen(t, worker, []string{"a"}, 4)
	caller := newQ(t, srv.Client(t), ns, taskqueue.WithBatching(0))
	const n = 40
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprint("a", i)
			task, err := caller.Query(ctx, id, "a", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithTimeout(25*time.Second))
			if err != nil || result(t, task) != id {
				failed.Add(1)
				t.Errorf("%s: %v", id, err)
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	srv.Restart(t)
	restarted := time.Now()
	wg.Wait()
	dup := 0
	for i := range n {
		if r.count(fmt.Sprint("a", i)) > 1 {
			dup++
		}
	}
	t.Logf("%d tasks across a restart: all answered %v after it, %d failed, %d ran more than once", n, time.Since(restarted).Round(time.Millisecond), failed.Load(), dup)
}

// TestAdvAPubSubKillStorm: pub/sub connections are killed at random
// moments (every 5–40 ms) while 600 short remote queries run; each query's
// latency is measured. A waiter whose completion message is lost must be
// woken by the resubscription's kick, not by the 5 s safety net.
func TestAdvAPubSubKillStorm(t *testing.T) {
	forPrivTargets(t, func(t *testing.T, client func(testing.TB) redis.UniversalClient, admin func(context.Context, func(*redis.Client) error) error, opts []taskqueue.Option) {
		ns := redistest.NewNamespace(t.Name())
		ctx := ctxT(t, 60*time.Second)
		worker := newQ(t, client(t), ns, append(opts, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			time.Sleep(time.Duration(task.Params[0]-'0') * time.Millisecond)
			return task.ID, nil
		}))...)
		listen(t, worker, []string{"s"}, 64)
		caller := newQ(t, client(t), ns, opts...)
		stop := make(chan struct{})
		var kills atomic.Int64
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(5+time.Now().UnixNano()%35) * time.Millisecond):
				}
				_ = admin(ctx, func(c *redis.Client) error { return c.ClientKillByFilter(ctx, "TYPE", "pubsub").Err() })
				kills.Add(1)
			}
		}()
		var mu sync.Mutex
		var slow []string
		var worst time.Duration
		var wg sync.WaitGroup
		for g := range 30 {
			wg.Go(func() {
				for k := range 20 {
					id := fmt.Sprintf("s%d-%d", g, k)
					start := time.Now()
					task, err := caller.Query(ctx, id, "s", []byte(fmt.Sprint(k%10)), taskqueue.WithPolicy(taskqueue.Remote))
					d := time.Since(start)
					if err != nil || result(t, task) != id {
						t.Errorf("%s: %v", id, err)
					}
					mu.Lock()
					worst = max(worst, d)
					if d > time.Second {
						slow = append(slow, fmt.Sprintf("%s %v", id, d.Round(time.Millisecond)))
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		close(stop)
		t.Logf("600 queries under %d pub/sub kills: worst %v; over 1 s: %v", kills.Load(), worst.Round(time.Millisecond), slow)
		if len(slow) > 0 {
			t.Errorf("%d queries waited over a second (the safety net, not the kick, woke them): %v", len(slow), slow)
		}
	})
}
