package allocator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/batch"
	"github.com/redisallocator/redisallocator/internal/script"
)

// Lease is an exclusive hold on one resource of the pool: what lock.Held is
// to the lock package. It carries a random token, which Free and Renew
// check, and a fencing number that grows with every lease of the pool.
//
// Its validity is measured on the local clock from the moment the malloc
// request was sent, less a safety margin of a tenth of the TTL, so Lost
// closes before the server could reclaim the lease and grant the resource
// again, as long as both clocks run at the same rate within that margin.
// (A lease handed over to MallocWait is measured from when the hand-off
// arrived; a hand-off's delivery delay is not accounted for.)
//
// In shared mode a Lease only names the resource: it has no token or
// fence, Free and Renew do nothing, and Lost never closes.
//
// A Lease is safe for concurrent use.
type Lease struct {
	a      *Allocator
	key    string
	token  string
	fence  int64
	shared bool
	sess   *Session // the session the lease belongs to, or nil

	// opMu serialises Renew and Free, so validity always follows the
	// request Redis applied last. Never acquire it while holding mu.
	opMu sync.Mutex

	mu       sync.Mutex
	ttl      time.Duration
	validTo  time.Time // zero: permanent
	done     bool
	err      error
	lost     chan struct{}
	timer    *time.Timer
	kaCancel context.CancelFunc
	kaDone   chan struct{}
}

func newLease(a *Allocator, key, token string, fence int64, ttl time.Duration, sent time.Time, sess *Session) *Lease {
	l := &Lease{a: a, key: key, token: token, fence: fence, ttl: max(ttl, 0), sess: sess}
	l.validTo = validity(sent, ttl)
	return l
}

// validity returns the end of a lease of ttl requested at sent: the
// TTL less a tenth, and the zero time for a permanent lease.
func validity(sent time.Time, ttl time.Duration) time.Time {
	if ttl <= 0 {
		return time.Time{}
	}
	ttl = ttl.Truncate(time.Millisecond)
	return sent.Add(ttl - ttl/10)
}

// Key returns the leased resource.
func (l *Lease) Key() string { return l.key }

// Token returns the lease's random token ("" in shared mode).
func (l *Lease) Token() string { return l.token }

// Fence returns the lease's fencing number: every lease of the pool gets a
// larger one than all leases granted before it, across processes. Hand it
// to the resource's downstream store and have it refuse writes carrying a
// smaller number than it has seen, so a holder whose lease expired cannot
// overwrite the work of the next one. It is 0 in shared mode.
func (l *Lease) Fence() int64 { return l.fence }

// TTL returns the TTL of the last grant or renewal (0: permanent).
func (l *Lease) TTL() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ttl
}

// ValidUntil returns the local time until which the lease surely holds:
// the end of its own validity or, when it belongs to a session, of the
// session's if that comes first. It is the zero time for a permanent lease
// outside a session.
func (l *Lease) ValidUntil() time.Time {
	l.mu.Lock()
	to := l.validTo
	l.mu.Unlock()
	if l.sess != nil {
		if st := l.sess.ValidUntil(); to.IsZero() || st.Before(to) {
			to = st
		}
	}
	return to
}

// Lost returns a channel closed when the lease ends: its validity ran out
// without a confirmed renewal, a renewal found it gone, or it was freed.
// Err tells which.
func (l *Lease) Lost() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == nil {
		l.checkLocked(time.Now()) // before the channel exists: it may end the handle
		l.lost = make(chan struct{})
		if l.done {
			close(l.lost)
		} else {
			l.armLocked()
			if l.sess != nil && !l.sess.watch(l) {
				l.checkLocked(time.Now()) // the session ended meanwhile
			}
		}
	}
	return l.lost
}

// Err returns nil while the lease holds, an error wrapping ErrNotHeld once
// it is lost, and one wrapping ErrNotHeld and ErrFreed after Free.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.checkLocked(time.Now())
	return l.err
}

func (l *Lease) checkLocked(now time.Time) {
	if l.done {
		return
	}
	if !l.validTo.IsZero() && !now.Before(l.validTo) {
		l.finishLocked(fmt.Errorf("%w: %q: no renewal confirmed within its TTL less the safety margin", ErrNotHeld, l.key))
		return
	}
	if l.sess != nil {
		if err := l.sess.lostErr(); err != nil {
			l.finishLocked(sessionGone{key: l.key, err: err})
		}
	}
}

// sessionGone is the loss of a lease through its session.
type sessionGone struct {
	key string
	err error
}

func (e sessionGone) Error() string {
	return fmt.Sprintf("allocator: %q: lease not held: its session is gone: %v", e.key, e.err)
}
func (e sessionGone) Unwrap() []error { return []error{ErrNotHeld, e.err} }

func (l *Lease) armLocked() {
	if l.lost == nil || l.done || l.validTo.IsZero() {
		return
	}
	d := time.Until(l.validTo)
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.expire)
	} else {
		l.timer.Reset(d)
	}
}

func (l *Lease) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.checkLocked(time.Now())
	if !l.done {
		l.armLocked()
	}
}

func (l *Lease) finishLocked(err error) {
	if l.done {
		return
	}
	l.done, l.err = true, err
	if l.timer != nil {
		l.timer.Stop()
	}
	if l.lost != nil {
		close(l.lost)
		if l.sess != nil {
			l.sess.unwatch(l)
		}
	}
}

func (l *Lease) finish(err error) {
	l.mu.Lock()
	l.finishLocked(err)
	l.mu.Unlock()
}

// Renew extends the lease to ttl from now (ttl ≤ 0: permanent) while it
// still holds, in one round trip. It returns an error wrapping ErrNotHeld
// when the lease was freed, expired or was reclaimed; the lease is lost for
// good then and nothing changes in Redis. When the request fails, the
// outcome is unknown, so validity is cut to what the new TTL would give if
// Redis applied it.
func (l *Lease) Renew(ctx context.Context, ttl time.Duration) error {
	if l.shared {
		return nil
	}
	l.opMu.Lock()
	defer l.opMu.Unlock()
	return l.renewLocked(ctx, ttl)
}

func (l *Lease) renewLocked(ctx context.Context, ttl time.Duration) error {
	l.mu.Lock()
	l.checkLocked(time.Now())
	if l.done {
		err := l.err
		l.mu.Unlock()
		return err
	}
	l.mu.Unlock()
	sent := time.Now()
	v, err := l.a.run(ctx, renewScript, nil, l.key, l.token, millis(ttl))
	if err != nil {
		l.mu.Lock()
		if !l.done && ttl > 0 {
			if to := validity(sent, ttl); l.validTo.IsZero() || to.Before(l.validTo) {
				l.validTo = to
				l.armLocked()
			}
		}
		l.mu.Unlock()
		return err
	}
	if v == nil {
		err := fmt.Errorf("%w: %q: the lease ended on the server", ErrNotHeld, l.key)
		l.finish(err)
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return l.err
	}
	l.ttl = max(ttl, 0)
	l.validTo = validity(sent, ttl)
	l.armLocked()
	return nil
}

// Free ends the lease, in one round trip, and the resource goes to the
// next waiter or back to the pool (unless it was removed from the pool or
// quarantined meanwhile). It returns an error wrapping ErrNotHeld when the
// lease no longer held the resource (it expired, was reclaimed, granted
// again or forced free): nothing changes then. Free is idempotent: after a
// successful Free it returns nil again.
func (l *Lease) Free(ctx context.Context) error {
	if l.shared {
		return nil
	}
	err := l.free(ctx)
	if l.Err() != nil {
		l.stopKeepAlive() // after opMu is released: the loop may wait for it
	}
	return err
}

func (l *Lease) free(ctx context.Context) error {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	l.mu.Lock()
	if l.done && errors.Is(l.err, ErrFreed) {
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	n, err := l.a.runInt(ctx, freeScript, nil, l.key, l.token)
	if err != nil {
		return err
	}
	if n != 1 {
		err := fmt.Errorf("%w: %q: the lease had ended on the server", ErrNotHeld, l.key)
		l.finish(err)
		return err
	}
	l.finish(freedError{l.key})
	return nil
}

type freedError struct{ key string }

func (e freedError) Error() string   { return fmt.Sprintf("allocator: %q: lease freed", e.key) }
func (e freedError) Unwrap() []error { return []error{ErrNotHeld, ErrFreed} }

// KeepAlive renews the lease in the background, every third of its TTL,
// until ctx ends, the lease is freed or it is lost (watch Lost). Calling it
// again replaces the previous loop. It returns ErrInvalidArgument for a
// permanent lease and ErrNotHeld when the lease already ended. In shared
// mode it does nothing.
func (l *Lease) KeepAlive(ctx context.Context) error {
	if l.shared {
		return nil
	}
	l.mu.Lock()
	l.checkLocked(time.Now())
	switch {
	case l.done:
		err := l.err
		l.mu.Unlock()
		return err
	case l.ttl <= 0:
		l.mu.Unlock()
		return fmt.Errorf("%w: %q is permanent: nothing to keep alive", ErrInvalidArgument, l.key)
	}
	l.mu.Unlock()
	l.stopKeepAlive()
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	l.mu.Lock()
	l.kaCancel, l.kaDone = cancel, done
	l.mu.Unlock()
	go l.keepAlive(kctx, done)
	return nil
}

func (l *Lease) stopKeepAlive() {
	l.mu.Lock()
	cancel, done := l.kaCancel, l.kaDone
	l.kaCancel, l.kaDone = nil, nil
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (l *Lease) keepAlive(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTimer(l.nextRenewal(false))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.opMu.Lock()
		l.mu.Lock()
		ttl, validTo, over := l.ttl, l.validTo, l.done
		l.mu.Unlock()
		if over || ttl <= 0 {
			l.opMu.Unlock()
			return
		}
		rctx, cancel := context.WithDeadline(ctx, validTo)
		err := l.renewLocked(rctx, ttl)
		cancel()
		l.opMu.Unlock()
		switch {
		case err == nil:
			t.Reset(l.nextRenewal(false))
		case errors.Is(err, ErrNotHeld), ctx.Err() != nil:
			return
		default:
			if l.Err() != nil {
				return
			}
			l.a.log.Warn("allocator: lease renewal failed", "key", l.key, "err", err)
			t.Reset(l.nextRenewal(true))
		}
	}
}

func (l *Lease) nextRenewal(failed bool) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.ttl / 3
	if failed {
		d = l.ttl / 10
	}
	if !l.validTo.IsZero() {
		d = min(d, time.Until(l.validTo)/2)
	}
	return max(d, 0)
}

// MallocLease leases the best free resource: the member of highest priority
// returned longest ago, or the one WithBind names when it is free and
// valid. It reclaims a few expired leases first (WithReclaimBudget). It
// returns an error wrapping ErrNoneAvailable when nothing is free, and
// ErrSessionLost when WithSession names a lapsed session. In shared mode
// it rotates through the pool and the Lease holds nothing.
func (a *Allocator) MallocLease(ctx context.Context, opts ...MallocOption) (*Lease, error) {
	m, err := newMallocConfig(opts)
	if err != nil {
		return nil, err
	}
	if a.isClosed() {
		return nil, ErrClosed
	}
	a.beforeMalloc(ctx)
	if a.shared {
		key, ok, err := a.mallocShared(ctx, m)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: pool %s", ErrNoneAvailable, a.keys.Tag())
		}
		return &Lease{a: a, key: key, shared: true}, nil
	}
	ls, err := a.malloc(ctx, 1, m)
	if err != nil {
		return nil, err
	}
	return ls[0], nil
}

// MallocKey is MallocLease for callers that only want the key (the Python
// redis-allocator's malloc_key): ok is false when nothing is free. The
// lease's token is dropped, so free the key with FreeKeys (or let its TTL
// run out).
func (a *Allocator) MallocKey(ctx context.Context, opts ...MallocOption) (key string, ok bool, err error) {
	l, err := a.MallocLease(ctx, opts...)
	if errors.Is(err, ErrNoneAvailable) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return l.key, true, nil
}

// MallocN leases n resources atomically: all of them or none (an error
// wrapping ErrNoneAvailable when fewer than n are free). The leases share
// one token and TTL and carry consecutive fences. WithBind does not apply.
// n must be ≥ 1; shared mode is not supported.
func (a *Allocator) MallocN(ctx context.Context, n int, opts ...MallocOption) ([]*Lease, error) {
	m, err := newMallocConfig(opts)
	if err != nil {
		return nil, err
	}
	switch {
	case n < 1:
		return nil, fmt.Errorf("%w: MallocN of %d resources", ErrInvalidArgument, n)
	case m.bind != "":
		return nil, fmt.Errorf("%w: WithBind does not apply to MallocN", ErrInvalidArgument)
	case a.shared:
		return nil, fmt.Errorf("%w: MallocN in shared mode", ErrInvalidArgument)
	case a.isClosed():
		return nil, ErrClosed
	}
	a.beforeMalloc(ctx)
	return a.malloc(ctx, n, m)
}

// sessionArg returns the session id argument of a malloc.
func (a *Allocator) sessionArg(m mallocConfig) (string, error) {
	if m.session == nil {
		return "-", nil
	}
	if m.session.a.keys != a.keys {
		return "", fmt.Errorf("%w: session of another pool", ErrInvalidArgument)
	}
	return m.session.id, nil
}

func (a *Allocator) malloc(ctx context.Context, n int, m mallocConfig) ([]*Lease, error) {
	sess, err := a.sessionArg(m)
	if err != nil {
		return nil, err
	}
	token := randomID(16)
	var extra []string
	if m.bind != "" {
		extra = []string{a.keys.Bind(m.bind)}
	}
	sent := time.Now()
	v, err := a.run(ctx, mallocScript, extra, a.budget, millis(m.ttl), token, sess, n, millis(m.bindTTL))
	if err != nil {
		if m.ttl <= 0 && unknownOutcome(err) {
			// The malloc may have taken permanent leases nobody knows of:
			// give them back (a lease with a TTL runs out by itself).
			go a.giveBackToken(context.WithoutCancel(ctx), token)
		}
		return nil, err
	}
	r, ok := v.([]any)
	if !ok || len(r) == 0 {
		return nil, fmt.Errorf("%w: malloc reply %T", script.ErrReply, v)
	}
	switch code, _ := r[0].(int64); code {
	case 0:
		return nil, fmt.Errorf("%w: pool %s", ErrNoneAvailable, a.keys.Tag())
	case -1:
		return nil, fmt.Errorf("%w: session %s", ErrSessionLost, sess)
	}
	if len(r) != 2+2*n {
		return nil, fmt.Errorf("%w: malloc reply of %d values for %d leases", script.ErrReply, len(r), n)
	}
	out := make([]*Lease, n)
	for i := range out {
		fence, err := script.Int64(r[2+2*i])
		if err != nil {
			return nil, err
		}
		key, ok := r[3+2*i].(string)
		if !ok {
			return nil, fmt.Errorf("%w: malloc key %T", script.ErrReply, r[3+2*i])
		}
		out[i] = newLease(a, key, token, fence, m.ttl, sent, m.session)
	}
	return out, nil
}

func (a *Allocator) mallocShared(ctx context.Context, m mallocConfig) (string, bool, error) {
	var extra []string
	if m.bind != "" {
		extra = []string{a.keys.Bind(m.bind)}
	}
	v, err := a.run(ctx, mallocSharedScript, extra, a.budget, millis(m.bindTTL))
	if err != nil || v == nil {
		return "", false, err
	}
	key, ok := v.(string)
	if !ok {
		return "", false, fmt.Errorf("%w: shared malloc reply %T", script.ErrReply, v)
	}
	return key, true, nil
}

// unknownOutcome reports whether a failed request may have been applied:
// it was sent (or may have been) and no reply from Redis says it failed.
func unknownOutcome(err error) bool {
	if errors.Is(err, batch.ErrNotSent) {
		return false
	}
	var rerr redis.Error
	return !errors.As(err, &rerr)
}

// giveBackToken ends the permanent leases of token, retrying with backoff
// for a while: the clean-up after a malloc whose reply was lost.
func (a *Allocator) giveBackToken(ctx context.Context, token string) {
	for d := 50 * time.Millisecond; d < time.Minute; d *= 2 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := a.runVia(cctx, a.c, freeTokenScript, nil, token)
		cancel()
		if err == nil {
			return
		}
		a.log.Warn("allocator: giving back the leases of a malloc of unknown outcome failed; retrying", "err", err)
		time.Sleep(d)
	}
	a.log.Error("allocator: could not give back the permanent leases of a malloc of unknown outcome", "token", token)
}
