package taskqueue_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvDRandomCloseAndNoResend: a random workload on the single node
// with lost replies (half the clients never resend: MaxRetries -1, so the
// library's own nonce resends of claim/complete/steal and give-backs do
// the work), Queue values closed and replaced at random (RemoteFirst and
// Auto callers closing in every phase), short visibility timeout. Checks:
// the invariants, no overlapping runs on live workers, no task left open.
func TestAdvDRandomCloseAndNoResend(t *testing.T) {
	e := advSingle(t)
	ch := &advcChaos{p: 0.03}
	addr := redistest.Addr(t)
	vis := 200 * time.Millisecond
	names := []string{"ok", "fail", "slow"}
	var mu sync.Mutex
	live := map[string]int{}
	var overlaps, runs atomic.Int64
	fn := func(ctx context.Context, task *taskqueue.Task) (any, error) {
		runs.Add(1)
		mu.Lock()
		live[task.ID]++
		if live[task.ID] > 1 {
			overlaps.Add(1)
			t.Logf("overlap on %s (%s, deliveries %d)", task.ID, task.Name, task.Deliveries)
		}
		mu.Unlock()
		defer func() { mu.Lock(); live[task.ID]--; mu.Unlock() }()
		switch task.Name {
		case "fail":
			return nil, errors.New("fails")
		case "slow":
			select {
			case <-time.After(time.Duration(rand.IntN(500)) * time.Millisecond):
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}
		return task.ID, nil
	}
	newMember := func(k int) *taskqueue.Queue {
		retries := 0
		if k%2 == 0 {
			retries = -1
		}
		c := redis.NewClient(&redis.Options{Addr: addr, Dialer: ch.dial, MaxRetries: retries, PoolSize: 64})
		t.Cleanup(func() { _ = c.Close() })
		q, err := taskqueue.New(c, e.ns, taskqueue.WithBatching(0), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithMaxLost(1000),
			taskqueue.WithGracePeriod(50*time.Millisecond), taskqueue.WithTaskFunc(fn),
			taskqueue.WithRetryBackoff(func(int) time.Duration { return time.Duration(rand.IntN(20)) * time.Millisecond }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = q.Close() })
		return q
	}
	ctx := ctxT(t, 30*time.Second)
	var qmu sync.Mutex
	members := make([]*taskqueue.Queue, 4)
	for k := range members {
		members[k] = newMember(k)
	}
	pick := func() (int, *taskqueue.Queue) {
		qmu.Lock()
		defer qmu.Unlock()
		k := rand.IntN(len(members))
		return k, members[k]
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var unexpected, ops atomic.Int64
	for w := 0; w < 3; w++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, q := pick()
				lctx, cancel := context.WithTimeout(ctx, time.Duration(200+rand.IntN(800))*time.Millisecond)
				_ = q.Listen(lctx, names[rand.IntN(2):], 1+rand.IntN(3))
				cancel()
			}
		})
	}
	wg.Go(func() { // close and replace a member now and then
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(100+rand.IntN(400)) * time.Millisecond):
			}
			qmu.Lock()
			k := rand.IntN(len(members))
			old := members[k]
			members[k] = newMember(k)
			qmu.Unlock()
			_ = old.Close()
		}
	})
	policies := []taskqueue.Policy{taskqueue.Auto, taskqueue.Local, taskqueue.Remote, taskqueue.LocalFirst, taskqueue.RemoteFirst}
	var used sync.Map
	t0 := time.Now()
	for c := 0; c < 10; c++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ops.Add(1)
				_, q := pick()
				id := fmt.Sprintf("id%d-%d", rand.IntN(20), time.Since(t0)/(time.Second))
				used.Store(id, true)
				name := names[len(id)%len(names)]
				qctx, cancel := context.WithTimeout(ctx, time.Duration(100+rand.IntN(1500))*time.Millisecond)
				var err error
				if rand.IntN(5) == 0 {
					_, err = q.Submit(qctx, id, name, nil)
				} else {
					_, err = q.Query(qctx, id, name, nil, taskqueue.WithPolicy(policies[rand.IntN(len(policies))]),
						taskqueue.WithMaxAttempts(1+rand.IntN(3)), taskqueue.WithFallbackAfter(time.Duration(rand.IntN(200))*time.Millisecond),
						taskqueue.WithTimeout(2*time.Second))
				}
				cancel()
				var te *taskqueue.TaskError
				if err != nil && !errors.As(err, &te) && !errors.Is(err, taskqueue.ErrClosed) && !errors.Is(err, taskqueue.ErrTimeout) &&
					!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, taskqueue.ErrCancelled) && !isNetErr(err) {
					if unexpected.Add(1) <= 5 {
						t.Logf("unexpected error: %v", err)
					}
				}
			}
		})
	}
	checker := advQueue(t, e, redistest.Client(t))
	problems := map[string]int{}
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
				return
			}
			checks.Add(1)
			for _, s := range p {
				problems[advcProblemKind(s)]++
			}
		}
	})
	ch.on.Store(true)
	time.Sleep(6 * time.Second)
	ch.on.Store(false)
	close(stop)
	wg.Wait()
	t.Logf("%d ops, %d runs, %d resets, %d checks, %d unexpected errors, %d overlaps", ops.Load(), runs.Load(), ch.resets.Load(), checks.Load(), unexpected.Load(), overlaps.Load())
	if len(problems) > 0 {
		t.Errorf("invariants broken: %v", problems)
	}
	if overlaps.Load() > 0 {
		t.Errorf("%d overlapping runs on live workers", overlaps.Load())
	}
	clean := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn))
	listen(t, clean, names, 8)
	deadline := time.Now().Add(4 * time.Second)
	for {
		var open []string
		for id := range used.Range {
			if got, err := clean.GetTask(ctx, id.(string)); err == nil && !got.State.Terminal() {
				open = append(open, fmt.Sprintf("%s %s o=%v", id, got.State, got))
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
}

func isNetErr(err error) bool {
	s := err.Error()
	for _, m := range []string{"EOF", "connection", "i/o timeout", "broken pipe", "closed"} {
		if contains(s, m) {
			return true
		}
	}
	return false
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
