package lock_test

// Second adversarial round (after 320b835 and c80844c, batching on by
// default). The tests marked "failed" failed on commit 567ed70 and pass
// since the fix; the comment above each tells the defect. Those marked
// "held" passed from the start. All stay as regression tests.
//
//	TestAdv2ForcedUnlockUnnoticed        failed: queued() skips attempts on stale knowledge: a forced Unlock is never noticed (twin passes)
//	TestAdv2RestartStrandsSkippingWaiter failed: same cause, triggered by a server restart (queue lost)
//	TestAdv2LateAnnounceAfterDrop        failed: write landing after the drop: orphan entry, pass-on ping-pong, key never free
//	TestAdv2GiveUpWithDelayedAnnounce    failed: same, a single waiter giving up during a slow write
//	TestAdv2PoolTimeoutAfterRunCountsAsNotSent failed: ErrPoolTimeout after a retried, executed command counts as "not sent"
//	TestAdv2ResentReleaseLosesOwnGrant   failed: a resent release loses the own-process grant message, nobody kicked
//	TestAdv2PauseStrandsGrant            failed: a 2 s stall strands a handed-over key for its whole TTL (one-shot clean-up)
//	TestAdv2MixedStress                  held   mutual exclusion, fence order, validity vs PTTL under faults (single, cluster, twin)

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

// heldRes is what a waiting goroutine reports.
type heldRes struct {
	h    *lock.Held
	err  error
	took time.Duration
}

// TestAdv2ForcedUnlockUnnoticed: a process has two waiters for a key, one
// that only waits for the hand-over (LinearRetry of an hour) and one that
// retries every few milliseconds (ExponentialBackoff(1ms, 5ms)). The long
// waiter gives up. The holder's key is then deleted by force (Unlock, "which
// hands the key to nobody, is noticed" by the retry strategy, says the
// package). The short waiter, now the only waiter anywhere, never attempts:
// line.queued trusts the hour the long waiter announced and the holder's
// expiry seen at the last attempt (none for a lock without TTL), so it
// sleeps while the key is free — for ever with a permanent holder, until the
// old holder's TTL otherwise. The twin gets the key at once.
func TestAdv2ForcedUnlockUnnoticed(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, holderTTL := range []time.Duration{0, time.Minute} {
			t.Run(fmt.Sprint("holderTTL=", holderTTL), func(t *testing.T) {
				ctx := ctxT(t)
				ls := tg.newProcesses(t, 2)
				holderSide, waiterSide := ls[0], ls[len(ls)-1]
				if _, err := holderSide.TryAcquire(ctx, "k", holderTTL); err != nil {
					t.Fatal(err)
				}
				longCtx, cancelLong := context.WithCancel(ctx)
				defer cancelLong()
				longDone := make(chan error, 1)
				go func() {
					_, err := notifyWait(longCtx, waiterSide, "k", time.Minute)
					longDone <- err
				}()
				time.Sleep(150 * time.Millisecond) // the long waiter announced its hour
				short := make(chan heldRes, 1)
				go func() {
					wctx, cancel := context.WithTimeout(ctx, 8*time.Second)
					defer cancel()
					start := time.Now()
					h, err := waiterSide.Acquire(wctx, "k", time.Minute, lock.WithReleaseNotify(),
						lock.WithRetry(lock.ExponentialBackoff(time.Millisecond, 5*time.Millisecond)))
					short <- heldRes{h, err, time.Since(start)}
				}()
				time.Sleep(150 * time.Millisecond)
				cancelLong()
				if err := <-longDone; !errors.Is(err, lock.ErrNotObtained) {
					t.Fatalf("long waiter: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
				if _, err := holderSide.Unlock(ctx, "k"); err != nil {
					t.Fatal(err)
				}
				unlocked := time.Now()
				select {
				case r := <-short:
					if r.err != nil {
						t.Fatalf("short waiter: %v", r.err)
					}
					_ = r.h.Release(ctx)
				case <-time.After(2 * time.Second):
					locked, _ := holderSide.IsLocked(ctx, "k")
					t.Fatalf("the only waiter left (retry ≤ 5ms) still waits %v after a forced Unlock; key locked: %v",
						time.Since(unlocked), locked)
				}
			})
		}
	})
}

// slowAttemptHook holds back, before it is sent, the next acquire attempt
// of a waiting caller (5 keys) once armed, as a slow network path would;
// started is signalled when it does. The command is then sent as usual.
type slowAttemptHook struct {
	passHook
	armed   atomic.Bool
	delay   time.Duration
	started chan struct{}
}

func (h *slowAttemptHook) match(cmd redis.Cmder) bool {
	if cmd.Name() != "evalsha" && cmd.Name() != "eval" {
		return false
	}
	a := cmd.Args()
	return len(a) > 9 && a[2] == 5 && h.armed.CompareAndSwap(true, false)
}

func (h *slowAttemptHook) hold() {
	select {
	case h.started <- struct{}{}:
	default:
	}
	time.Sleep(h.delay)
}

func (h *slowAttemptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.match(cmd) {
			h.hold()
		}
		return next(ctx, cmd)
	}
}

func (h *slowAttemptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if h.match(c) {
				h.hold()
				break
			}
		}
		return next(ctx, cmds)
	}
}

// releaseCountHook counts the release scripts (4 or 5 keys) a client sends.
type releaseCountHook struct {
	passHook
	n atomic.Int64
}

func (h *releaseCountHook) count(cmd redis.Cmder) {
	if cmd.Name() == "evalsha" || cmd.Name() == "eval" {
		// release.lua's second key is the wait queue; acquire.lua's the
		// fencing counter.
		if a := cmd.Args(); len(a) > 4 && (a[2] == 4 || a[2] == 5) {
			if k, _ := a[4].(string); strings.Contains(k, "|queue") {
				h.n.Add(1)
			}
		}
	}
}

func (h *releaseCountHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}

func (h *releaseCountHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.count(c)
		}
		return next(ctx, cmds)
	}
}

// TestAdv2LateAnnounceAfterDrop: in process P, waiter W2 (first in line)
// has an attempt on its way that writes P's queue entry (a slow network
// path: the hook holds it back 600 ms before sending it). Meanwhile W1
// queues behind it, a release hands the key to P and W2 gets the grant (it
// leaves the line, its attempt still travelling), and W1 gives up. Nobody
// is in line any more, so P drops its entry, with the stamp of its latest
// write. The drop lands first, then W2's write re-creates the entry, with
// W2's announced wait (an hour). announced() ignores that reply (sent
// before the drop) and leaves maybe=false: P believes it has no entry and
// never drops the one in Redis. W2 releases: the release hands the key to
// P's own orphan entry, P passes the grant on without a drop, which hands
// it to the orphan again, and so on: a tight loop of releases in which the
// key is never free, until P's subscription lingers out (30 s); after that,
// every release hands the key to nobody until the entry's deadline.
func TestAdv2LateAnnounceAfterDrop(t *testing.T) {
	forEachBatching(t, func(t *testing.T, c redisClient, opts ...lock.Option) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		q := mustNew(t, c, ns, opts...)
		hook := &slowAttemptHook{delay: 600 * time.Millisecond, started: make(chan struct{}, 1)}
		count := &releaseCountHook{}
		pc := newClientLike(t, c, hook)
		pc.AddHook(count)
		p := mustNew(t, pc, ns, opts...)
		warmScripts(t, p)
		h, err := q.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		w2 := make(chan heldRes, 1)
		hook.armed.Store(true) // W2's first queued attempt
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			w, err := notifyWait(wctx, p, "k", time.Minute)
			w2 <- heldRes{h: w, err: err}
		}()
		select { // W2's first queued attempt is on its way
		case <-hook.started:
		case <-time.After(3 * time.Second):
			t.Fatal("W2 made no attempt")
		}
		w1ctx, cancelW1 := context.WithCancel(ctx)
		defer cancelW1()
		w1 := make(chan error, 1)
		go func() { _, err := notifyWait(w1ctx, p, "k", time.Minute); w1 <- err }()
		time.Sleep(100 * time.Millisecond)     // W1 is in line behind W2, P's entry written
		if err := h.Release(ctx); err != nil { // hands the key to P: W2 is first
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		cancelW1() // nobody left in line: P drops its entry
		if err := <-w1; !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("W1: %v", err)
		}
		r := <-w2
		if r.err != nil {
			t.Fatalf("W2: %v", r.err)
		}
		time.Sleep(100 * time.Millisecond)
		before := count.n.Load()
		if err := r.h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		// Nobody waits for the key any more: it must be free.
		other := mustNew(t, c, ns)
		got, why := waitFree(ctx, t, other, "k", 2*time.Second)
		if got == nil {
			lk := other.Key("k")
			t.Fatalf("key not free 2s after its last holder released it, nobody waiting: %s; P sent %d releases meanwhile; queue entries %v",
				why, count.n.Load()-before, c.HGetAll(ctx, keys.Queued(lk)).Val())
		}
		_ = got.Release(ctx)
	})
}

// resetConn is a connection whose reply to the command marked by its
// dialer is lost: after the command was written (and has run on Redis),
// the connection breaks, as a reset would.
type resetConn struct {
	net.Conn
	d     *resetDialer
	reset atomic.Bool
}

type resetDialer struct {
	armed  atomic.Bool
	marker []byte
	fired  chan struct{}
	once   sync.Once
}

func (d *resetDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &resetConn{Conn: c, d: d}, nil
}

func (c *resetConn) Write(b []byte) (int, error) {
	if c.d.armed.Load() && bytes.Contains(b, c.d.marker) && c.d.armed.CompareAndSwap(true, false) {
		c.reset.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *resetConn) Read(b []byte) (int, error) {
	if c.reset.Load() {
		time.Sleep(50 * time.Millisecond) // Redis runs the command meanwhile
		c.d.once.Do(func() { close(c.d.fired) })
		_ = c.Conn.Close()
		return 0, io.EOF
	}
	return c.Conn.Read(b)
}

// poolTimeoutHook ends the borrowing of the pool's connection (release)
// once the marked command has failed for good.
type poolTimeoutHook struct {
	passHook
	marker  string
	release func()
	final   atomic.Value // error
}

func (h *poolTimeoutHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && strings.Contains(fmt.Sprint(cmd.Args()), h.marker) && h.final.Load() == nil {
			h.final.Store(err)
			h.release()
		}
		return err
	}
}

// TestAdv2PoolTimeoutAfterRunCountsAsNotSent: an attempt is written and runs
// on Redis, but the connection breaks before the reply (io.EOF). go-redis
// retries it (MaxRetries), and the retries find the small pool busy: the
// command fails with redis.ErrPoolTimeout, the error of the LAST try.
// notSent (held.go) takes ErrPoolTimeout for "never reached Redis", so the
// acquisition does not give back the lock its first try took: TryAcquire
// reports an error while the key stays locked under its token for the whole
// TTL. The package promises that "an acquisition that fails after its
// command may have reached Redis gives back what it may have taken".
func TestAdv2PoolTimeoutAfterRunCountsAsNotSent(t *testing.T) {
	for _, opts := range [][]lock.Option{{lock.WithBatching(0)}, nil} {
		name := "unbatched"
		if opts == nil {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, ns := ctxT(t), redistest.Namespace(t)
			key := "victim-" + name
			d := &resetDialer{marker: []byte(key), fired: make(chan struct{})}
			c := redis.NewClient(&redis.Options{
				Addr: redistest.Addr(t), Dialer: d.dial,
				PoolSize: 1, PoolTimeout: 100 * time.Millisecond,
			})
			t.Cleanup(func() { _ = c.Close() })
			l := mustNew(t, c, ns, opts...)
			warmScripts(t, l)
			borrowed := make(chan struct{})
			done := make(chan struct{})
			hook := &poolTimeoutHook{marker: key, release: sync.OnceFunc(func() { close(done) })}
			c.AddHook(hook)
			go func() { // another user of the client takes the pool's connection
				<-d.fired
				cn := c.Conn()
				_ = cn.Ping(ctx).Err()
				close(borrowed)
				<-done
				_ = cn.Close()
			}()
			d.armed.Store(true)
			_, err := l.TryAcquire(ctx, key, time.Minute)
			if err == nil {
				t.Fatal("TryAcquire succeeded through a broken connection")
			}
			select {
			case <-borrowed:
			default:
				t.Skipf("the connection was not borrowed in time: %v", err)
			}
			t.Logf("TryAcquire: %v (the command's final error: %v)", err, hook.final.Load())
			admin := redistest.Client(t)
			time.Sleep(500 * time.Millisecond)
			lk := l.Key(key)
			if v, e := admin.Get(ctx, lk).Result(); e == nil {
				t.Fatalf("TryAcquire failed (%v), yet Redis ran it: the key holds its token %q with PTTL %v, and nothing gave it back",
					err, v, admin.PTTL(ctx, lk).Val())
			}
		})
	}
}

// TestAdv2RestartStrandsSkippingWaiter: as TestAdv2ForcedUnlockUnnoticed,
// with a fault instead of a forced Unlock. Process P has waiters W1 (first,
// LinearRetry of an hour) and W2 (ExponentialBackoff(1ms, 5ms)) for a key
// another process holds with a minute's TTL. The (private) server restarts
// without persistence: key and queue are gone. The re-subscription kick
// makes W1 attempt; W1 takes the free key and releases it at once (or its
// attempt fails while the server is down). W2, now the only waiter, with a
// retry of at most 5 ms, never attempts: queued() still trusts the hour W1
// announced and the old holder's expiry, so it sleeps while the key is
// free, until the old holder's TTL would have run out.
func TestAdv2RestartStrandsSkippingWaiter(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	ctx, ns := ctxT(t), redistest.Namespace(t)
	holderSide := mustNew(t, srv.Client(t), ns)
	p := mustNew(t, srv.Client(t), ns)
	if _, err := holderSide.TryAcquire(ctx, "k", time.Minute); err != nil {
		t.Fatal(err)
	}
	w1 := make(chan heldRes, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		h, err := notifyWait(wctx, p, "k", time.Minute)
		if err == nil {
			err = h.Release(ctx)
		}
		w1 <- heldRes{err: err}
	}()
	time.Sleep(150 * time.Millisecond)
	w2 := make(chan heldRes, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		start := time.Now()
		h, err := p.Acquire(wctx, "k", time.Minute, lock.WithReleaseNotify(),
			lock.WithRetry(lock.ExponentialBackoff(time.Millisecond, 5*time.Millisecond)))
		if err == nil {
			_ = h.Release(ctx)
		}
		w2 <- heldRes{err: err, took: time.Since(start)}
	}()
	time.Sleep(150 * time.Millisecond)
	srv.Restart(t)
	restarted := time.Now()
	var free time.Time
	select {
	case r := <-w1:
		free = time.Now()
		t.Logf("W1 after the restart: %v", r.err)
	case r := <-w2:
		t.Logf("W2 got the key first (%v)", r.err)
		return
	case <-time.After(5 * time.Second):
		t.Fatal("nobody of P noticed the restart")
	}
	select {
	case r := <-w2:
		if r.err != nil {
			t.Fatalf("W2: %v", r.err)
		}
	case <-time.After(2 * time.Second):
		locked, err := holderSide.IsLocked(ctx, "k")
		t.Fatalf("the only waiter left (retry ≤ 5ms) still waits %v after the key became free (restart %v ago); locked %v (%v)",
			time.Since(free), time.Since(restarted), locked, err)
	}
}

// TestAdv2ResentReleaseLosesOwnGrant: a holder's release hands the key to
// a waiter of its own process; the grant message is the release's reply.
// The connection breaks after Redis ran the release (a reset, or CLIENT
// KILL), and go-redis resends it (MaxRetries, on by default): the second
// run finds the key no longer holds the holder's token and answers 0.
// Release reports ErrNotHeld, and the grant message is gone: nothing tells
// the waiter (no kick, unlike a lost pub/sub message), so a waiter that
// waits for the hand-over sleeps while the key is held by its own grant —
// until the old holder's TTL, or, after a holder without TTL, for its whole
// retry delay (an hour here). The key is held by a token nobody uses.
func TestAdv2ResentReleaseLosesOwnGrant(t *testing.T) {
	for _, holderTTL := range []time.Duration{0, time.Minute} {
		t.Run(fmt.Sprint("holderTTL=", holderTTL), func(t *testing.T) {
			t.Parallel()
			ctx, ns := ctxT(t), redistest.Namespace(t)
			tok := "holder-" + fmt.Sprint(holderTTL)
			d := &resetDialer{marker: []byte(tok), fired: make(chan struct{})}
			c := redis.NewClient(&redis.Options{Addr: redistest.Addr(t), Dialer: d.dial})
			t.Cleanup(func() { _ = c.Close() })
			l := mustNew(t, c, ns)
			warmScripts(t, l)
			h, err := l.TryAcquire(ctx, "k", holderTTL, lock.WithToken(tok))
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan heldRes, 1)
			go func() {
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				w, err := notifyWait(wctx, l, "k", time.Minute)
				if err == nil {
					_ = w.Release(ctx)
				}
				got <- heldRes{err: err}
			}()
			time.Sleep(150 * time.Millisecond)
			d.armed.Store(true)
			rerr := h.Release(ctx)
			released := time.Now()
			select {
			case <-d.fired:
			default:
				t.Fatalf("the release's connection did not break: %v", rerr)
			}
			t.Logf("Release: %v", rerr)
			select {
			case r := <-got:
				if r.err != nil {
					t.Fatal(r.err)
				}
			case <-time.After(3 * time.Second):
				v, _, _ := l.Value(ctx, "k")
				t.Fatalf("the waiter still waits %v after the release handed it the key; key holds %q (PTTL %v)",
					time.Since(released), v, redistest.Client(t).PTTL(ctx, l.Key("k")).Val())
			}
		})
	}
}

// pauseOnConfirmHook pauses the server (CLIENT PAUSE WRITE) the moment the
// first attempt that takes a handed-over key (its "from" argument given)
// is about to be sent, as a failover or a fork stall would.
type pauseOnConfirmHook struct {
	passHook
	admin *redis.Client
	pause time.Duration
	done  atomic.Bool
	at    atomic.Value // time.Time
}

func (h *pauseOnConfirmHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "evalsha" || cmd.Name() == "eval" {
			a := cmd.Args()
			n, _ := a[2].(int)
			if len(a) > 3+n+4 && a[3+n+4] != "" && h.done.CompareAndSwap(false, true) {
				_ = h.admin.Do(context.Background(), "client", "pause", h.pause.Milliseconds(), "write").Err()
				h.at.Store(time.Now())
			}
		}
		return next(ctx, cmd)
	}
}

// TestAdv2PauseStrandsGrant: a release hands a key (30 s TTL) to a waiter
// that must confirm it with one more attempt (WithToken); its client
// honours context deadlines (ContextTimeoutEnabled). Just then the server
// stalls for 2 s (CLIENT PAUSE WRITE, as in a failover). The waiter's
// context (1 s) ends during the stall, and its clean-up, which gives the
// grant back, has one second (releaseBestEffort): it times out too, and
// Redis drops a command whose client went away while paused. Nothing tries
// again, so after a 2 s fault the key stays held by a grant nobody uses for
// the rest of its TTL (28 s), though its only waiter gave up.
func TestAdv2PauseStrandsGrant(t *testing.T) {
	for _, opts := range [][]lock.Option{{lock.WithBatching(0)}, nil} {
		name := "unbatched"
		if opts == nil {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Server(t)
			ctx, ns := ctxT(t), redistest.Namespace(t)
			admin := srv.Client(t)
			q := mustNew(t, srv.Client(t), ns, opts...)
			hook := &pauseOnConfirmHook{admin: admin, pause: 2 * time.Second}
			// A client that honours context deadlines on the socket.
			pc := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = pc.Close() })
			pc.AddHook(hook)
			p := mustNew(t, pc, ns, opts...)
			warmScripts(t, p)
			h, err := q.TryAcquire(ctx, "k", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan error, 1)
			go func() {
				wctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				w, err := p.Acquire(wctx, "k", 30*time.Second, lock.WithReleaseNotify(), lock.WithToken("w"))
				if err == nil {
					err = fmt.Errorf("got the key (released): %w", w.Release(ctx))
				}
				got <- err
			}()
			time.Sleep(200 * time.Millisecond)
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
			err = <-got
			if !hook.done.Load() {
				t.Fatalf("the waiter made no confirming attempt: %v", err)
			}
			t.Logf("waiter: %v", err)
			paused, _ := hook.at.Load().(time.Time)
			time.Sleep(time.Until(paused.Add(hook.pause)))
			other := mustNew(t, srv.Client(t), ns)
			if got, why := waitFree(ctx, t, other, "k", 2*time.Second); got == nil {
				t.Fatalf("key not free 2s after a 2s stall ended, its only waiter gone: %s, PTTL %v",
					why, admin.PTTL(ctx, other.Key("k")).Val())
			}
		})
	}
}

// interval is the time a handle believed it held the key.
type interval struct {
	who        string
	fence      int64
	start, end time.Time
}

// intervalLog collects intervals and validity violations.
type intervalLog struct {
	mu   sync.Mutex
	ivs  []interval
	errs []string
}

func (l *intervalLog) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf(format, args...))
	}
}

func (l *intervalLog) add(iv interval) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ivs = append(l.ivs, iv)
}

// check reports overlapping intervals and fences that do not grow in the
// order the holders started.
func (l *intervalLog) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	ivs := append([]interval(nil), l.ivs...)
	for i := 1; i < len(ivs); i++ { // insertion sort by start: few hundred
		for j := i; j > 0 && ivs[j].start.Before(ivs[j-1].start); j-- {
			ivs[j], ivs[j-1] = ivs[j-1], ivs[j]
		}
	}
	bad := 0
	for i := 1; i < len(ivs); i++ {
		a, b := ivs[i-1], ivs[i]
		if b.start.Before(a.end) && bad < 10 {
			bad++
			t.Errorf("two holders: %s (fence %d) until %v, %s (fence %d) from %v", a.who, a.fence, a.end.Format("15:04:05.000000"), b.who, b.fence, b.start.Format("15:04:05.000000"))
		}
		if b.fence <= a.fence && bad < 10 {
			bad++
			t.Errorf("fence of %s (%d) not above the previous holder %s (%d)", b.who, b.fence, a.who, a.fence)
		}
	}
	for _, e := range l.errs {
		t.Error(e)
	}
}

// checkAgainstPTTL fails log when h believes it holds its key longer than
// the server keeps it, or holds it while the key holds another token.
func checkAgainstPTTL(ctx context.Context, log *intervalLog, c redisClient, lk string, h *lock.Held, who string) {
	t0 := time.Now()
	pipe := c.Pipeline()
	get := pipe.Get(ctx, lk)
	pttl := pipe.PTTL(ctx, lk)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return
	}
	t1 := time.Now()
	vu := h.ValidUntil()
	if h.Err() != nil || !vu.IsZero() && !vu.After(t0) {
		return // lost meanwhile
	}
	if get.Val() != h.Token() {
		log.fail("%s: handle valid (until %v from now) but key holds %q, not %q", who, vu.Sub(t1), get.Val(), h.Token())
		return
	}
	d := pttl.Val()
	switch {
	case d == -1 && !vu.IsZero():
	case d == -1:
	case vu.IsZero():
		log.fail("%s: handle believes it holds for ever, key expires in %v", who, d)
	case vu.After(t1.Add(d + 2*time.Millisecond)):
		log.fail("%s: handle valid %v after the key's expiry (PTTL %v)", who, vu.Sub(t1.Add(d)), d)
	}
}

// TestAdv2MixedStress: three values of one namespace hand one key
// around: on a private server with no, default and single-command
// batching, on a private cluster (default batching) and on the twin.
// Callers mix LinearRetry(time.Hour), ExponentialBackoff(1ms, 5ms), the
// default and plain polling, TTLs of 0, 25 ms, 200 ms and 2 s, WithToken,
// and contexts ending at random; on Redis a saboteur kills pub/sub and
// normal connections, pauses a node and flushes the script cache. Checked:
// no two handles believe they hold the key at once, fences grow in the
// order the holders started, and no handle believes it holds beyond the
// key's PTTL or after the key changed hands.
func TestAdv2MixedStress(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Server(t)
		ns := redistest.Namespace(t)
		admin := srv.Client(t)
		ls := []lock.Locker{
			mustNew(t, srv.Client(t), ns, lock.WithBatching(0)),
			mustNew(t, srv.Client(t), ns),
			mustNew(t, srv.Client(t), ns, lock.WithBatching(1)),
		}
		mixedStress(t, ls, admin, func(ctx context.Context, f func(c *redis.Client) error) { _ = f(admin) })
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		cc := redistest.PrivateCluster(t)
		ns := redistest.Namespace(t)
		var ls []lock.Locker
		for range 3 {
			c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cc.Options().Addrs})
			t.Cleanup(func() { _ = c.Close() })
			ls = append(ls, mustNew(t, c, ns))
		}
		var nodes []*redis.Client
		for _, a := range cc.Options().Addrs {
			nc := redis.NewClient(&redis.Options{Addr: a})
			t.Cleanup(func() { _ = nc.Close() })
			nodes = append(nodes, nc)
		}
		var n atomic.Int64
		mixedStress(t, ls, cc, func(ctx context.Context, f func(c *redis.Client) error) {
			_ = f(nodes[int(n.Add(1))%len(nodes)]) // one node at a time
		})
	})
	t.Run("twin", func(t *testing.T) {
		t.Parallel()
		mixedStress(t, []lock.Locker{lock.NewMemory()}, nil, nil)
	})
}

// mixedStress runs TestAdv2MixedStress on ls (one namespace); admin reads
// the key (nil for the twin) and onNode runs a fault on a node.
func mixedStress(t *testing.T, ls []lock.Locker, admin redisClient, onNode func(ctx context.Context, f func(c *redis.Client) error)) {
	ctx := ctxT(t)
	lk := ""
	if rl, ok := ls[0].(*lock.Lock); ok {
		lk = rl.Key("k")
	}
	log := &intervalLog{}
	stop := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	var calls, got atomic.Int64
	perValue := 15 / len(ls)
	for p, l := range ls {
		for g := range perValue {
			wg.Go(func() {
				for i := 0; time.Now().Before(stop); i++ {
					who := fmt.Sprintf("p%d/g%d/%d", p, g, i)
					ttl := []time.Duration{0, 25 * time.Millisecond, 200 * time.Millisecond, 2 * time.Second}[(g+i)%4]
					var opts []lock.AcquireOption
					switch (g + 2*i) % 5 {
					case 0:
						opts = append(opts, lock.WithReleaseNotify(), lock.WithRetry(lock.LinearRetry(time.Hour)))
					case 1:
						opts = append(opts, lock.WithReleaseNotify(), lock.WithRetry(lock.ExponentialBackoff(time.Millisecond, 5*time.Millisecond)))
					case 2:
						opts = append(opts, lock.WithReleaseNotify())
					case 3:
						opts = append(opts, lock.WithRetry(lock.ExponentialBackoff(time.Millisecond, 20*time.Millisecond)))
					case 4:
						opts = append(opts, lock.WithReleaseNotify(), lock.WithRetry(lock.LinearRetry(50*time.Millisecond)))
					}
					if (g+i)%3 == 0 {
						opts = append(opts, lock.WithToken(fmt.Sprintf("tok-%s", who)))
					}
					wait := time.Duration(5+(g*37+i*13)%700) * time.Millisecond
					actx, cancel := context.WithTimeout(ctx, wait)
					calls.Add(1)
					h, err := l.Acquire(actx, "k", ttl, opts...)
					cancel()
					if err != nil {
						continue
					}
					got.Add(1)
					start := time.Now()
					if admin != nil {
						checkAgainstPTTL(ctx, log, admin, lk, h, who)
					}
					if i%2 == 0 {
						time.Sleep(time.Duration(i%3) * time.Millisecond)
						if admin != nil {
							checkAgainstPTTL(ctx, log, admin, lk, h, who)
						}
					}
					end := time.Now()
					if vu := h.ValidUntil(); !vu.IsZero() && vu.Before(end) {
						end = vu
					}
					log.add(interval{who, h.Fence(), start, end})
					_ = h.Release(ctx)
				}
			})
		}
	}
	if onNode != nil {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				onNode(ctx, func(c *redis.Client) error {
					switch i % 5 {
					case 0:
						return c.Do(ctx, "script", "flush").Err()
					case 1:
						return c.Do(ctx, "client", "kill", "type", "pubsub").Err()
					case 2:
						return c.Do(ctx, "client", "pause", 20, "write").Err()
					case 3:
						if i%20 == 3 {
							return c.Do(ctx, "client", "kill", "type", "normal", "skipme", "yes").Err()
						}
					}
					return nil
				})
				time.Sleep(40 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	log.check(t)
	t.Logf("%d acquisitions of %d calls", got.Load(), calls.Load())
	if got.Load() == 0 {
		t.Fatal("nobody got the key")
	}
	if h, why := waitFree(ctx, t, ls[0], "k", 3*time.Second); h == nil {
		t.Logf("key not free 3s after every caller returned: %s", why)
	} else {
		_ = h.Release(ctx)
	}
}

// lateSendHook delays the next queued attempt (5 keys) once armed, as a
// slow network path would, but the caller gives up when its context ends
// (a client that honours deadlines); the command still reaches Redis and
// runs later, as the bytes already written do.
type lateSendHook struct {
	passHook
	armed atomic.Bool
	delay time.Duration
	sent  chan struct{} // closed when the late command has run
}

func (h *lateSendHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a := cmd.Args()
		if (cmd.Name() != "evalsha" && cmd.Name() != "eval") || len(a) < 3 || a[2] != 5 || !h.armed.CompareAndSwap(true, false) {
			return next(ctx, cmd)
		}
		late := redis.NewCmd(context.Background(), a...)
		go func() {
			time.Sleep(h.delay)
			_ = next(context.Background(), late)
			close(h.sent)
		}()
		<-ctx.Done()
		err := fmt.Errorf("i/o timeout (by test): %w", ctx.Err())
		cmd.SetErr(err)
		return err
	}
}

// TestAdv2GiveUpWithDelayedAnnounce: as TestAdv2LateAnnounceAfterDrop with
// a single waiter and no reply at all. The waiter's queued attempt is slow
// on the network; its context ends first, so it gives up and its process
// drops the entry (conditional on the stamp, which already counts the slow
// write). The drop lands first (nothing to drop), then the slow write
// creates the entry, for the hour the waiter announced. The process
// believes it has none (maybe=false). The holder's release hands the key
// to that entry, the process passes the grant on without a drop, which
// hands it to the entry again: the key ping-pongs and is never free. The
// first round's TestAdvLostAnnounceReplyOrphansEntry has the write land
// before the drop.
func TestAdv2GiveUpWithDelayedAnnounce(t *testing.T) {
	forEachBatching(t, func(t *testing.T, c redisClient, opts ...lock.Option) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		q := mustNew(t, c, ns, opts...)
		hook := &lateSendHook{delay: 500 * time.Millisecond, sent: make(chan struct{})}
		count := &releaseCountHook{}
		pc := newClientLike(t, c, hook)
		pc.AddHook(count)
		p := mustNew(t, pc, ns, opts...)
		warmScripts(t, p)
		h, err := q.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		hook.armed.Store(true)
		wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, err := notifyWait(wctx, p, "k", time.Minute); !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("waiter: %v", err)
		}
		select {
		case <-hook.sent:
		case <-time.After(3 * time.Second):
			t.Fatal("the slow attempt never ran")
		}
		time.Sleep(50 * time.Millisecond)
		before := count.n.Load()
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		other := mustNew(t, c, ns)
		got, why := waitFree(ctx, t, other, "k", 2*time.Second)
		if got == nil {
			lk := other.Key("k")
			t.Fatalf("key not free 2s after its holder released it, its only waiter gone: %s; P sent %d releases meanwhile; queue entries %v",
				why, count.n.Load()-before, c.HGetAll(ctx, keys.Queued(lk)).Val())
		}
		_ = got.Release(ctx)
	})
}
