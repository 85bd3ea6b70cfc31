package lock

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"
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

// Token returns the owner token stored in the lock key.
func (h *Held) Token() string { return h.token }

// Fence returns the fencing token of this acquisition: every acquisition of
// the same key in the same namespace gets a strictly larger one, across
// processes (in a Pool, every acquisition of any member does). Pass it to a downstream store and have it reject writes that
// carry a smaller fence than it has seen, so a holder whose lock expired
// cannot overwrite the work of the next one.
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
		h.lost = make(chan struct{})
		h.checkLocked(time.Now())
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
	defer h.opMu.Unlock()
	return h.refreshLocked(ctx, ttl)
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
		h.releaseBestEffort(ctx)
		h.mu.Lock()
		return h.doneErrLocked()
	}
	h.ttl = ttl
	h.validTo = h.validity(sent, ttl)
	h.armLocked()
	return nil
}

// releaseBestEffort deletes the key if the token still owns it, ignoring the
// outcome, on a short context that survives ctx's cancellation.
func (h *Held) releaseBestEffort(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_, _ = h.b.release(rctx, h.sk, h.token)
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
	ok, err := h.b.release(ctx, h.sk, h.token)
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
// the handle is lost. Watch Lost (or Err) to stop work in time.
//
// When ctx ends, renewal stops but the lock is kept until its TTL runs out.
// Release stops renewal and frees the key. A handle that is dropped while
// KeepAlive runs on a context that never ends is renewed forever: release
// it or cancel the context.
//
// KeepAlive returns ErrInvalidArgument for a lock without expiry and
// ErrNotHeld when the handle is already lost. Calling it again while it
// runs does nothing; after its ctx ended, it starts renewing again.
func (h *Held) KeepAlive(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checkLocked(time.Now())
	switch {
	case h.done:
		return h.doneErrLocked()
	case h.ttl <= 0:
		return fmt.Errorf("%w: key %q has no TTL to keep alive", ErrInvalidArgument, h.key)
	case h.kaCtx != nil && h.kaCtx.Err() == nil:
		return nil
	}
	prev := h.kaDone
	h.kaCtx, h.kaCancel = context.WithCancel(ctx)
	h.kaDone = make(chan struct{})
	go h.keepAlive(h.kaCtx, prev, h.kaDone)
	return nil
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
// a restarted KeepAlive waits for the old loop to exit first.
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
		case <-t.C:
		}
		h.mu.Lock()
		ttl, validTo, over := h.ttl, h.validTo, h.done
		h.mu.Unlock()
		if over || ttl <= 0 { // lost, released, or refreshed to no expiry
			return
		}
		// A renewal must not outlive the validity it tries to extend.
		rctx, cancel := context.WithDeadline(ctx, validTo)
		h.opMu.Lock()
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

// defaultRetry is Acquire's retry strategy when WithRetry is not given.
var defaultRetry = ExponentialBackoff(8*time.Millisecond, 512*time.Millisecond)

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
	if token == "" {
		token = rand.Text()
	}
	h := &Held{b: b, key: key, sk: b.storeKey(key), token: token, ttl: ttl, margin: c.margin, auto: !c.marginSet}
	var w waiter
	defer func() {
		if w != nil {
			_ = w.close()
		}
	}()
	for failures := 0; ; {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: key %q: %w", ErrNotObtained, key, err)
		}
		// A subscribed caller draws its next backoff before the attempt, so
		// that the attempt can announce how long the caller will wait.
		var delay time.Duration
		again := true
		await := time.Duration(0)
		if w != nil {
			if delay, again = c.retry.NextBackoff(failures + 1); again {
				await = delay
			}
		}
		sent := time.Now()
		fence, remaining, ok, err := b.acquire(ctx, h.sk, token, ttl, await)
		if err != nil {
			// The script may have run before the reply was lost: make sure
			// no lock is left behind that nobody knows the token of.
			h.releaseBestEffort(ctx)
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: key %q: %w", ErrNotObtained, key, ctx.Err())
			}
			return nil, fmt.Errorf("lock: acquire %q: %w", key, err)
		}
		if ok {
			h.fence, h.validTo = fence, h.validity(sent, ttl)
			if h.validTo.IsZero() || time.Now().Before(h.validTo) {
				return h, nil
			}
			// The reply came too late to leave any validity: count it as a
			// failed attempt. A retry with the same token takes the key
			// again (reentrant) with a fresh validity.
			remaining = 0
			if !retry {
				h.releaseBestEffort(ctx)
				return nil, fmt.Errorf("%w: key %q: the reply arrived after the lock's validity", ErrNotObtained, key)
			}
		}
		if !retry {
			return nil, fmt.Errorf("%w: key %q", ErrNotObtained, key)
		}
		failures++
		if w == nil {
			delay, again = c.retry.NextBackoff(failures)
		}
		if !again {
			return nil, fmt.Errorf("%w: key %q after %d attempts", ErrNotObtained, key, failures)
		}
		if remaining > 0 && remaining < delay {
			delay = remaining // the holder's TTL runs out first
		}
		if c.notify && w == nil {
			if w, err = b.subscribe(ctx, h.sk); err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("%w: key %q: %w", ErrNotObtained, key, ctx.Err())
				}
				return nil, fmt.Errorf("lock: subscribe to releases of %q: %w", key, err)
			}
			continue // a release may have happened before the subscription
		}
		if w != nil {
			err = w.wait(ctx, delay)
		} else {
			err = sleep(ctx, delay)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %w", ErrNotObtained, key, err)
		}
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	_, err := waitOn[struct{}](ctx, d, nil)
	return err
}

// waitOn waits until ch delivers (woken), d passes, or ctx ends (the error).
// A nil ch never delivers.
func waitOn[T any](ctx context.Context, d time.Duration, ch <-chan T) (woken bool, err error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-ch:
		return true, nil
	case <-t.C:
		return false, nil
	}
}
