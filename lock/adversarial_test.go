package lock_test

// Adversarial tests of the hand-over queue (WithReleaseNotify), validity,
// liveness, faults and edge inputs, written by trying to break the lock
// (issue 6). Each test that reproduced a defect failed on commit d56daba
// and passes since the fix; the comment above it tells the defect:
//
//	TestAdvLostAnnounceReplyOrphansEntry   livelock of a key after a lost reply
//	TestAdvSkippingWaiterMissesExpiry      holder expiry unnoticed (the twin passed)
//	TestAdvLeaveDropRacesNewWaiter         late entry drop stranded a new waiter
//	TestAdvDiscoveredGrantWithoutExpiry    two holders: ttl 0 grant found by an attempt
//	TestAdvDiscoveryStopsAnnouncing        waiter never re-entered the queue
//	TestAdvGrantToLeavingWaiterLost        grant passed on by a leaver was dropped
//	TestAdvSubscribeBlocksUnrelatedRelease Release blocked by another key's SUBSCRIBE
//	TestAdvLostMessageLongRetry            lost message + long retry: stall
//	TestAdvDeadlineDuringSubscribeMisreported  timeout not reported as ErrNotObtained
//	TestAdvStressHandOver                  the above, without fault injection
//
// The others held from the start: TestAdvLostOwnGrant (a defect found on
// 1d7c17b, fixed by 362d54d), TestAdvEdgeInputsInQueue,
// TestAdvTinyTTLHandOverValidity, TestAdvFaultsStress,
// TestAdvPoolQueueFences and TestAdvDispatcherBookkeeping
// (adversarial_internal_test.go).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/lock"
)

// scriptHook disturbs the script commands (EVALSHA/EVAL) of its client that
// match while armed: the command runs on Redis, then its reply is replaced
// by an error, as if the connection broke after Redis ran it (or the
// caller's deadline hit while the reply was on its way). match sees the
// script's keys and arguments. With once, only the first reply is lost. A
// NOSCRIPT reply is left alone (the EVAL that follows counts instead).
type scriptHook struct {
	passHook
	armed atomic.Bool
	match func(keys []string, args []any) bool
	once  bool
	times atomic.Int64 // how many replies were lost
}

// matches reports whether cmd is a script command that h disturbs.
func (h *scriptHook) matches(cmd redis.Cmder) bool {
	if !h.armed.Load() || (cmd.Name() != "evalsha" && cmd.Name() != "eval") {
		return false
	}
	a := cmd.Args()
	if len(a) < 3 {
		return false
	}
	n, ok := a[2].(int)
	if !ok || len(a) < 3+n {
		return false
	}
	ks := make([]string, n)
	for i := range n {
		ks[i], _ = a[3+i].(string)
	}
	return h.match(ks, a[3+n:])
}

// lose replaces the reply of a matching command that ran.
func (h *scriptHook) lose(cmd redis.Cmder) {
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		return
	}
	if h.once && !h.armed.CompareAndSwap(true, false) {
		return
	}
	h.times.Add(1)
	cmd.SetErr(errors.New("reply lost by test"))
}

func (h *scriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !h.matches(cmd) {
			return next(ctx, cmd)
		}
		_ = next(ctx, cmd)
		h.lose(cmd)
		return cmd.Err()
	}
}

func (h *scriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var hits []redis.Cmder
		for _, c := range cmds {
			if h.matches(c) {
				hits = append(hits, c)
			}
		}
		err := next(ctx, cmds)
		for _, c := range hits {
			h.lose(c)
		}
		return err
	}
}

// queuedAttempt matches an acquire attempt of a waiting caller (5 keys).
func queuedAttempt(ks []string, _ []any) bool { return len(ks) == 5 }

// waitFree polls until other can take key, for at most d, and returns the
// handle, or nil with a description of what held the key.
func waitFree(ctx context.Context, t *testing.T, other lock.Locker, key string, d time.Duration) (*lock.Held, string) {
	t.Helper()
	deadline := time.Now().Add(d)
	seen := map[string]bool{}
	for {
		h, err := other.TryAcquire(ctx, key, time.Minute)
		if err == nil {
			return h, ""
		}
		if !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("TryAcquire: %v", err)
		}
		if v, ok, _ := other.Value(ctx, key); ok {
			seen[v] = true
		}
		if time.Now().After(deadline) {
			var vs []string
			for v := range seen {
				vs = append(vs, v)
			}
			if len(vs) > 5 {
				vs = append(vs[:5], "...")
			}
			return nil, fmt.Sprintf("%d distinct holders seen while polling: %v", len(seen), vs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAdvLostAnnounceReplyOrphansEntry: a waiter's first
// attempt that writes its process's queue entry loses its reply (a
// connection killed after Redis ran the script, or the caller's deadline
// during the round trip). Acquire fails, so nobody in that process waits any
// more, yet the entry stays in the queue for the whole announced wait (an
// hour here), and the process does not know it has one. The holder's
// release then hands the key to that entry, the process passes the grant on
// with a release that hands it to the same entry again, and so on: nobody
// else can take the key.
func TestAdvLostAnnounceReplyOrphansEntry(t *testing.T) {
	forEachRedisVariant(t, func(t *testing.T, c redisClient, opts ...lock.Option) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		holderSide := mustNew(t, c, ns, opts...)
		hook := &scriptHook{match: queuedAttempt, once: true}
		waiterSide := mustNew(t, newClientLike(t, c, hook), ns, opts...)
		warmScripts(t, waiterSide)
		h, err := holderSide.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		hook.armed.Store(true)
		if _, err := notifyWait(ctx, waiterSide, "k", 10*time.Second); err == nil {
			t.Fatal("Acquire with a lost reply succeeded")
		}
		if hook.times.Load() != 1 {
			t.Fatalf("the hook lost %d replies, want 1", hook.times.Load())
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		// Nobody waits for the key any more: it must be free at once, or at
		// worst after a short detour through the waiter's process.
		other := mustNew(t, c, ns)
		got, why := waitFree(ctx, t, other, "k", 3*time.Second)
		if got == nil {
			lk := other.Key("k")
			t.Fatalf("key not free 3s after its holder released it and the only waiter gave up: %s; queue entries %v",
				why, c.HGetAll(ctx, keys.Queued(lk)).Val())
		}
	})
}

// TestAdvSkippingWaiterMissesExpiry: a holder dies (its key expires, nobody releases it). In the
// waiting process, the first waiter announced a long wait (LinearRetry of
// an hour) and then gave up; a second waiter with the default
// WithReleaseNotify retry (at most a second) joined while the entry was
// known to last, so it makes no attempts (line.queued) and never learns the
// holder's remaining TTL. WithReleaseNotify promises that "the retry
// strategy (and the holder's remaining TTL, whichever is shorter) still
// bounds every wait, so ... an expiry is noticed too", and the twin does
// notice: on Redis the second waiter sleeps through the free key until the
// first one's announced hour is over.
func TestAdvSkippingWaiterMissesExpiry(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx := ctxT(t)
		ls := tg.newProcesses(t, 2)
		holderSide, waiterSide := ls[0], ls[len(ls)-1]
		const holderTTL = time.Second
		if _, err := holderSide.TryAcquire(ctx, "k", holderTTL); err != nil { // never released
			t.Fatal(err)
		}
		start := time.Now()
		first, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		firstDone := make(chan error, 1)
		go func() {
			_, err := notifyWait(first, waiterSide, "k", time.Minute)
			firstDone <- err
		}()
		time.Sleep(50 * time.Millisecond) // the first waiter has announced its wait
		second, cancel2 := context.WithTimeout(ctx, 5*time.Second)
		defer cancel2()
		h, err := waiterSide.Acquire(second, "k", time.Minute, lock.WithReleaseNotify())
		if e := <-firstDone; !errors.Is(e, lock.ErrNotObtained) {
			t.Fatalf("first waiter: %v", e)
		}
		if err != nil {
			t.Fatalf("second waiter (default notify retry, ≤1s) did not get the key %v after it expired (%v after start): %v",
				time.Since(start)-holderTTL, time.Since(start), err)
		}
		if took := time.Since(start); took > holderTTL+1500*time.Millisecond {
			t.Fatalf("second waiter got the key only %v after the holder expired", took-holderTTL)
		}
		_ = h.Release(ctx)
	})
}

// TestAdvLostOwnGrant (passes since 362d54d; failed on 1d7c17b, where
// the waiter waited out the grant's whole TTL): a release hands the key to a waiter of
// its own process (no PUBLISH: the grant message is the reply), and that
// reply is lost (connection killed after Redis ran the script). The key is
// then held by the waiting process's grant token, which nobody knows: the
// waiter, retrying every second at most, must still get it within a few
// seconds rather than after the grant's TTL.
func TestAdvLostOwnGrant(t *testing.T) {
	forEachRedisVariant(t, func(t *testing.T, c redisClient, opts ...lock.Option) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		l, h, hook := holderLosingRelease(t, c, ns, opts...)
		got := make(chan error, 1)
		start := time.Now()
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 6*time.Second)
			defer cancel()
			w, err := l.Acquire(wctx, "k", time.Minute, lock.WithReleaseNotify())
			if err == nil {
				err = w.Release(ctx)
			}
			got <- err
		}()
		time.Sleep(100 * time.Millisecond)
		hook.armed.Store(true)
		if err := h.Release(ctx); err == nil {
			t.Fatal("Release with a lost reply succeeded")
		}
		if err := <-got; err != nil {
			v, _, _ := l.Value(ctx, "k")
			t.Fatalf("waiter after %v: %v; key holds %q with PTTL %v", time.Since(start), err, v, c.PTTL(ctx, l.Key("k")).Val())
		}
	})
}

// holderLosingRelease returns a Lock of namespace ns on a client like c and a holder of
// its key "k" whose release, once hook is armed, runs on Redis and then
// loses its reply (the connection killed after Redis ran the script).
func holderLosingRelease(t *testing.T, c redisClient, ns string, opts ...lock.Option) (*lock.Lock, *lock.Held, *scriptHook) {
	t.Helper()
	var holderToken atomic.Value
	holderToken.Store("")
	hook := &scriptHook{once: true, match: func(ks []string, args []any) bool {
		return len(ks) >= 4 && len(args) > 0 && args[0] == holderToken.Load()
	}}
	l := mustNew(t, newClientLike(t, c, hook), ns, opts...)
	warmScripts(t, l)
	h, err := l.TryAcquire(ctxT(t), "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	holderToken.Store(h.Token())
	return l, h, hook
}

// slowDropHook delays, while armed, the release commands that only drop a
// queue entry (token ""), as a slow connection would.
type slowDropHook struct {
	passHook
	armed atomic.Bool
	delay time.Duration
}

func (h *slowDropHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.Load() && (cmd.Name() == "evalsha" || cmd.Name() == "eval") {
			if a := cmd.Args(); len(a) > 3 {
				if n, ok := a[2].(int); ok && n >= 4 && len(a) > 3+n && a[3+n] == "" {
					time.Sleep(h.delay)
				}
			}
		}
		return next(ctx, cmd)
	}
}

// TestAdvLeaveDropRacesNewWaiter: a waiter gives up and its
// process drops its queue entry; before that drop lands, another call of
// the same process joins the line and announces itself (the process had no
// entry as far as it knew). The late drop removes the entry the new waiter
// relies on; the holder's release then frees the key and tells nobody, and
// the new waiter sleeps through the holder's whole remaining TTL.
func TestAdvLeaveDropRacesNewWaiter(t *testing.T) {
	forEachRedisVariant(t, func(t *testing.T, c redisClient, opts ...lock.Option) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		holderSide := mustNew(t, c, ns, opts...)
		hook := &slowDropHook{delay: 300 * time.Millisecond}
		waiterSide := mustNew(t, newClientLike(t, c, hook), ns, opts...)
		warmScripts(t, waiterSide)
		h, err := holderSide.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		hook.armed.Store(true)
		first, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		firstDone := make(chan error, 1)
		go func() { _, err := notifyWait(first, waiterSide, "k", time.Minute); firstDone <- err }()
		<-first.Done()
		time.Sleep(20 * time.Millisecond) // the first waiter left; its drop is on its way
		got := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			w, err := notifyWait(wctx, waiterSide, "k", time.Minute)
			if err == nil {
				err = w.Release(ctx)
			}
			got <- err
		}()
		if err := <-firstDone; !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("first waiter: %v", err)
		}
		time.Sleep(500 * time.Millisecond) // the drop has landed
		released := time.Now()
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("second waiter, %v after the holder released: %v", time.Since(released), err)
		}
	})
}

// csMonitor checks a critical section: one holder at a time, fences
// strictly increasing in the order holders enter.
type csMonitor struct {
	mu        sync.Mutex
	holder    string
	lastFence int64
	entries   int
	errs      []string
}

func (m *csMonitor) fail(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.errs) < 10 {
		m.errs = append(m.errs, fmt.Sprintf(format, args...))
	}
}

func (m *csMonitor) enter(who string, fence int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holder != "" && len(m.errs) < 10 {
		m.errs = append(m.errs, fmt.Sprintf("%s entered while %s holds the key", who, m.holder))
	}
	if fence <= m.lastFence && len(m.errs) < 10 {
		m.errs = append(m.errs, fmt.Sprintf("%s: fence %d not above the previous holder's %d", who, fence, m.lastFence))
	}
	m.holder, m.lastFence = who, max(fence, m.lastFence)
	m.entries++
}

func (m *csMonitor) exit(who string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holder == who {
		m.holder = ""
	}
}

// checkValidity fails m when h believes it holds key for longer than the
// server keeps it, or the key does not hold h's token.
func checkValidity(ctx context.Context, m *csMonitor, l lock.Locker, h *lock.Held, who string) {
	v, ok, err := l.Value(ctx, h.Key())
	if err != nil {
		return
	}
	if !ok || v != h.Token() {
		if h.Err() == nil {
			m.fail("%s: handle valid but key holds %q (held %v), token %q", who, v, ok, h.Token())
		}
		return
	}
	st, err := l.Status(ctx, h.Key(), time.Hour) // Permanent for no expiry
	if err != nil {
		return
	}
	vu := h.ValidUntil()
	if st == lock.Permanent != vu.IsZero() {
		m.fail("%s: status %v but ValidUntil %v (TTL %v)", who, st, vu, h.TTL())
	}
}

// TestAdvStressHandOver: processes × goroutines acquire one key with
// WithReleaseNotify, with random TTLs (none, seconds), own tokens, and
// contexts that end at random moments (often while a grant is on its way);
// some holders race Release against KeepAlive and Refresh(0). One holder at
// a time, fences strictly increasing, the key holds the holder's token, a
// handle without expiry only on a key without expiry, the key is free once
// every call returned, and no key beside it lacks an expiry. It reports
// "status locked but ValidUntil 0001-01-01" (the defect of
// TestAdvDiscoveredGrantWithoutExpiry, when a waiter's attempt overtakes
// a hand-over message) and "key still held ... after every caller returned"
// (a grant dropped as in TestAdvGrantToLeavingWaiterLost, or the
// ping-pong of TestAdvLostAnnounceReplyOrphansEntry).
func TestAdvStressHandOver(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, n := range []int{1, 3} {
			t.Run(fmt.Sprint(n, "p"), func(t *testing.T) {
				ctx := ctxT(t)
				ls := tg.newProcesses(t, n)
				const perProcess = 8
				run := 3 * time.Second
				if testing.Short() {
					run = time.Second
				}
				stop := time.Now().Add(run)
				m := &csMonitor{}
				var wg sync.WaitGroup
				var attempts, cancelled atomic.Int64
				for p, l := range ls {
					for g := range perProcess {
						wg.Go(func() {
							for i := 0; time.Now().Before(stop); i++ {
								who := fmt.Sprintf("p%d/g%d/%d", p, g, i)
								ttl := []time.Duration{0, 2 * time.Second, 5 * time.Second, 3 * time.Second}[(g+i)%4]
								opts := []lock.AcquireOption{lock.WithReleaseNotify()}
								if (g+i)%3 == 0 {
									opts = append(opts, lock.WithToken("tok "+who+": \x00"))
								}
								if (g+2*i)%5 == 0 {
									opts = append(opts, lock.WithRetry(lock.LinearRetry(time.Hour)))
								}
								wait := 3 * time.Second
								if (g*7+i)%3 == 0 {
									wait = time.Duration(1+(g*13+i*7)%40) * time.Millisecond
								}
								actx, cancel := context.WithTimeout(ctx, wait)
								attempts.Add(1)
								h, err := l.Acquire(actx, "k", ttl, opts...)
								dl, _ := actx.Deadline()
								ended := !time.Now().Before(dl) // see TestAdvDeadlineDuringSubscribeMisreported
								cancel()
								if err != nil {
									if !errors.Is(err, lock.ErrNotObtained) && !ended {
										m.fail("%s: Acquire: %v", who, err)
									}
									cancelled.Add(1)
									continue
								}
								m.enter(who, h.Fence())
								if err := h.Err(); err != nil {
									m.fail("%s: fresh handle already lost: %v", who, err)
								}
								checkValidity(ctx, m, l, h, who)
								switch i % 4 {
								case 1:
									if ttl > 0 {
										if err := h.KeepAlive(ctx); err != nil {
											m.fail("%s: KeepAlive: %v", who, err)
										}
									}
								case 2:
									if ttl > 0 {
										if err := h.KeepAlive(ctx); err != nil {
											m.fail("%s: KeepAlive: %v", who, err)
										}
									}
									if err := h.Refresh(ctx, 0); err != nil {
										m.fail("%s: Refresh(0): %v", who, err)
									}
									if err := h.Refresh(ctx, 4*time.Second); err != nil {
										m.fail("%s: Refresh(4s): %v", who, err)
									}
								}
								m.exit(who)
								if err := h.Release(ctx); err != nil {
									m.fail("%s: Release: %v", who, err)
								}
								if !errors.Is(h.Err(), lock.ErrReleased) {
									m.fail("%s: Err after Release: %v", who, h.Err())
								}
							}
						})
					}
				}
				wg.Wait()
				for _, e := range m.errs {
					t.Error(e)
				}
				t.Logf("%d processes: %d acquisitions of %d calls, %d gave up", n, m.entries, attempts.Load(), cancelled.Load())
				if m.entries == 0 {
					t.Fatal("nobody got the key")
				}
				// Free at the end.
				if ok, err := ls[0].IsLocked(ctx, "k"); err != nil || ok {
					time.Sleep(2 * time.Second)
					if v, ok, _ := ls[0].Value(ctx, "k"); ok {
						t.Errorf("key still held by %q after every caller returned", v)
					}
				}
				checkSiblingsExpire(t, tg, ls[0], "k")
			})
		}
	})
}

// checkSiblingsExpire fails t when a key next to l's lock key (queue,
// entries, fencing counter, grant marker) has no expiry.
func checkSiblingsExpire(t *testing.T, tg target, l lock.Locker, key string) {
	t.Helper()
	rl, ok := l.(*lock.Lock)
	if !ok {
		return
	}
	var c redisClient = redistest.Client(t)
	if tg.name == "cluster" {
		c = redistest.StartCluster(t)
	}
	lk := rl.Key(key)
	ctx := ctxT(t)
	for _, k := range []string{keys.Queue(lk), keys.Queued(lk), keys.Fence(lk), keys.Grant(lk)} {
		if pttl := c.PTTL(ctx, k).Val(); pttl == -1 {
			t.Errorf("%q has no expiry", k)
		}
	}
}

// TestAdvDiscoveredGrantWithoutExpiry: a waiter that asked for no
// expiry (ttl 0) gets the key from a grant whose message was lost (the
// reply of its own process's release), found by one of its attempts. The
// release set the key with the provisional TTL (10 s), but the handle
// believes it holds the key for ever: ValidUntil is zero and Lost never
// closes, while the key expires and another owner takes it.
func TestAdvDiscoveredGrantWithoutExpiry(t *testing.T) {
	t.Parallel()
	forEachRedisVariant(t, func(t *testing.T, c redisClient, opts ...lock.Option) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		l, h, hook := holderLosingRelease(t, c, ns, opts...)
		got := make(chan *lock.Held, 1)
		go func() {
			w, err := l.Acquire(ctx, "k", 0, lock.WithReleaseNotify())
			if err != nil {
				t.Error(err)
			}
			got <- w
		}()
		time.Sleep(100 * time.Millisecond)
		hook.armed.Store(true)
		if err := h.Release(ctx); err == nil {
			t.Fatal("Release with a lost reply succeeded")
		}
		w := <-got
		if w == nil {
			t.FailNow()
		}
		pttl := c.PTTL(ctx, l.Key("k")).Val()
		if v, _, _ := l.Value(ctx, "k"); v != w.Token() {
			t.Fatalf("key holds %q, handle token %q", v, w.Token())
		}
		if !w.ValidUntil().IsZero() || pttl == -1 {
			return // consistent
		}
		lost := w.Lost()
		t.Errorf("handle of a no-expiry acquisition believes it holds the key for ever (ValidUntil zero), but the key expires in %v", pttl)
		time.Sleep(pttl + 50*time.Millisecond)
		other, err := mustNew(t, c, ns).TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatalf("after the expiry: %v", err)
		}
		select {
		case <-lost:
		default:
			t.Fatalf("two holders: %q (fence %d) took the key while the first handle (fence %d) still reports Err() = %v",
				other.Token(), other.Fence(), w.Fence(), w.Err())
		}
	})
}

// TestAdvDiscoveryStopsAnnouncing: a call of a process holds the key
// under the token a release handed to its process ("<entry id>:<fence>").
// Another call of the same process then waits: its attempt finds the
// process's own grant token, which the discovery of lost grants takes as
// "handed to us, already passed on", and returns before it renews the
// process's queue entry. The entry (announced for about a second by the
// first call) expires, so the holder's release frees the key without
// telling the waiter, which sleeps for its whole retry delay.
func TestAdvDiscoveryStopsAnnouncing(t *testing.T) {
	forEachRedisVariant(t, func(t *testing.T, c redisClient, opts ...lock.Option) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		holderSide := mustNew(t, c, ns, opts...)
		l := mustNew(t, c, ns, opts...)
		h, err := holderSide.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan *lock.Held, 1)
		go func() {
			w, err := l.Acquire(ctx, "k", time.Minute, lock.WithReleaseNotify())
			if err != nil {
				t.Error(err)
			}
			got <- w
		}()
		time.Sleep(150 * time.Millisecond)
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		w1 := <-got
		if w1 == nil {
			t.FailNow()
		}
		if !strings.Contains(w1.Token(), ":") {
			t.Skipf("first waiter did not adopt the handed-over token: %q", w1.Token())
		}
		time.Sleep(1500 * time.Millisecond) // the entry announced by the first waiter expires
		second := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			w2, err := notifyWait(wctx, l, "k", time.Minute)
			if err == nil {
				err = w2.Release(ctx)
			}
			second <- err
		}()
		time.Sleep(200 * time.Millisecond)
		released := time.Now()
		if err := w1.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-second; err != nil {
			lk := l.Key("k")
			t.Fatalf("second waiter %v after the holder's release: %v (queue entries %v)", time.Since(released), err, c.HGetAll(ctx, keys.Queued(lk)).Val())
		}
	})
}

// stallAttemptHook holds, while armed, the acquire attempts of a waiting
// caller (5 keys) with token before they are sent, until their context
// ends, as a stalled connection would; started is signalled when one is
// held.
type stallAttemptHook struct {
	passHook
	armed   atomic.Bool
	token   string // only attempts with this owner token
	started chan struct{}
}

func (h *stallAttemptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.Load() && (cmd.Name() == "evalsha" || cmd.Name() == "eval") {
			if a := cmd.Args(); len(a) > 8 && a[2] == 5 && a[8] == h.token {
				select {
				case h.started <- struct{}{}:
				default:
				}
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Second):
				}
				err := fmt.Errorf("stalled by test: %w", context.Cause(ctx))
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmd)
	}
}

// TestAdvGrantToLeavingWaiterLost: a release hands the key to the
// first waiter of a process just as that waiter gives up (its context ends
// while it is busy with an attempt). Leaving, it passes the grant to the
// next waiter of its process, which must get the key at once.
func TestAdvGrantToLeavingWaiterLost(t *testing.T) {
	// Not batched: a batched command that left the queue cannot be given up.
	forEachRedis(t, func(t *testing.T, c redisClient) {
		var opts []lock.Option
		ctx, ns := ctxT(t), redistest.Namespace(t)
		holderSide := mustNew(t, c, ns, opts...)
		hook := &stallAttemptHook{token: "first", started: make(chan struct{}, 1)}
		l := mustNew(t, newClientLike(t, c, hook), ns, opts...)
		warmScripts(t, l)
		h, err := holderSide.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		firstCtx, cancelFirst := context.WithCancel(ctx)
		defer cancelFirst()
		firstDone := make(chan error, 1)
		go func() {
			_, err := l.Acquire(firstCtx, "k", time.Minute, lock.WithToken("first"),
				lock.WithReleaseNotify(), lock.WithRetry(lock.LinearRetry(50*time.Millisecond)))
			firstDone <- err
		}()
		time.Sleep(100 * time.Millisecond)
		second := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 6*time.Second)
			defer cancel()
			w, err := l.Acquire(wctx, "k", time.Minute, lock.WithReleaseNotify(), lock.WithRetry(lock.LinearRetry(50*time.Millisecond)))
			if err == nil {
				err = w.Release(ctx)
			}
			second <- err
		}()
		time.Sleep(100 * time.Millisecond)
		hook.armed.Store(true)
		select { // the first waiter is busy with an attempt
		case <-hook.started:
		case <-time.After(3 * time.Second):
			t.Fatal("the first waiter made no attempt")
		}
		if err := h.Release(ctx); err != nil { // hands the key to the first waiter
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		left := time.Now()
		cancelFirst()
		if err := <-firstDone; !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("first waiter: %v", err)
		}
		if err := <-second; err != nil {
			v, _, _ := l.Value(ctx, "k")
			t.Fatalf("second waiter %v after the first left with the grant: %v; key holds %q (PTTL %v)",
				time.Since(left), err, v, c.PTTL(ctx, l.Key("k")).Val())
		}
	})
}

// slowDialHook delays new connections while armed, as a server that is
// slow to accept (or a lossy network) would.
type slowDialHook struct {
	armed atomic.Bool
	delay time.Duration
}

func (h *slowDialHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if h.armed.Load() {
			select {
			case <-time.After(h.delay):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return next(ctx, network, addr)
	}
}

func (h *slowDialHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *slowDialHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestAdvSubscribeBlocksUnrelatedRelease: the first waiter of a Lock
// value subscribes while holding the dispatcher's mutex, so while its
// connection is slow to open, every Release of the value, on any key,
// waits for it, ignoring its own context.
func TestAdvSubscribeBlocksUnrelatedRelease(t *testing.T) {
	// A single node: a cluster client's dial hooks do not reach the
	// connections of its node clients.
	t.Run("single", func(t *testing.T) {
		c := redistest.Client(t)
		ctx, ns := ctxT(t), redistest.Namespace(t)
		hook := &slowDialHook{delay: 3 * time.Second}
		l := mustNew(t, newClientLike(t, c, hook), ns)
		warmScripts(t, l)
		other := mustNew(t, c, ns)
		hb, err := other.TryAcquire(ctx, "b", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		ha, err := l.TryAcquire(ctx, "a", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		hook.armed.Store(true)
		waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		go func() { _, _ = l.Acquire(waitCtx, "b", time.Minute, lock.WithReleaseNotify()) }()
		time.Sleep(200 * time.Millisecond) // the waiter is subscribing
		rctx, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel2()
		start := time.Now()
		err = ha.Release(rctx)
		took := time.Since(start)
		cancel()
		_ = hb.Release(ctx)
		if took > time.Second {
			t.Fatalf("Release of an unrelated key with a 300ms context took %v (err %v)", took, err)
		}
	})
}

// TestAdvEdgeInputsInQueue: odd keys (hash tags, stray
// braces, 1 KiB, NUL, spaces and colons) and odd WithToken tokens (1 KiB,
// spaces, ':', NUL) go through the hand-over queue of a Lock and a Pool,
// with backoffs of MaxInt64 and of a nanosecond.
func TestAdvEdgeInputsInQueue(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx := ctxT(t)
		ks := []string{"{tag}", "}{", "{}", "a{b}c{d}", "x}y{z", strings.Repeat("k", 1024), "k\x00nul", "sp ace:colon"}
		toks := []string{strings.Repeat("t", 1024), "a b:c", "x\x00y", ":", "1:2 3 4 5"}
		for li, l := range []lock.Locker{tg.newLocker(t), tg.newPool(t)} {
			for i, k := range ks {
				tok := toks[i%len(toks)]
				h, err := l.TryAcquire(ctx, k, time.Minute)
				if err != nil {
					t.Fatalf("locker %d key %q: %v", li, k, err)
				}
				type res struct {
					h   *lock.Held
					err error
				}
				got := make(chan res, 2)
				retries := []lock.RetryStrategy{lock.LinearRetry(1<<63 - 1), lock.LinearRetry(time.Nanosecond)}
				for j, r := range retries {
					go func() {
						wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
						defer cancel()
						opts := []lock.AcquireOption{lock.WithReleaseNotify(), lock.WithRetry(r)}
						if j == 0 {
							opts = append(opts, lock.WithToken(tok))
						}
						w, err := l.Acquire(wctx, k, time.Duration(j)*time.Minute, opts...)
						got <- res{w, err}
					}()
					time.Sleep(30 * time.Millisecond)
				}
				if err := h.Release(ctx); err != nil {
					t.Fatal(err)
				}
				last := h.Fence()
				for range retries {
					r := <-got
					if r.err != nil {
						t.Fatalf("locker %d key %q: waiter: %v", li, k, r.err)
					}
					if v, ok, _ := l.Value(ctx, k); !ok || v != r.h.Token() {
						t.Fatalf("locker %d key %q: key holds %q (%v), handle %q", li, k, v, ok, r.h.Token())
					}
					if r.h.Fence() <= last {
						t.Fatalf("locker %d key %q: fence %d not above %d", li, k, r.h.Fence(), last)
					}
					last = r.h.Fence()
					if r.h.TTL() == 0 && r.h.Token() != tok {
						t.Fatalf("locker %d key %q: WithToken waiter holds with %q", li, k, r.h.Token())
					}
					if err := r.h.Release(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if ok, _ := l.IsLocked(ctx, k); ok {
					t.Fatalf("locker %d key %q: locked after every waiter released", li, k)
				}
			}
		}
	})
}

// validityMonitor checks, while a handle lives, that it never believes it
// holds its key after the key stopped holding its token: it polls the key
// and, once the key is gone or taken, requires Err to report the loss.
func validityMonitor(ctx context.Context, t *testing.T, l lock.Locker, h *lock.Held, maxWait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(maxWait)
	for time.Now().Before(deadline) {
		v, ok, err := l.Value(ctx, h.Key())
		if err != nil {
			t.Fatal(err)
		}
		if !ok || v != h.Token() {
			if h.Err() == nil {
				t.Fatalf("key holds %q (held %v) but the handle (fence %d, TTL %v) still reports Err() = nil, ValidUntil in %v",
					v, ok, h.Fence(), h.TTL(), time.Until(h.ValidUntil()))
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAdvTinyTTLHandOverValidity: keys handed over with TTLs
// of 20–50 ms, to waiters of another process and of the holder's own, with
// the release delayed by CLIENT PAUSE on a private server for up to 60 ms:
// a handle never reports the key held once the server expired it.
func TestAdvTinyTTLHandOverValidity(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	ctx := ctxT(t)
	admin := srv.Client(t)
	ns := redistest.Namespace(t)
	holderSide := mustNew(t, srv.Client(t), ns)
	waiterSide := mustNew(t, srv.Client(t), ns)
	n := 60
	if testing.Short() {
		n = 15
	}
	handed := 0
	for i := range n {
		key := fmt.Sprint("k", i%3)
		waiterLock := []*lock.Lock{waiterSide, holderSide}[i%2]
		h, err := holderSide.Acquire(ctx, key, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ttl := time.Duration(20+i%4*10) * time.Millisecond
		got := make(chan *lock.Held, 1)
		go func() {
			w, err := waiterLock.Acquire(ctx, key, ttl, lock.WithReleaseNotify())
			if err != nil {
				t.Error(err)
			}
			got <- w
		}()
		time.Sleep(15 * time.Millisecond)
		if pause := i % 4 * 20; pause > 0 {
			if err := admin.Do(ctx, "client", "pause", pause, "write").Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		w := <-got
		if w == nil {
			t.FailNow()
		}
		if strings.Contains(w.Token(), ":") {
			handed++
		}
		validityMonitor(ctx, t, waiterLock, w, time.Second)
		_ = w.Release(ctx)
	}
	t.Logf("%d of %d acquisitions kept the handed-over token", handed, n)
}

// TestAdvFaultsStress: waiters of two processes hand one key around on a
// private server while a saboteur flushes the script cache, kills the
// pub/sub connections (lost hand-over messages), kills normal connections
// and pauses the server. One holder at a time, fences increasing; and once
// the faults stop, the key is taken again within a bounded time.
func TestAdvFaultsStress(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprint("batched=", batched), func(t *testing.T) {
			t.Parallel()
			srv := redistest.Server(t)
			ctx := ctxT(t)
			admin := srv.Client(t)
			var opts []lock.Option
			if batched {
				opts = append(opts, lock.WithBatching(1))
			}
			ls := []*lock.Lock{mustNew(t, srv.Client(t), "faults", opts...), mustNew(t, srv.Client(t), "faults", opts...)}
			m := &csMonitor{}
			stop := time.Now().Add(3 * time.Second)
			var wg sync.WaitGroup
			var errs atomic.Int64
			for p, l := range ls {
				for g := range 4 {
					wg.Go(func() {
						for i := 0; time.Now().Before(stop); i++ {
							who := fmt.Sprintf("p%d/g%d/%d", p, g, i)
							actx, cancel := context.WithTimeout(ctx, 2*time.Second)
							h, err := l.Acquire(actx, "k", 500*time.Millisecond, lock.WithReleaseNotify())
							cancel()
							if err != nil {
								errs.Add(1)
								continue
							}
							m.enter(who, h.Fence())
							time.Sleep(time.Millisecond)
							m.exit(who)
							_ = h.Release(ctx)
						}
					})
				}
			}
			wg.Go(func() {
				for i := 0; time.Now().Before(stop); i++ {
					switch i % 4 {
					case 0:
						_ = admin.Do(ctx, "script", "flush").Err()
					case 1:
						_ = admin.Do(ctx, "client", "kill", "type", "pubsub").Err()
					case 2:
						_ = admin.Do(ctx, "client", "pause", 30, "write").Err()
					case 3:
						if i%16 == 3 {
							_ = admin.Do(ctx, "client", "kill", "type", "normal", "skipme", "yes").Err()
						}
					}
					time.Sleep(20 * time.Millisecond)
				}
			})
			wg.Wait()
			for _, e := range m.errs {
				t.Error(e)
			}
			t.Logf("%d acquisitions, %d failed calls", m.entries, errs.Load())
			start := time.Now()
			wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			h, err := ls[0].Acquire(wctx, "k", time.Second, lock.WithReleaseNotify())
			if err != nil {
				v, _, _ := ls[0].Value(ctx, "k")
				t.Fatalf("after the faults, the key held by %q was not obtained: %v", v, err)
			}
			t.Logf("obtained %v after the faults stopped", time.Since(start))
			_ = h.Release(ctx)
		})
	}
}

// TestAdvLostMessageLongRetry: as TestHandOverSurvivesLostMessage, but
// the waiter waits only for the hand-over (a retry delay of an hour, as
// notifyWait and the package's own tests do). The pub/sub connection is
// killed just before the release, so the message is lost; go-redis
// resubscribes silently, and nothing makes the waiter look again: it
// sleeps until the holder's TTL as seen at its last attempt (a minute),
// and then finds the key still held by the grant meant for it.
func TestAdvLostMessageLongRetry(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	ctx := ctxT(t)
	admin := srv.Client(t)
	ns := redistest.Namespace(t)
	holderSide := mustNew(t, srv.Client(t), ns)
	waiterSide := mustNew(t, srv.Client(t), ns)
	h, err := holderSide.TryAcquire(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 6*time.Second)
		defer cancel()
		w, err := notifyWait(wctx, waiterSide, "k", time.Minute)
		if err == nil {
			err = w.Release(ctx)
		}
		got <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := admin.Do(ctx, "client", "kill", "type", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		v, _, _ := waiterSide.Value(ctx, "k")
		t.Fatalf("waiter %v after the release: %v; key holds %q (PTTL %v)", time.Since(start), err, v, admin.PTTL(ctx, waiterSide.Key("k")).Val())
	}
}

// TestAdvPoolQueueFences: two Pool values hand two members
// around through the queue; per member one holder at a time, and no fence
// is ever issued twice across the members (one counter per pool).
func TestAdvPoolQueueFences(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx := ctxT(t)
		var pools []*lock.Pool
		switch tg.name {
		case "memory":
			pools = []*lock.Pool{lock.NewMemoryPool()}
		default:
			var c redisClient = redistest.Client(t)
			if tg.name == "cluster" {
				c = redistest.StartCluster(t)
			}
			var opts []lock.Option
			if tg.name == "batched" {
				opts = append(opts, lock.WithBatching(1))
			}
			ns := redistest.Namespace(t)
			pools = []*lock.Pool{mustPool(t, c, ns, opts...), mustPool(t, c, ns, opts...)}
		}
		monitors := map[string]*csMonitor{"a": {}, "b": {}}
		var mu sync.Mutex
		seen := map[int64]string{}
		stop := time.Now().Add(2 * time.Second)
		var wg sync.WaitGroup
		for p, pl := range pools {
			for g := range 6 {
				wg.Go(func() {
					for i := 0; time.Now().Before(stop); i++ {
						key := []string{"a", "b"}[(g+i)%2]
						who := fmt.Sprintf("p%d/g%d/%d", p, g, i)
						actx, cancel := context.WithTimeout(ctx, time.Duration(5+(g*11+i*7)%200)*time.Millisecond)
						h, err := pl.Acquire(actx, key, 3*time.Second, lock.WithReleaseNotify())
						cancel()
						if err != nil {
							continue
						}
						m := monitors[key]
						m.enter(who, h.Fence())
						mu.Lock()
						if prev, dup := seen[h.Fence()]; dup {
							m.fail("fence %d issued to %s and to %s", h.Fence(), prev, who+" "+key)
						}
						seen[h.Fence()] = who + " " + key
						mu.Unlock()
						m.exit(who)
						if err := h.Release(ctx); err != nil {
							m.fail("%s: Release: %v", who, err)
						}
					}
				})
			}
		}
		wg.Wait()
		for k, m := range monitors {
			for _, e := range m.errs {
				t.Errorf("member %s: %s", k, e)
			}
			if m.entries == 0 {
				t.Errorf("member %s never acquired", k)
			}
		}
	})
}

// TestAdvDeadlineDuringSubscribeMisreported: Acquire promises
// ErrNotObtained (joined with the context's error) when its context ends.
// When the deadline passes while the first waiter of a Lock value opens its
// subscription, the dialer's own deadline can fire before the context
// marks itself done, and Acquire returns "lock: wait for ...: dial tcp
// ...: i/o timeout", which does not wrap ErrNotObtained: callers take a
// timeout for a Redis failure.
func TestAdvDeadlineDuringSubscribeMisreported(t *testing.T) {
	ctx, ns := ctxT(t), redistest.Namespace(t)
	c := redistest.Client(t)
	holder := mustNew(t, c, ns)
	if _, err := holder.TryAcquire(ctx, "k", time.Minute); err != nil {
		t.Fatal(err)
	}
	bad := map[string]int{}
	const rounds = 300
	for i := range rounds {
		l := mustNew(t, c, ns) // a fresh value: its first waiter subscribes
		actx, cancel := context.WithTimeout(ctx, time.Duration(500+i%7*300)*time.Microsecond)
		_, err := l.Acquire(actx, "k", time.Minute, lock.WithReleaseNotify())
		cancel()
		if !errors.Is(err, lock.ErrNotObtained) {
			bad[fmt.Sprint(err)]++
		}
	}
	for e, n := range bad {
		t.Errorf("%d of %d Acquire calls whose context ended returned %q, not ErrNotObtained", n, rounds, e)
	}
}
