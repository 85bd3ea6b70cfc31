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
// Held tracks how long the lock is surely still its own: from the moment the
// acquiring (or last confirmed refreshing) request was sent, plus the TTL,
// minus a safety margin, all on the local monotonic clock. Lost is closed
// when that validity runs out without a confirmed renewal, when a renewal
// finds the key taken or deleted, or when the lock is released. Because the
// validity starts before the request left, Lost is closed before the server
// can expire the key and let another owner in.
//
// A Held is safe for concurrent use.
type Held struct {
	b      heldBackend
	key    string
	token  string
	fence  int64
	margin time.Duration // fixed safety margin; 0 with marginAuto
	auto   bool          // margin is a tenth of the current TTL

	// mu guards every field below. It is never held across a Redis call.
	mu       sync.Mutex
	ttl      time.Duration
	validTo  time.Time     // end of validity (monotonic); zero when permanent
	done     bool          // lost or released; final
	err      error         // why done
	lost     chan struct{} // created by Lost; closed when done
	timer    *time.Timer   // fires at validTo while lost != nil
	kaCancel context.CancelFunc
	kaDone   chan struct{}
}

func newHeld(b heldBackend, key, token string, fence int64, ttl time.Duration, sent time.Time, c *acquireConfig) *Held {
	h := &Held{b: b, key: key, token: token, fence: fence, ttl: ttl, margin: c.margin, auto: !c.marginSet}
	h.validTo = h.validity(sent, ttl)
	return h
}

// validity returns the end of validity of a grant of ttl requested at sent.
// Caller need not hold mu: it reads only immutable fields.
func (h *Held) validity(sent time.Time, ttl time.Duration) time.Time {
	if ttl <= 0 {
		return time.Time{}
	}
	m := h.margin
	if h.auto {
		m = ttl / 10
	}
	return sent.Add(ttl - m)
}

// Key returns the caller's key (without namespace).
func (h *Held) Key() string { return h.key }

// Token returns the owner token stored in the lock key.
func (h *Held) Token() string { return h.token }

// Fence returns the fencing token of this acquisition: every acquisition of
// the same key in the same namespace gets a strictly larger one, across
// processes. Pass it to a downstream store and have it reject writes that
// carry a smaller fence than it has seen, so a holder whose lock expired
// cannot overwrite the work of the next one.
func (h *Held) Fence() int64 { return h.fence }

// TTL returns the TTL of the last successful acquire or refresh.
func (h *Held) TTL() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ttl
}

// ValidUntil returns the local monotonic time until which the lock is surely
// held (zero for a lock without expiry). It is the server-side expiry minus
// the safety margin, measured from when the last confirmed request was sent.
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
// it is lost, and ErrReleased after Release.
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

// doneErrLocked is the error of an operation on an ended handle: it wraps
// ErrNotHeld. Caller holds mu.
func (h *Held) doneErrLocked() error {
	if errors.Is(h.err, ErrNotHeld) {
		return h.err
	}
	return fmt.Errorf("%w: key %q: %w", ErrNotHeld, h.key, h.err)
}

func (h *Held) finish(err error) {
	h.mu.Lock()
	h.finishLocked(err)
	h.mu.Unlock()
}

// Refresh resets the TTL to ttl (ttl ≤ 0 removes the expiry) while the token
// still owns the key, in one round trip. It returns an error wrapping
// ErrNotHeld when the key expired, was deleted or taken, and after the handle
// was lost or released; the handle is then lost for good.
func (h *Held) Refresh(ctx context.Context, ttl time.Duration) error {
	if _, err := ttlMillis(ttl); err != nil {
		return err
	}
	h.mu.Lock()
	h.checkLocked(time.Now())
	if h.done {
		err := h.doneErrLocked()
		h.mu.Unlock()
		return err
	}
	h.mu.Unlock()

	sent := time.Now()
	ok, err := h.b.refresh(ctx, h.key, h.token, ttl)
	if err != nil {
		return fmt.Errorf("lock: refresh %q: %w", h.key, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !ok {
		err := fmt.Errorf("%w: key %q: expired, deleted or taken by another owner", ErrNotHeld, h.key)
		h.finishLocked(err)
		return err
	}
	if h.done { // the validity ran out while the request was under way
		return h.doneErrLocked()
	}
	h.ttl = ttl
	h.validTo = h.validity(sent, ttl)
	h.armLocked()
	return nil
}

// Release deletes the key while the token still owns it and wakes clients
// waiting in Acquire with WithReleaseNotify, in one round trip. It stops
// KeepAlive first and closes Lost. It returns an error wrapping ErrNotHeld
// when the token no longer owned the key. A handle that was already lost
// still tries, so a lock that outlived its validity is freed at once.
func (h *Held) Release(ctx context.Context) error {
	h.stopKeepAlive()
	h.mu.Lock()
	released := h.done && errors.Is(h.err, ErrReleased)
	h.mu.Unlock()
	if released {
		return fmt.Errorf("%w: key %q: %w", ErrNotHeld, h.key, ErrReleased)
	}
	ok, err := h.b.release(ctx, h.key, h.token)
	if err != nil {
		return fmt.Errorf("lock: release %q: %w", h.key, err)
	}
	if !ok {
		err := fmt.Errorf("%w: key %q: expired, deleted or taken by another owner", ErrNotHeld, h.key)
		h.finish(err)
		return err
	}
	h.mu.Lock()
	if h.done { // lost locally, but the key was still ours and is now gone
		h.err = ErrReleased
	}
	h.finishLocked(ErrReleased)
	h.mu.Unlock()
	return nil
}

// KeepAlive renews the lock in the background every third of its TTL until
// the lock is lost or released, or ctx ends. A renewal that finds the key
// gone or taken ends the handle at once; a renewal that fails (Redis
// unreachable) is retried every tenth of the TTL until the validity runs
// out, and then the handle is lost. Watch Lost (or Err) to stop work in
// time. When ctx ends, renewal stops but the lock is kept until its TTL
// runs out; Release stops renewal and frees the key.
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
	case h.kaDone != nil && !isClosed(h.kaDone):
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	h.kaCancel, h.kaDone = cancel, make(chan struct{})
	go h.keepAlive(ctx, h.kaDone)
	return nil
}

func (h *Held) stopKeepAlive() {
	h.mu.Lock()
	cancel, done := h.kaCancel, h.kaDone
	h.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (h *Held) keepAlive(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTimer(h.TTL() / 3)
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
		if over {
			return
		}
		// A renewal must not outlive the validity it tries to extend.
		rctx, cancel := context.WithDeadline(ctx, validTo)
		err := h.Refresh(rctx, ttl)
		cancel()
		switch {
		case err == nil:
			t.Reset(ttl / 3)
		case errors.Is(err, ErrNotHeld):
			return
		case ctx.Err() != nil:
			return
		default:
			h.mu.Lock()
			h.checkLocked(time.Now())
			over = h.done
			h.mu.Unlock()
			if over {
				return
			}
			t.Reset(ttl / 10)
		}
	}
}

// acquire implements TryAcquire (retry false) and Acquire.
func acquire(ctx context.Context, b heldBackend, key string, ttl time.Duration, opts []AcquireOption, retry bool) (*Held, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if _, err := ttlMillis(ttl); err != nil {
		return nil, err
	}
	c, err := newAcquireConfig(ttl, opts)
	if err != nil {
		return nil, err
	}
	token := c.token
	if token == "" {
		token = rand.Text()
	}
	var w waiter
	defer func() {
		if w != nil {
			_ = w.close()
		}
	}()
	for failures := 0; ; {
		sent := time.Now()
		fence, remaining, ok, err := b.acquire(ctx, key, token, ttl)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: key %q: %w", ErrNotObtained, key, ctx.Err())
			}
			return nil, fmt.Errorf("lock: acquire %q: %w", key, err)
		}
		if ok {
			return newHeld(b, key, token, fence, ttl, sent, &c), nil
		}
		if !retry {
			return nil, fmt.Errorf("%w: key %q", ErrNotObtained, key)
		}
		failures++
		delay, again := c.retry.NextBackoff(failures)
		if !again {
			return nil, fmt.Errorf("%w: key %q after %d attempts", ErrNotObtained, key, failures)
		}
		if remaining > 0 && remaining < delay {
			delay = remaining // the holder's TTL runs out first
		}
		if c.notify && w == nil {
			if w, err = b.subscribe(ctx, key); err != nil {
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

// isClosed reports whether ch is closed, without blocking.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
