package lock

// Second adversarial round: checks that need the dispatcher's internals
// (see adversarial2_test.go for the rest).
//
//	TestAdv2FailedDropLingersOut   failed on 567ed70, passes since the fix: failed drop + linger-out strands every release
//	TestAdv2ManyKeysBookkeeping    held (regression check, no fault injection)

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// failDropHook fails, while armed, the release scripts that only drop a
// queue entry (owner token ""), before they are sent: the connection was
// refused or broke while writing.
type failDropHook struct{ armed, failed atomic.Bool }

func (h *failDropHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failDropHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.Load() && (cmd.Name() == "evalsha" || cmd.Name() == "eval") {
			a := cmd.Args()
			if n, ok := a[2].(int); ok && n == 4 && len(a) > 3+n && a[3+n] == "" {
				h.failed.Store(true)
				err := errors.New("connection reset by test")
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmd)
	}
}

func (h *failDropHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestAdv2FailedDropLingersOut: a waiter (LinearRetry of an hour) gives
// up and its process's drop of the queue entry fails once (a connection
// error). The dispatcher records maybe=true, but nothing drops the entry
// later: when nobody of the process waits, its subscription lingers out
// after 30 s (fast-forwarded here), although the process knows it may
// still have an entry, which lasts the hour announced. From then on every
// release of the key within that hour hands it to that entry, whose
// message nobody hears: each time the key stays held by a grant nobody
// uses for the grant's whole TTL.
func TestAdv2FailedDropLingersOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ns := redistest.Namespace(t)
	q, err := New(redistest.Client(t), ns)
	if err != nil {
		t.Fatal(err)
	}
	hook := &failDropHook{}
	pc := redistest.Client(t)
	pc.AddHook(hook)
	p, err := New(pc, ns)
	if err != nil {
		t.Fatal(err)
	}
	h, err := q.TryAcquire(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancelW := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := p.Acquire(wctx, "k", 30*time.Second, WithReleaseNotify(), WithRetry(LinearRetry(time.Hour)))
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	hook.armed.Store(true)
	cancelW()
	if err := <-done; !errors.Is(err, ErrNotObtained) {
		t.Fatalf("waiter: %v", err)
	}
	hook.armed.Store(false)
	if !hook.failed.Load() {
		t.Fatal("no drop was sent")
	}
	// Nobody of p waits any more: its subscription lingers out.
	d := p.b.(*redisBackend).d
	d.mu.Lock()
	idle := d.idle
	d.mu.Unlock()
	if idle == nil {
		t.Fatal("no linger timer")
	}
	idle.Reset(0)
	for i := 0; d.live.Load() && i < 500; i++ {
		time.Sleep(time.Millisecond) // closed at once, unless it is kept for a reason
	}
	lk := p.Key("k")
	for round := range 2 {
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			h, err = q.TryAcquire(ctx, "k", time.Minute)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrNotObtained) {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				c := redistest.Client(t)
				t.Fatalf("round %d: key not free 2s after its holder released it, nobody waiting: held by %q (PTTL %v); queue entries %v",
					round, c.Get(ctx, lk).Val(), c.PTTL(ctx, lk).Val(), c.HGetAll(ctx, keys.Queued(lk)).Val())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	_ = h.Release(ctx)
}

// TestAdv2ManyKeysBookkeeping: four
// Lock values, eight keys, waiters with LinearRetry(time.Hour),
// ExponentialBackoff(1ms, 5ms), the default and LinearRetry(20ms) side by
// side, contexts ending at random. Afterwards nobody is registered, no line
// keeps a waiter, and every queue entry left in Redis belongs to a line
// whose process knows it may have one (maybe, or until ahead): an entry
// its process does not know about is an orphan that releases would hand
// the key to.
func TestAdv2ManyKeysBookkeeping(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ns := redistest.Namespace(t)
	var ls []*Lock
	for i := range 4 {
		var opts []Option
		if i%2 == 1 {
			opts = append(opts, WithBatching(0))
		}
		l, err := New(redistest.Client(t), ns, opts...)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	strategies := []RetryStrategy{LinearRetry(time.Hour), ExponentialBackoff(time.Millisecond, 5*time.Millisecond), defaultNotifyRetry, LinearRetry(20 * time.Millisecond)}
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var got atomic.Int64
	for p, l := range ls {
		for g := range 6 {
			wg.Go(func() {
				for i := 0; time.Now().Before(stop); i++ {
					key := fmt.Sprint("k", (p+g+i)%8)
					wait := time.Duration(2+(p*7+g*5+i*3)%150) * time.Millisecond
					actx, cancel := context.WithTimeout(ctx, wait)
					h, err := l.Acquire(actx, key, time.Second, WithReleaseNotify(), WithRetry(strategies[(g+i)%4]))
					cancel()
					if err != nil {
						continue
					}
					got.Add(1)
					time.Sleep(time.Duration(i%2) * time.Millisecond)
					_ = h.Release(ctx)
				}
			})
		}
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // pass-ons in flight
	c := redistest.Client(t)
	orphans := 0
	for p, l := range ls {
		d := l.b.(*redisBackend).d
		d.mu.Lock()
		if d.users != 0 {
			t.Errorf("process %d: %d callers still registered", p, d.users)
		}
		lines := map[string]*waitLine{}
		for sk, wl := range d.lines {
			if len(wl.waiters) != 0 {
				t.Errorf("process %d: line of %q keeps %d waiters", p, sk, len(wl.waiters))
			}
			lines[sk] = wl
		}
		for sk, wl := range lines {
			entries := c.HGetAll(ctx, keys.Queued(sk)).Val()
			if _, ok := entries[wl.id]; ok && !wl.maybe && !time.Now().Before(wl.until) {
				orphans++
				t.Errorf("process %d: entry %s of %q (%s) is in the queue, but the process believes it has none", p, wl.id, sk, entries[wl.id])
			}
		}
		d.mu.Unlock()
	}
	t.Logf("%d acquisitions, %d orphan entries", got.Load(), orphans)
}
