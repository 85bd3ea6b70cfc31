package lock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/lock"
)

// Regression tests of defects found when the lock was tried adversarially
// (issue 6). Each runs on every target where the defect can occur.

// redisVariant is a Redis target a test builds its own clients for.
type redisVariant struct {
	name    string
	cluster bool
	opts    []lock.Option
}

// forEachRedisVariant runs fn as a parallel subtest on the single node
// without batching, the single node with WithBatching(1) and the cluster
// with the default batching, with the options that select the variant.
func forEachRedisVariant(t *testing.T, fn func(t *testing.T, c redisClient, opts ...lock.Option)) {
	t.Helper()
	forVariants(t, []redisVariant{
		{"single", false, []lock.Option{lock.WithBatching(0)}},
		{"batched", false, []lock.Option{lock.WithBatching(1)}},
		{"cluster", true, nil},
	}, fn)
}

// forEachBatching is forEachRedisVariant with the single node's default
// batching in place of WithBatching(1).
func forEachBatching(t *testing.T, fn func(t *testing.T, c redisClient, opts ...lock.Option)) {
	t.Helper()
	forVariants(t, []redisVariant{
		{"unbatched", false, []lock.Option{lock.WithBatching(0)}},
		{"default", false, nil},
		{"cluster", true, nil},
	}, fn)
}

// forVariants runs fn as a parallel subtest for each variant.
func forVariants(t *testing.T, variants []redisVariant, fn func(t *testing.T, c redisClient, opts ...lock.Option)) {
	t.Helper()
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			var c redisClient = redistest.Client(t)
			if v.cluster {
				c = redistest.StartCluster(t)
			}
			fn(t, c, v.opts...)
		})
	}
}

// replyHook disturbs EVALSHA/EVAL commands while armed: the command goes
// through, and then its reply is delayed by delay (ignoring the context)
// and, when lose is set, replaced by an error, as if the connection broke
// after Redis ran it.
type replyHook struct {
	passHook
	armed atomic.Bool
	delay time.Duration
	lose  bool
}

func (h *replyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !h.armed.Load() || (cmd.Name() != "evalsha" && cmd.Name() != "eval") {
			return next(ctx, cmd)
		}
		err := next(ctx, cmd)
		time.Sleep(h.delay)
		if h.lose {
			err = errors.New("reply lost by test")
			cmd.SetErr(err)
		}
		return err
	}
}

func (h *replyHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !h.armed.Load() {
			return next(ctx, cmds)
		}
		err := next(ctx, cmds)
		time.Sleep(h.delay)
		if h.lose {
			err = errors.New("reply lost by test")
			for _, c := range cmds {
				c.SetErr(err)
			}
		}
		return err
	}
}

// TestFailedReacquireKeepsOwnersLock: an owner re-acquires its own key with
// its token (reentrant) and the attempt fails. Whether the command never
// left or its reply was lost, the clean-up must not delete the lock the
// owner already held.
func TestFailedReacquireKeepsOwnersLock(t *testing.T) {
	forEachRedisVariant(t, func(t *testing.T, c redisClient, opts ...lock.Option) {
		t.Run("never sent", func(t *testing.T) {
			ctx, ns := ctxT(t), redistest.Namespace(t)
			hook := &delayHook{delay: 200 * time.Millisecond}
			l := mustNew(t, newClientLike(t, c, hook), ns, opts...)
			warmScripts(t, l)
			h1, err := l.TryAcquire(ctx, "k", time.Minute, lock.WithToken("owner"))
			if err != nil {
				t.Fatal(err)
			}
			hook.armed.Store(true)
			short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
			defer cancel()
			if _, err := l.TryAcquire(short, "k", time.Minute, lock.WithToken("owner")); err == nil {
				t.Fatal("TryAcquire through a stalled connection succeeded")
			}
			hook.armed.Store(false)
			time.Sleep(400 * time.Millisecond) // a clean-up in the hook lands by now
			checkOwned(t, mustNew(t, c, ns), "k", "owner", h1)
		})
		t.Run("reply lost", func(t *testing.T) {
			ctx, ns := ctxT(t), redistest.Namespace(t)
			hook := &replyHook{lose: true}
			l := mustNew(t, newClientLike(t, c, hook), ns, opts...)
			warmScripts(t, l)
			h1, err := l.TryAcquire(ctx, "k", time.Minute, lock.WithToken("owner"))
			if err != nil {
				t.Fatal(err)
			}
			hook.armed.Store(true)
			_, err = l.TryAcquire(ctx, "k", time.Minute, lock.WithToken("owner"))
			hook.armed.Store(false)
			if err == nil {
				t.Fatal("TryAcquire with a lost reply succeeded")
			}
			time.Sleep(100 * time.Millisecond)
			checkOwned(t, mustNew(t, c, ns), "k", "owner", h1)
		})
		t.Run("fresh grant with lost reply is given back", func(t *testing.T) {
			ctx, ns := ctxT(t), redistest.Namespace(t)
			hook := &replyHook{lose: true}
			l := mustNew(t, newClientLike(t, c, hook), ns, opts...)
			warmScripts(t, l)
			hook.armed.Store(true)
			_, err := l.TryAcquire(ctx, "k", time.Minute, lock.WithToken("owner"))
			hook.armed.Store(false)
			if err == nil {
				t.Fatal("TryAcquire with a lost reply succeeded")
			}
			if ok, err := mustNew(t, c, ns).IsLocked(ctx, "k"); err != nil || ok {
				t.Fatalf("a lock nobody was told about is left behind: %v %v", ok, err)
			}
		})
	})
}

// warmScripts acquires and releases key "k" of l, so that the scripts a test
// disturbs are in the cache of the node holding it: a NOSCRIPT reply that a
// hook then hides would change what the test sees.
func warmScripts(t *testing.T, l *lock.Lock) {
	t.Helper()
	h, err := l.TryAcquire(ctxT(t), "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// checkOwned fails t unless key holds token and h still believes it holds it.
func checkOwned(t *testing.T, l *lock.Lock, key, token string, h *lock.Held) {
	t.Helper()
	v, ok, err := l.Value(ctxT(t), key)
	if err != nil || !ok || v != token {
		t.Fatalf("owner's lock: value %q, held %v, err %v; want %q", v, ok, err, token)
	}
	if err := h.Err(); err != nil {
		t.Fatalf("owner's handle: %v", err)
	}
}

// TestLateGrantGivenBack: a grant whose reply arrives after its validity is
// not used; when no further attempt follows (retries exhausted or the
// context ended), the lock it took must be given back at once rather than
// left until its TTL.
func TestLateGrantGivenBack(t *testing.T) {
	forEachRedisVariant(t, func(t *testing.T, c redisClient, opts ...lock.Option) {
		for _, tc := range []struct {
			name  string
			wait  time.Duration
			retry lock.RetryStrategy
		}{
			{"retries exhausted", time.Minute, lock.LimitRetry(lock.LinearRetry(time.Millisecond), 0)},
			{"context ended", 500 * time.Millisecond, lock.LinearRetry(time.Millisecond)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx, ns := ctxT(t), redistest.Namespace(t)
				hook := &replyHook{delay: 850 * time.Millisecond}
				l := mustNew(t, newClientLike(t, c, hook), ns, opts...)
				warmScripts(t, l)
				waitCtx, cancel := context.WithTimeout(ctx, tc.wait)
				defer cancel()
				hook.armed.Store(true)
				_, err := l.Acquire(waitCtx, "k", time.Second, lock.WithSafetyMargin(200*time.Millisecond), lock.WithRetry(tc.retry))
				hook.armed.Store(false)
				if !errors.Is(err, lock.ErrNotObtained) {
					t.Fatalf("Acquire with a late reply: %v, want ErrNotObtained", err)
				}
				// The key's TTL (1s from when Redis ran the script) has
				// about 150ms left: it must be gone already.
				if ok, err := mustNew(t, c, ns).IsLocked(ctx, "k"); err != nil || ok {
					t.Fatalf("late grant left locked: %v %v", ok, err)
				}
			})
		}
	})
}

// TestKeepAliveAfterPermanentAndBack: KeepAlive runs, the lock is refreshed
// to no expiry and back to a TTL; KeepAlive (called again or not) must
// renew it from then on.
func TestKeepAliveAfterPermanentAndBack(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		const ttl = 300 * time.Millisecond
		h, err := l.TryAcquire(ctx, "k", ttl)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.KeepAlive(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h.Refresh(ctx, 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl / 2) // the renewal loop sees the permanent TTL
		if err := h.Refresh(ctx, ttl); err != nil {
			t.Fatal(err)
		}
		if err := h.KeepAlive(ctx); err != nil {
			t.Fatalf("KeepAlive: %v", err)
		}
		time.Sleep(4 * ttl)
		if err := h.Err(); err != nil {
			t.Fatalf("lost although KeepAlive returned nil: %v", err)
		}
		if v, _, _ := l.Value(ctx, "k"); v != h.Token() {
			t.Fatalf("key holds %q, want the token", v)
		}
	})
}

// TestRenewalDoesNotUndoRefresh: a renewal that is due while a Refresh to
// no expiry is under way must not write the old TTL back afterwards.
func TestRenewalDoesNotUndoRefresh(t *testing.T) {
	forEachRedisVariant(t, func(t *testing.T, c redisClient, opts ...lock.Option) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		hook := &replyHook{delay: 250 * time.Millisecond}
		l := mustNew(t, newClientLike(t, c, hook), ns, opts...)
		warmScripts(t, l)
		const ttl = time.Second
		h, err := l.TryAcquire(ctx, "k", ttl)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.KeepAlive(ctx); err != nil {
			t.Fatal(err)
		}
		// The renewal is due at ttl/3 ≈ 333ms; the refresh spans it.
		time.Sleep(200 * time.Millisecond)
		hook.armed.Store(true)
		err = h.Refresh(ctx, 0)
		hook.armed.Store(false)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(400 * time.Millisecond) // any stale renewal has landed
		if pttl := c.PTTL(ctx, l.Key("k")).Val(); pttl != -1 {
			t.Fatalf("PTTL %v after Refresh(0), want none", pttl)
		}
		if h.TTL() != 0 {
			t.Fatalf("TTL() = %v after Refresh(0)", h.TTL())
		}
	})
}

// TestBatchingSlowNodeDoesNotStallOthers pauses one master of a cluster and
// fills the batching budget with operations on it: operations and renewals
// on keys of the other masters must go on at full speed.
func TestBatchingSlowNodeDoesNotStallOthers(t *testing.T) {
	t.Parallel()
	cc := redistest.PrivateCluster(t)
	ctx, ns := ctxT(t), redistest.Namespace(t)
	l := mustNew(t, cc, ns, lock.WithBatching(2))
	// A key on the first master and one on another master.
	var slowKey, fastKey string
	var slowNode *redis.Client
	for i := 0; slowKey == "" || fastKey == ""; i++ {
		k := "k" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		node, err := cc.MasterForKey(ctx, l.Key(k))
		if err != nil {
			t.Fatal(err)
		}
		switch addr := node.Options().Addr; {
		case addr == cc.Options().Addrs[0] && slowKey == "":
			slowKey, slowNode = k, node
		case addr != cc.Options().Addrs[0] && fastKey == "":
			fastKey = k
		}
	}
	for _, k := range []string{slowKey, fastKey} { // load the scripts
		h, err := l.TryAcquire(ctx, k, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	const ttl = 600 * time.Millisecond
	h, err := l.TryAcquire(ctx, fastKey, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.KeepAlive(ctx); err != nil {
		t.Fatal(err)
	}

	const pause = 2500 * time.Millisecond
	if err := slowNode.Do(ctx, "client", "pause", pause.Milliseconds(), "all").Err(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	done := make(chan struct{})
	for range 4 { // more than the budget
		go func() {
			defer func() { done <- struct{}{} }()
			_, _ = l.IsLocked(ctx, slowKey)
		}()
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if _, err := l.IsLocked(ctx, fastKey); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("IsLocked on a healthy master took %v while another master was paused", took)
	}
	time.Sleep(pause - time.Since(paused) + 200*time.Millisecond)
	for range 4 {
		<-done
	}
	if err := h.Err(); err != nil {
		t.Fatalf("lock on a healthy master lost while another was paused: %v", err)
	}
}

// TestPoolCancelledContext: every pool operation with a cancelled context
// fails with the context's error, on Redis and in the twin alike.
func TestPoolCancelledContext(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		p := tg.newPool(t)
		ctx, cancel := context.WithCancel(ctxT(t))
		cancel()
		ops := map[string]func() error{
			"Extend":      func() error { return p.Extend(ctx, "a") },
			"Shrink":      func() error { return p.Shrink(ctx, "a") },
			"Assign":      func() error { return p.Assign(ctx, "a") },
			"Clear":       func() error { return p.Clear(ctx) },
			"Keys":        func() error { _, err := p.Keys(ctx); return err },
			"Contains":    func() error { _, err := p.Contains(ctx, "a"); return err },
			"Len":         func() error { _, err := p.Len(ctx); return err },
			"Statuses":    func() error { _, err := p.Statuses(ctx); return err },
			"HealthCheck": func() error { _, _, err := p.HealthCheck(ctx); return err },
		}
		for name, op := range ops {
			if err := op(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: %v", name, err)
			}
		}
	})
}

// TestFenceCountersExpire: one-off locks leave no key without an expiry,
// every key goes within the TTL plus the grace, and a fence issued after
// every key of a lock expired (its counter too) is still larger than every
// fence issued before.
func TestFenceCountersExpire(t *testing.T) {
	forEachRedis(t, func(t *testing.T, c redisClient) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		const grace = 50 * time.Millisecond
		l := mustNew(t, c, ns, lock.WithFenceGrace(grace))
		p := mustPool(t, c, ns, lock.WithFenceGrace(grace))
		var last int64
		for i := range 200 {
			var h *lock.Held
			var err error
			var opts []lock.AcquireOption
			if i%3 == 0 {
				opts = append(opts, lock.WithToken(fmt.Sprint("owner-", i))) // sets a grant marker
			}
			if i%2 == 0 {
				h, err = l.TryAcquire(ctx, fmt.Sprint("one-off-", i), 100*time.Millisecond, opts...)
			} else {
				h, err = p.TryAcquire(ctx, fmt.Sprint("one-off-", i), 100*time.Millisecond, opts...)
			}
			if err != nil {
				t.Fatal(err)
			}
			last = max(last, h.Fence())
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// A lock that expires by itself, and a waiter that gave up.
		if _, err := l.TryAcquire(ctx, "expiring", 20*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if _, err := l.TryAcquire(ctx, "waited", 30*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		defer cancel()
		if _, err := l.Acquire(short, "waited", time.Minute, lock.WithRetry(lock.LinearRetry(time.Millisecond))); err == nil {
			t.Fatal("Acquire of a held key succeeded")
		}
		for _, pattern := range []string{"*" + ns + "*"} {
			keysLeft := scanAll(t, c, pattern)
			for _, k := range keysLeft {
				if pttl := c.PTTL(ctx, k).Val(); pttl == -1 { // -2: gone meanwhile
					t.Fatalf("key %q has no expiry (PTTL %v)", k, pttl)
				}
			}
		}
		// The counters outlive their grants' TTL by the grace only.
		deadline := time.Now().Add(5 * time.Second)
		for left := scanAll(t, c, "*"+ns+"*"); len(left) > 0; left = scanAll(t, c, "*"+ns+"*") {
			if time.Now().After(deadline) {
				t.Fatalf("%d keys left, such as %q", len(left), left[0])
			}
			time.Sleep(20 * time.Millisecond)
		}
		for i, locker := range []lock.Locker{l, p} {
			h, err := locker.TryAcquire(ctx, "one-off-0", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if h.Fence() <= last {
				t.Fatalf("locker %d: fence %d after the counters expired, not above %d", i, h.Fence(), last)
			}
		}
	})
}

// scanAll returns the keys matching pattern on every master.
func scanAll(t *testing.T, c redisClient, pattern string) []string {
	t.Helper()
	ctx := ctxT(t)
	var out []string
	scan := func(ctx context.Context, n *redis.Client) error {
		ks, err := n.Keys(ctx, pattern).Result()
		out = append(out, ks...)
		return err
	}
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return scan(ctx, n)
		})
	} else {
		err = scan(ctx, c.(*redis.Client))
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// pttlZeroHook makes the first acquire attempt of its client that finds the
// key taken report a holder with PTTL 0 (under a millisecond left), and
// frees the key right then, as its expiry would.
type pttlZeroHook struct {
	passHook
	done   atomic.Bool
	expire func()
}

func (h *pttlZeroHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if c, ok := cmd.(*redis.Cmd); ok && err == nil && !h.done.Load() {
			if n, ok := c.Val().(int64); ok && n < -2 {
				h.done.Store(true)
				h.expire()
				c.SetVal(int64(-2))
			}
		}
		return err
	}
}

// TestWaiterRetriesWhenHolderExpires: a holder with under a millisecond
// left must not make a waiter sleep its whole backoff.
func TestWaiterRetriesWhenHolderExpires(t *testing.T) {
	forEachRedisVariant(t, func(t *testing.T, c redisClient, opts ...lock.Option) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		observer := mustNew(t, c, ns)
		hook := &pttlZeroHook{expire: func() {
			if _, err := observer.Unlock(context.WithoutCancel(ctx), "k"); err != nil {
				t.Error(err)
			}
		}}
		l := mustNew(t, newClientLike(t, c, hook), ns, opts...)
		warmScripts(t, l)
		if ok, err := observer.Lock(ctx, "k", "holder", time.Hour); err != nil || !ok {
			t.Fatal(ok, err)
		}
		waitCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := l.Acquire(waitCtx, "k", time.Minute, lock.WithRetry(lock.LinearRetry(time.Hour))); err != nil {
			t.Fatalf("Acquire after the holder's last millisecond: %v", err)
		}
	})
}
