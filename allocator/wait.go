package allocator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redisallocator/redisallocator/internal/notify"
	"github.com/redisallocator/redisallocator/internal/script"
)

// MallocWait leases a resource like MallocLease, waiting while none is
// free until one is freed or ctx ends. Waiters are served first come,
// first served across processes: a free hands its resource straight to the
// longest-waiting live waiter, in the same script, and tells only that
// waiter (over the allocator's one pub/sub subscription), so a free with
// nobody waiting costs nothing extra and many waiters in one process share
// one connection. While it waits, MallocWait renews its place every third
// of a 30-second entry life, which also finds a hand-off whose message was
// lost. When ctx ends, a hand-off that raced with it is given to the next
// waiter.
//
// MallocWait needs exclusive mode; WithBind does not apply (bind after,
// with UpdateSoftBind).
func (a *Allocator) MallocWait(ctx context.Context, opts ...MallocOption) (*Lease, error) {
	m, err := newMallocConfig(opts)
	if err != nil {
		return nil, err
	}
	switch {
	case a.shared:
		return nil, fmt.Errorf("%w: MallocWait in shared mode", ErrInvalidArgument)
	case m.bind != "":
		return nil, fmt.Errorf("%w: WithBind does not apply to MallocWait", ErrInvalidArgument)
	}
	sess, err := a.sessionArg(m)
	if err != nil {
		return nil, err
	}
	if err := a.wait.ensure(ctx); err != nil {
		return nil, err
	}
	a.beforeMalloc(ctx)
	w := &waiter{a: a, id: randomID(12), token: randomID(16), sess: sess, session: m.session, ttl: m.ttl}
	ch := a.wait.register(w.id)
	defer a.wait.unregister(w.id)
	for {
		l, err := w.turnAndWait(ctx, ch)
		if l != nil || err != nil {
			return l, err
		}
	}
}

// waiter is one MallocWait call.
type waiter struct {
	a       *Allocator
	id      string
	token   string
	sess    string   // session id or "-"
	session *Session // or nil
	ttl     time.Duration
}

// grantMsg is a hand-off announced on the wake channel.
type grantMsg struct {
	fence int64
	key   string
	at    time.Time // when it arrived
}

// turnAndWait runs one turn and, while queued, waits for a hand-off, a
// kick or the time to renew the entry. It returns (nil, nil) to run
// another turn.
func (w *waiter) turnAndWait(ctx context.Context, ch <-chan grantMsg) (*Lease, error) {
	h := w.a.wait
	kick := h.kicked()
	sent := time.Now()
	v, err := w.a.run(ctx, waitScript, nil, w.a.budget, millis(w.ttl), w.token, w.sess, w.id, h.entryTTL.Milliseconds(), h.channel)
	if err != nil {
		if ended(ctx) || !unknownOutcome(err) {
			// A reply from Redis that the turn failed, such as a script
			// error, would fail again.
			return nil, w.leave(ctx, err)
		}
		// The outcome is unknown: the turn may have joined the queue.
		// Retry after a pause; a hand-off meanwhile still arrives on ch.
		w.a.log.Warn("allocator: MallocWait turn failed", "err", err)
		select {
		case g := <-ch:
			return w.handOff(ctx, g)
		case <-time.After(100 * time.Millisecond):
			return nil, nil
		case <-ctx.Done():
			return nil, w.leave(ctx, ctx.Err())
		case <-h.done():
			return nil, w.leave(ctx, ErrClosed)
		}
	}
	r, ok := v.([]any)
	if !ok || len(r) == 0 {
		return nil, fmt.Errorf("%w: wait reply %T", script.ErrReply, v)
	}
	switch code, _ := r[0].(int64); code {
	case -1:
		return nil, fmt.Errorf("%w: session %s", ErrSessionLost, w.sess)
	case -2:
		// Our own token is cancelled: only leave does that, and only when
		// the call ends, so this cannot happen while we wait.
		return nil, fmt.Errorf("%w: wait turn after the waiter left", script.ErrReply)
	case 1:
		if len(r) != 4 {
			return nil, fmt.Errorf("%w: wait reply of %d values", script.ErrReply, len(r))
		}
		ns, err := script.Ints([]any{r[1], r[3]}, 2)
		if err != nil {
			return nil, err
		}
		key, ok := r[2].(string)
		if !ok {
			return nil, fmt.Errorf("%w: wait key %T", script.ErrReply, r[2])
		}
		if ns[1] == 0 {
			// Taken in this turn, with the TTL asked for.
			return newLease(w.a, key, w.token, ns[0], w.ttl, sent, w.session), nil
		}
		return w.confirm(ctx, key, ns[0])
	}
	t := time.NewTimer(h.entryTTL / 3)
	defer t.Stop()
	var sessionDone <-chan struct{}
	if w.session != nil {
		sessionDone = w.session.Done()
	}
	select {
	case g := <-ch:
		return w.handOff(ctx, g)
	case <-kick:
		return nil, nil
	case <-t.C:
		return nil, nil
	case <-ctx.Done():
		return nil, w.leave(ctx, ctx.Err())
	case <-h.done():
		return nil, w.leave(ctx, ErrClosed)
	case <-sessionDone:
		return nil, w.leave(ctx, w.session.Err())
	}
}

// handOff turns an announced hand-off into a lease.
func (w *waiter) handOff(ctx context.Context, g grantMsg) (*Lease, error) {
	return w.confirm(ctx, g.key, g.fence)
}

// confirm renews a hand-off (provisional, see grant_to) to the TTL the
// waiter asked for, which also measures its validity from a request of the
// waiter's own rather than from a message of unknown delay. It returns
// (nil, nil) when the hand-off ended meanwhile: the waiter waits again.
func (w *waiter) confirm(ctx context.Context, key string, fence int64) (*Lease, error) {
	l := newLease(w.a, key, w.token, fence, 0, time.Time{}, w.session)
	// Confirm even if ctx ended meanwhile: the resource is ours until the
	// confirmation says otherwise, and must not stay provisional.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := l.Renew(cctx, w.ttl)
	switch {
	case err == nil:
		return l, nil
	case errors.Is(err, ErrNotHeld):
		return nil, nil
	}
	// Unknown outcome: give the hand-off back rather than keep a lease
	// whose TTL is unknown (the renewal may have made it permanent). leave
	// finds it by the waiter's id and token, and retries in the background.
	return nil, w.leave(ctx, err)
}

// leave takes the waiter out of the queue and gives back a hand-off that
// raced with its end, then returns cause. A failed leave is retried in the
// background: until it succeeds, the entry may still receive a hand-off.
func (w *waiter) leave(ctx context.Context, cause error) error {
	if errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded) {
		cause = fmt.Errorf("allocator: MallocWait: %w", cause)
	}
	bctx := context.WithoutCancel(ctx)
	cctx, cancel := context.WithTimeout(bctx, 2*time.Second)
	_, err := w.a.runVia(cctx, w.a.c, leaveScript, nil, w.id, w.token)
	cancel()
	if err != nil {
		w.a.log.Warn("allocator: leaving the wait queue failed; retrying in the background", "err", err)
		go w.leaveLater(bctx)
	}
	return cause
}

// leaveLater retries leave with backoff until it succeeds, for up to
// leaveRetryFor: a lease the waiter took (its turn's reply, or its
// confirmation's, lost) may be permanent.
func (w *waiter) leaveLater(ctx context.Context) {
	deadline := time.Now().Add(leaveRetryFor)
	for d := 100 * time.Millisecond; time.Now().Before(deadline); d = min(2*d, 10*time.Second) {
		time.Sleep(d)
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := w.a.runVia(cctx, w.a.c, leaveScript, nil, w.id, w.token)
		cancel()
		if err == nil {
			return
		}
	}
}

// leaveRetryFor bounds the background retries of leave.
const leaveRetryFor = 10 * time.Minute

func ended(ctx context.Context) bool { return ctx.Err() != nil }

// waitHub is an Allocator's one subscription to its wake channel: it
// delivers hand-offs to the waiters of this value and kicks them to run a
// turn after a reconnection, when messages may have been lost.
type waitHub struct {
	a        *Allocator
	entryTTL time.Duration
	channel  string
	sub      *notify.Sub

	mu      sync.Mutex
	waiters map[string]chan grantMsg
}

func newWaitHub(a *Allocator, entryTTL time.Duration) *waitHub {
	h := &waitHub{a: a, entryTTL: entryTTL, channel: a.keys.Wake(a.id), waiters: map[string]chan grantMsg{}}
	h.sub = notify.New(a.c, h.channel, h.deliver, ErrClosed, "allocator: MallocWait")
	return h
}

// ensure subscribes on first use and waits for the confirmation, so that
// no hand-off announced after the first turn is missed.
func (h *waitHub) ensure(ctx context.Context) error { return h.sub.Ensure(ctx) }

// done is closed when the allocator closes.
func (h *waitHub) done() <-chan struct{} { return h.sub.Done() }

// kicked is closed at the next resubscription.
func (h *waitHub) kicked() <-chan struct{} { return h.sub.Kicked() }

func (h *waitHub) close() { h.sub.Close() }

// deliver routes "<waiter id> <fence> <deadline> <resource>" to its waiter.
// A hand-off to a waiter that has left is ignored: it left the queue
// first, so the grant was made before and leave gave it back.
func (h *waitHub) deliver(payload string) {
	parts := strings.SplitN(payload, " ", 4)
	if len(parts) != 4 {
		return
	}
	fence, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return
	}
	g := grantMsg{fence: fence, key: parts[3], at: time.Now()}
	h.mu.Lock()
	ch := h.waiters[parts[0]]
	h.mu.Unlock()
	if ch != nil {
		select {
		case ch <- g:
		default:
		}
	}
}

func (h *waitHub) register(id string) chan grantMsg {
	ch := make(chan grantMsg, 1)
	h.mu.Lock()
	h.waiters[id] = ch
	h.mu.Unlock()
	return ch
}

func (h *waitHub) unregister(id string) {
	h.mu.Lock()
	delete(h.waiters, id)
	h.mu.Unlock()
}
