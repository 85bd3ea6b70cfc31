package lock

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redisallocator/redisallocator/internal/batch"
)

// Held is an owner handle of one lock key, returned by TryAcquire and
// Acquire. Its random token identifies the owner: Refresh and Release act
// only while that token still owns the key.
//
// Held tracks until when the lock is surely still its own: from the moment
// the acquiring (or last confirmed refreshing) request was sent, plus the
// TTL, minus a safety margin, on the local monotonic clock. Lost is closed
// when that validity runs out without a confirmed renewal, when a renewal
// finds the key taken or deleted, or when the lock is released. Because the
// validity starts before the request left and Redis starts its expiry clock
// only when the request arrives, Lost is closed before the server can expire
// the key and let another owner in — as long as the two clocks run at the
// same rate within the margin.
//
// A Held is safe for concurrent use.
type Held struct {
	b      heldBackend
	key    string // the caller's key
	sk     string // the key as the backend stores it
	token  string
	fence  int64
	margin time.Duration // safety margin set by WithSafetyMargin
	auto   bool          // no WithSafetyMargin: the margin is a tenth of the TTL

	// opMu serialises the requests that change the key (Refresh, Release),
	// so validity is always computed from the request Redis applied last.
	// It is held across the round trip; never acquire it while holding mu.
	opMu sync.Mutex

	// mu guards the fields below. It is never held across a Redis call.
	mu       sync.Mutex
	ttl      time.Duration
	validTo  time.Time     // end of validity (monotonic); zero when permanent
	done     bool          // lost or released; final
	err      error         // why done
	lost     chan struct{} // created by Lost; closed when done
	timer    *time.Timer   // fires at validTo while lost != nil
	kaCtx    context.Context
	kaCancel context.CancelFunc
	kaDone   chan struct{} // closed when the latest KeepAlive goroutine exits
	kick     chan struct{} // tells the KeepAlive loop that Refresh changed the TTL
}

// validity returns the end of validity of a grant of ttl requested at sent.
// It reads only immutable fields.
func (h *Held) validity(sent time.Time, ttl time.Duration) time.Time {
	if ttl <= 0 {
		return time.Time{}
	}
	return sent.Add(ttl - h.marginFor(ttl))
}

func (h *Held) marginFor(ttl time.Duration) time.Duration {
	if h.auto {
		return ttl / 10
	}
	return h.margin
}

// Key returns the caller's key (without namespace).
func (h *Held) Key() string { return h.key }

// Token returns the owner token stored in the lock key: the one given with
// WithToken, else a random one or, for a key a release handed over to an
// Acquire with WithReleaseNotify, the one the release set.
func (h *Held) Token() string { return h.token }

// Fence returns the fencing token of this acquisition: every acquisition of
// the same key in the same namespace gets a strictly larger one, across
// processes (in a Pool, every acquisition of any member does). Pass it to a
// downstream store and have it reject writes that carry a smaller fence
// than it has seen, so a holder whose lock expired cannot overwrite the
// work of the next one. Fences start from the Redis server's clock in
// microseconds and need 16 digits; see the package documentation.
func (h *Held) Fence() int64 { return h.fence }

// TTL returns the TTL of the last successful acquire or refresh, in whole
// milliseconds.
func (h *Held) TTL() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ttl
}

// ValidUntil returns the local monotonic time until which the lock is surely
// held: a lower bound of the server-side expiry, less the safety margin. It
// is the zero time for a lock without expiry.
func (h *Held) ValidUntil() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.validTo
}

// Lost returns a channel closed when the lock is lost or released: its
// validity ran out with no confirmed renewal, a refresh found another owner
// or no key, or Release was called. Err tells which.
func (h *Held) Lost() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lost == nil {
		h.checkLocked(time.Now()) // before the channel exists: it may end the handle
		h.lost = make(chan struct{})
		if h.done {
			close(h.lost)
		} else {
			h.armLocked()
		}
	}
	return h.lost
}

// Err returns nil while the lock is held, an error wrapping ErrNotHeld once
// it is lost, and one wrapping ErrNotHeld and ErrReleased after Release.
func (h *Held) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checkLocked(time.Now())
	return h.err
}

// checkLocked ends the handle when its validity has run out. Caller holds mu.
func (h *Held) checkLocked(now time.Time) {
	if !h.done && !h.validTo.IsZero() && !now.Before(h.validTo) {
		h.finishLocked(fmt.Errorf("%w: key %q: no renewal confirmed within its TTL minus the safety margin", ErrNotHeld, h.key))
	}
}

// armLocked (re)starts the validity timer when Lost is being watched.
// Caller holds mu.
func (h *Held) armLocked() {
	if h.lost == nil || h.done || h.validTo.IsZero() {
		return
	}
	d := time.Until(h.validTo)
	if h.timer == nil {
		h.timer = time.AfterFunc(d, h.expire)
	} else {
		h.timer.Reset(d)
	}
}

// expire runs on the validity timer.
func (h *Held) expire() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checkLocked(time.Now())
	if !h.done {
		h.armLocked() // validity was extended after the timer was set
	}
}

// finishLocked ends the handle for good. Caller holds mu.
func (h *Held) finishLocked(err error) {
	if h.done {
		return
	}
	h.done, h.err = true, err
	if h.timer != nil {
		h.timer.Stop()
	}
	if h.lost != nil {
		close(h.lost)
	}
}

func (h *Held) finish(err error) {
	h.mu.Lock()
	h.finishLocked(err)
	h.mu.Unlock()
}

// doneErrLocked is the error of an operation on an ended handle.
// Caller holds mu.
func (h *Held) doneErrLocked() error {
	return h.err // always wraps ErrNotHeld
}

// Refresh resets the TTL to ttl (ttl ≤ 0 removes the expiry) while the token
// still owns the key, in one round trip. It returns an error wrapping
// ErrNotHeld when the key expired, was deleted or taken, and after the handle
// was lost or released; the handle is then lost for good. When the request
// fails, the outcome is unknown, so the validity is cut to what the new TTL
// would give if Redis applied it.
func (h *Held) Refresh(ctx context.Context, ttl time.Duration) error {
	ttl, err := h.checkTTL(ttl)
	if err != nil {
		return err
	}
	h.opMu.Lock()
	err = h.refreshLocked(ctx, ttl)
	h.opMu.Unlock()
	if err == nil {
		h.mu.Lock()
		if h.kick != nil {
			select { // the renewal loop plans anew with the new TTL
			case h.kick <- struct{}{}:
			default:
			}
		}
		h.mu.Unlock()
	}
	return err
}

// checkTTL validates a refresh TTL and rounds it down to milliseconds.
func (h *Held) checkTTL(ttl time.Duration) (time.Duration, error) {
	if _, err := ttlMillis(ttl); err != nil {
		return 0, err
	}
	ttl = normTTL(ttl)
	if ttl > 0 && !h.auto && h.margin >= ttl {
		return 0, fmt.Errorf("%w: TTL %v is not above the safety margin %v", ErrInvalidArgument, ttl, h.margin)
	}
	return ttl, nil
}

// refreshLocked sends one refresh. Caller holds opMu.
func (h *Held) refreshLocked(ctx context.Context, ttl time.Duration) error {
	h.mu.Lock()
	h.checkLocked(time.Now())
	if h.done {
		err := h.doneErrLocked()
		h.mu.Unlock()
		return err
	}
	h.mu.Unlock()

	sent := time.Now()
	ok, err := h.b.refresh(ctx, h.sk, h.token, ttl)
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err != nil:
		// Redis may have applied a shorter TTL: assume it did.
		if v := h.validity(sent, ttl); ttl > 0 && (h.validTo.IsZero() || v.Before(h.validTo)) {
			h.validTo = v
			h.armLocked()
		}
		h.checkLocked(time.Now())
		return fmt.Errorf("lock: refresh %q: %w", h.key, err)
	case !ok:
		err := fmt.Errorf("%w: key %q: expired, deleted or taken by another owner", ErrNotHeld, h.key)
		h.finishLocked(err)
		return err
	}
	h.checkLocked(time.Now())
	if h.done {
		// The validity ran out while the request was under way: the holder
		// has been told the lock is lost, so free the key it just extended.
		h.mu.Unlock()
		_ = h.releaseBestEffort(ctx, h.token, releaseOpts{fence: h.fence})
		h.mu.Lock()
		return h.doneErrLocked()
	}
	h.ttl = ttl
	h.validTo = h.validity(sent, ttl)
	h.armLocked()
	return nil
}

// releaseBestEffort releases the key as o says if token still owns it,
// ignoring the outcome, on a short context that survives ctx's
// cancellation.
func (h *Held) releaseBestEffort(ctx context.Context, token string, o releaseOpts) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_, err := h.b.release(rctx, h.sk, token, o)
	return err
}

// giveBack releases the key as o says if token still owns it. When the
// first try fails (Redis unreachable or paused), it goes on trying in the
// background, with backoff, for as long as such a hold can last (its TTL,
// or a minute for a hold without one), so that a lock nobody uses does not
// stay taken for its whole TTL.
func (h *Held) giveBack(ctx context.Context, token string, o releaseOpts) {
	if h.releaseBestEffort(ctx, token, o) == nil {
		return
	}
	limit := time.Minute
	if h.ttl > 0 {
		limit = max(h.ttl, provisionalTTL)
	}
	go func() {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
		defer cancel()
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, time.Second) {
			if sleep(bctx, wait) != nil || h.releaseBestEffort(bctx, token, o) == nil {
				return
			}
		}
	}()
}

// Release deletes the key while the token still owns it and wakes clients
// waiting in Acquire with WithReleaseNotify, in one round trip. It stops
// KeepAlive first and closes Lost. It returns an error wrapping ErrNotHeld
// when the token no longer owned the key. A handle that was already lost
// still tries, so a lock that outlived its validity is freed at once.
//
// When the request fails, Redis may or may not have deleted the key: the
// handle is then ended (Lost closed), and Release may be called again.
func (h *Held) Release(ctx context.Context) error {
	h.stopKeepAlive()
	h.opMu.Lock()
	defer h.opMu.Unlock()
	h.mu.Lock()
	released := h.done && errors.Is(h.err, ErrReleased)
	h.mu.Unlock()
	if released {
		return releasedError{h.key}
	}
	ok, err := h.b.release(ctx, h.sk, h.token, releaseOpts{fence: h.fence})
	if err != nil {
		h.finish(fmt.Errorf("%w: key %q: release failed, outcome unknown: %v", ErrNotHeld, h.key, err))
		return fmt.Errorf("lock: release %q: %w", h.key, err)
	}
	if !ok {
		err := fmt.Errorf("%w: key %q: expired, deleted or taken by another owner", ErrNotHeld, h.key)
		h.finish(err)
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	rel := releasedError{h.key}
	if h.done { // lost locally, but the key was still ours and is now gone
		h.err = rel
	}
	h.finishLocked(rel)
	return nil
}

// releasedError is the error of a released handle. It wraps ErrNotHeld and
// ErrReleased and formats its message only when asked, so a successful
// Release builds no message.
type releasedError struct{ key string }

func (e releasedError) Error() string {
	return fmt.Sprintf("%v: key %q (%v)", ErrNotHeld, e.key, ErrReleased)
}

func (e releasedError) Unwrap() []error { return []error{ErrNotHeld, ErrReleased} }

// KeepAlive renews the lock in the background until the lock is lost or
// released, or ctx ends. It renews every third of the TTL, and sooner when
// less than that remains of the validity. A renewal that finds the key gone
// or taken ends the handle at once; a renewal that fails (Redis unreachable)
// is retried every tenth of the TTL until the validity runs out, and then
// the handle is lost. Watch Lost (or Err) to stop work in time. Each
// renewal uses the TTL of the latest Refresh; while the lock has no expiry
// (Refresh with ttl ≤ 0), KeepAlive sends nothing and resumes when a
// Refresh gives it a TTL again.
//
// When ctx ends, renewal stops but the lock is kept until its TTL runs out.
// Release stops renewal and frees the key. A handle that is dropped while
// KeepAlive runs on a context that never ends is renewed forever: release
// it or cancel the context.
//
// KeepAlive returns ErrInvalidArgument for a lock without expiry (unless it
// already runs) and ErrNotHeld when the handle is already lost. Calling it
// again while it runs does nothing; after its ctx ended, it starts renewing
// again.
func (h *Held) KeepAlive(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checkLocked(time.Now())
	switch {
	case h.done:
		return h.doneErrLocked()
	case h.keepingAliveLocked():
		return nil
	case h.ttl <= 0:
		return fmt.Errorf("%w: key %q has no TTL to keep alive", ErrInvalidArgument, h.key)
	}
	prev := h.kaDone
	h.kaCtx, h.kaCancel = context.WithCancel(ctx)
	h.kaDone = make(chan struct{})
	if h.kick == nil {
		h.kick = make(chan struct{}, 1)
	}
	go h.keepAlive(h.kaCtx, prev, h.kaDone)
	return nil
}

// keepingAliveLocked reports whether a renewal loop runs and will go on:
// it has not exited and its context has not ended. Caller holds mu.
func (h *Held) keepingAliveLocked() bool {
	if h.kaDone == nil || h.kaCtx.Err() != nil {
		return false
	}
	select {
	case <-h.kaDone:
		return false
	default:
		return true
	}
}

// stopKeepAlive cancels the latest KeepAlive and waits for its goroutine,
// which first waits for any earlier one.
func (h *Held) stopKeepAlive() {
	h.mu.Lock()
	cancel, done := h.kaCancel, h.kaDone
	h.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// keepAlive is the renewal loop. prev is the previous loop's done channel:
// a restarted KeepAlive waits for the old loop to exit first. The loop reads
// the TTL only while it holds opMu, so a renewal never writes back a TTL
// that a concurrent Refresh replaced.
func (h *Held) keepAlive(ctx context.Context, prev <-chan struct{}, done chan struct{}) {
	defer close(done)
	if prev != nil {
		<-prev
	}
	t := time.NewTimer(h.nextRenewal(false))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.kick: // a Refresh changed the TTL: plan anew
			h.mu.Lock()
			ttl, over := h.ttl, h.done
			h.mu.Unlock()
			switch {
			case over:
				return
			case ttl > 0:
				t.Reset(h.nextRenewal(false))
			default:
				t.Stop() // no expiry: nothing to renew until the next Refresh
			}
			continue
		case <-t.C:
		}
		h.opMu.Lock()
		h.mu.Lock()
		ttl, validTo, over := h.ttl, h.validTo, h.done
		h.mu.Unlock()
		if over {
			h.opMu.Unlock()
			return
		}
		if ttl <= 0 {
			h.opMu.Unlock()
			continue // idle until a Refresh gives the lock a TTL
		}
		// A renewal must not outlive the validity it tries to extend.
		rctx, cancel := context.WithDeadline(ctx, validTo)
		err := h.refreshLocked(rctx, ttl)
		h.opMu.Unlock()
		cancel()
		switch {
		case err == nil:
			t.Reset(h.nextRenewal(false))
		case errors.Is(err, ErrNotHeld), ctx.Err() != nil:
			return
		default:
			if h.Err() != nil {
				return
			}
			t.Reset(h.nextRenewal(true))
		}
	}
}

// nextRenewal returns when to renew next: a third of the TTL (a tenth after
// a failure), but no later than half of the validity that is left.
func (h *Held) nextRenewal(failed bool) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.ttl / 3
	if failed {
		d = h.ttl / 10
	}
	if !h.validTo.IsZero() {
		d = min(d, time.Until(h.validTo)/2)
	}
	return max(d, 0)
}

// defaultRetry is Acquire's retry strategy when WithRetry is not given, and
// defaultNotifyRetry with WithReleaseNotify.
var (
	defaultRetry       = ExponentialBackoff(8*time.Millisecond, 512*time.Millisecond)
	defaultNotifyRetry = ExponentialBackoff(100*time.Millisecond, time.Second)
)

// normTTL rounds a positive TTL down to whole milliseconds, the precision
// Redis keeps, so local validity never outlasts the server's TTL.
func normTTL(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return 0
	}
	return ttl.Truncate(time.Millisecond)
}

// acquire implements TryAcquire (retry false) and Acquire.
func acquire(ctx context.Context, b heldBackend, key string, ttl time.Duration, opts []AcquireOption, retry bool) (*Held, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if _, err := ttlMillis(ttl); err != nil {
		return nil, err
	}
	ttl = normTTL(ttl)
	c, err := newAcquireConfig(ttl, opts)
	if err != nil {
		return nil, err
	}
	token := c.token
	grantID := ""
	if token == "" {
		token = rand.Text()
	} else {
		// The token may already own the key (a reentrant acquisition): a
		// clean-up may only give back a lock this acquisition took afresh.
		grantID = rand.Text()
	}
	h := &Held{b: b, key: key, sk: b.storeKey(key), token: token, ttl: ttl, margin: c.margin, auto: !c.marginSet}
	a := &acquisition{h: h, c: c, retry: retry, grant: grantID}
	held, err := a.run(ctx)
	if a.l != nil {
		a.l.leave(ctx, err == nil)
	}
	return held, err
}

// provisionalTTL is the TTL with which a release hands a key to a waiter
// that asked for no expiry: the waiter then removes the expiry with an
// attempt, and a waiter that died meanwhile does not keep the key for ever.
const provisionalTTL = 10 * time.Second

// acquisition is the state of one TryAcquire or Acquire call.
//
// Acquire with WithReleaseNotify waits in a line: its process keeps a place
// in the key's wait queue while the call waits, and a release hands the key
// to the process, which hands it to the first call in its line (see
// dispatcher). The call then owns the key under the token the release set,
// and takes it as its own: at once when the grant fits, else with one more
// attempt (WithToken, a TTL other than the one handed over, no expiry, or a
// grant too late to leave any validity).
type acquisition struct {
	h     *Held
	c     acquireConfig
	retry bool
	grant string // grant id of a fresh grant; "" when the token is ours alone

	l    line     // the call's place in line, with WithReleaseNotify
	from string   // a token the key was handed over with, for the next attempt to take
	owns []string // tokens that may own the key on the call's behalf: given back on failure
}

// run makes attempts until one succeeds, the strategy gives up, or ctx ends.
func (a *acquisition) run(ctx context.Context) (*Held, error) {
	h, b, key := a.h, a.h.b, a.h.key
	for failures := 0; ; {
		if err := ctx.Err(); err != nil {
			return nil, a.fail(ctx, fmt.Errorf("%w: key %q: %w", ErrNotObtained, key, err))
		}
		// The delay before the next attempt is drawn before this one, so
		// that the attempt can say how long the caller will wait.
		var delay time.Duration
		again := false
		if a.retry {
			delay, again = a.c.retry.NextBackoff(failures + 1)
		}
		if again && a.c.notify && a.l == nil && b.joinable() {
			l, err := b.join(ctx, h.sk) // no round trip: the subscription is live
			if err != nil {
				return nil, a.fail(ctx, a.joinError(ctx, err))
			}
			a.l = l
		}
		remaining := time.Duration(-1)
		// A caller whose process surely keeps its place in the queue for
		// the whole delay just waits: the release will hand it the key.
		if a.from != "" || !again || a.l == nil || !a.l.queued(delay) {
			at := &attempt{token: h.token, ttl: h.ttl, grant: a.grant, from: a.from}
			if again {
				at.line, at.wait = a.l, delay
			}
			sent := time.Now()
			fence, rem, ok, err := b.acquire(ctx, h.sk, at)
			if err != nil {
				if !notSent(err) { // the script may have run before the reply was lost
					a.owns = append(a.owns, h.token)
				}
				if ended(ctx) {
					err = fmt.Errorf("%w: key %q: %w", ErrNotObtained, key, endErr(ctx))
				} else {
					err = fmt.Errorf("lock: acquire %q: %w", key, err)
				}
				return nil, a.fail(ctx, err)
			}
			a.from = ""
			if !ok {
				a.owns = nil // another owner holds the key
			} else {
				a.owns = []string{h.token}
				if a.take(fence, sent) {
					return h, nil
				}
				// The reply came too late to leave any validity: count it
				// as a failed attempt, and retry soon. A retry with the same
				// token takes the key again (reentrant) with a fresh
				// validity.
				rem = 0
			}
			remaining = rem
		}
		if !a.retry {
			return nil, a.fail(ctx, fmt.Errorf("%w: key %q", ErrNotObtained, key))
		}
		failures++
		if !again {
			return nil, a.fail(ctx, fmt.Errorf("%w: key %q after %d attempts", ErrNotObtained, key, failures))
		}
		delay = waitFor(delay, remaining)
		if a.c.notify && a.l == nil {
			l, err := b.join(ctx, h.sk)
			if err != nil {
				return nil, a.fail(ctx, a.joinError(ctx, err))
			}
			a.l = l
			continue // announce the process now
		}
		if a.l == nil {
			if err := sleep(ctx, delay); err != nil {
				return nil, a.fail(ctx, fmt.Errorf("%w: key %q: %w", ErrNotObtained, key, err))
			}
			continue
		}
		g, handed, err := a.l.wait(ctx, delay)
		if err != nil {
			return nil, a.fail(ctx, fmt.Errorf("%w: key %q: %w", ErrNotObtained, key, err))
		}
		if !handed {
			continue
		}
		// The key is the call's now, under g.token, and the call is out of
		// line: should it have to wait again, it queues anew.
		a.owns = []string{g.token}
		a.l.leave(ctx, true)
		a.l = nil
		if a.c.token == "" {
			h.token = g.token
		}
		// A grant whose TTL's start is unknown (found by an attempt, not
		// announced by its message) is always confirmed.
		if h.token == g.token && g.ttl == h.ttl && !g.since.IsZero() && a.take(g.fence, g.since) {
			return h, nil
		}
		a.from = g.token // take it with the next attempt, at once
	}
}

// joinError is the error of a failed join: ErrNotObtained when ctx ended.
func (a *acquisition) joinError(ctx context.Context, err error) error {
	if ended(ctx) {
		return fmt.Errorf("%w: key %q: %w", ErrNotObtained, a.h.key, endErr(ctx))
	}
	return fmt.Errorf("lock: wait for %q: %w", a.h.key, err)
}

// ended reports whether ctx has ended or its deadline has passed: a
// network deadline taken from ctx can fire just before ctx's own timer.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// endErr returns why ctx ended, for a ctx that ended(): DeadlineExceeded
// while its timer has not fired yet.
func endErr(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return context.DeadlineExceeded
}

// take fills in the handle of a grant with fence whose TTL started after
// sent, and reports whether any validity is left.
func (a *acquisition) take(fence int64, sent time.Time) bool {
	h := a.h
	h.fence, h.validTo = fence, h.validity(sent, h.ttl)
	return h.validTo.IsZero() || time.Now().Before(h.validTo)
}

// fail gives back what a failed acquisition may own and returns err. A lock
// under the caller's own token (WithToken) is given back only when this
// acquisition took it afresh: the token may have owned the key before.
func (a *acquisition) fail(ctx context.Context, err error) error {
	for _, t := range a.owns {
		o := releaseOpts{}
		if t == a.c.token {
			o.grant = a.grant
		}
		a.h.giveBack(ctx, t, o)
	}
	return err
}

// waitFor returns how long to wait before the next attempt: delay, but no
// longer than until the holder's TTL (remaining ≥ 0; -1 when it has none or
// is unknown) has surely run out.
func waitFor(delay, remaining time.Duration) time.Duration {
	if remaining >= 0 {
		return min(delay, remaining+time.Millisecond)
	}
	return delay
}

// notSent reports an error of a command that provably never reached Redis.
// A pool timeout does not prove it: go-redis may have sent an earlier try
// before it retried.
func notSent(err error) bool {
	return errors.Is(err, batch.ErrNotSent)
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	_, _, err := waitOn[struct{}](ctx, d, nil)
	return err
}

// waitOn waits until ch delivers v (woken), d passes, or ctx ends (the
// error). A nil ch never delivers.
func waitOn[T any](ctx context.Context, d time.Duration, ch <-chan T) (v T, woken bool, err error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return v, false, ctx.Err()
	case v = <-ch:
		return v, true, nil
	case <-t.C:
		return v, false, nil
	}
}
