package lock

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/script"
)

// grant is a key handed to a waiting Acquire by a release.
type grant struct {
	token string        // the key holds it
	fence int64         // the grant's fence
	ttl   time.Duration // the TTL the key was handed over with
	since time.Time     // the TTL started after this local (monotonic) time
}

// line is a waiting Acquire call's place among its process's waiters for
// one key (WithReleaseNotify).
type line interface {
	// queued reports whether the caller's process surely keeps its place
	// in the key's queue for d from now, so that the caller may wait for d
	// without an attempt.
	queued(d time.Duration) bool
	// wait returns a grant handed to the caller within d, false when d
	// passed first, or ctx's error. The caller owns a grant it got: it
	// takes it or gives it back.
	wait(ctx context.Context, d time.Duration) (grant, bool, error)
	// leave takes the caller out of the line. A grant handed to it that it
	// did not wait for is passed on. holding says that the caller owns the
	// key now: its release will then drop the process's entry when nobody
	// else here waits, instead of a command now.
	leave(ctx context.Context, holding bool)
}

// dispatchLinger is how long a dispatcher keeps its subscription after the
// last waiter left, so that a key contended in bursts does not subscribe
// for every burst.
const dispatchLinger = 30 * time.Second

// lineLinger is how long a dispatcher remembers a key nobody waits for
// after its entry in the key's queue surely expired: a grant still on its
// way can then be passed on.
const lineLinger = 10 * time.Second

// dispatcher hands the keys that releases grant to one Lock or Pool value
// (a "process") to its waiting Acquire calls.
//
// For each key, the process has at most one entry in the key's wait queue
// (see acquire.lua and release.lua), and its waiting calls form a local
// first-in, first-out line behind it. A release hands the key to the first
// process in the queue, which hands it to the first call in its line; the
// process keeps its entry, at the back of the queue, while it has waiters.
// Calls that join the line while the entry surely lasts send nothing, so a
// hand-off costs one round trip: the release. All calls share one
// subscription, to the value's own wake channel, made when the first one
// waits and closed dispatchLinger after the last one left; a release made
// through the same value publishes nothing and hands over locally.
//
// Lock order: mu is never held across a Redis call.
type dispatcher struct {
	c       redis.UniversalClient
	id      string // entry ids are <id>.<n>
	channel string
	epoch   time.Time // announce times travel as µs since epoch
	// passOn releases a grant that no caller takes, dropping the entry id
	// when not "".
	passOn func(ctx context.Context, sk, token, drop string)

	live atomic.Bool // the subscription is confirmed; read without mu

	mu    sync.Mutex
	ps    *redis.PubSub
	lines map[string]*waitLine // by store key
	byID  map[string]*waitLine // by entry id
	next  uint64
	users int         // callers registered in any line, or joining
	idle  *time.Timer // closes the subscription; nil while users > 0
	// subscribing is closed when a SUBSCRIBE under way completes.
	subscribing chan struct{}
	swept       time.Time // when idle lines were last forgotten
}

// waitLine is the process's state for one key. Guarded by dispatcher.mu.
//
// The process's entry in the key's queue is known only through the
// replies of its own commands: until, when the entry surely lasts; maybe,
// whether an entry may exist at all (a write, or a drop, whose outcome is
// unknown counts); stamp, the announce time of the latest write sent,
// which drops compare with so that a drop never removes an entry written
// after it was decided; dropped, when a drop was last decided, so that the
// reply of a write sent before it no longer counts.
type waitLine struct {
	sk      string
	id      string       // the process's entry id for sk
	waiters []*redisLine // the calls waiting, first in first
	until   time.Time    // the entry surely lasts until then; zero: maybe no entry
	maybe   bool         // an entry may exist
	stamp   int64        // announce time (µs since the epoch) of the latest write sent
	dropped time.Time    // when a drop was last decided
	expiry  time.Time    // the holder seen by the latest attempt expires by then; zero: no TTL
	looked  time.Time    // when the latest attempt whose reply came was sent
	gone    time.Time    // when an idle line may be forgotten
	fence   int64        // fence of the process's latest successful release of sk ...
	sent    time.Time    // ... and when that release was sent
	handed  int64        // fence of the latest grant that reached the process
}

func newDispatcher(c redis.UniversalClient, namespace string) *dispatcher {
	id := rand.Text()
	return &dispatcher{
		c:       c,
		id:      id,
		channel: keys.Wake(namespace, id),
		epoch:   time.Now(),
		lines:   map[string]*waitLine{},
		byID:    map[string]*waitLine{},
	}
}

// ownChannel returns the wake channel while the subscription is live, else
// "": a release can then hand a key to this process without publishing.
func (d *dispatcher) ownChannel() string {
	if d.live.Load() {
		return d.channel
	}
	return ""
}

// micros returns t as announced: µs since the epoch.
func (d *dispatcher) micros(t time.Time) int64 { return t.Sub(d.epoch).Microseconds() }

// join puts a caller at the end of the line for sk, subscribing first when
// nobody listens yet.
func (d *dispatcher) join(ctx context.Context, sk string) (*redisLine, error) {
	d.mu.Lock()
	d.users++ // keeps the subscription from lingering out meanwhile
	if d.idle != nil {
		d.idle.Stop()
		d.idle = nil
	}
	d.mu.Unlock()
	if err := d.subscribe(ctx); err != nil {
		d.mu.Lock()
		d.leftLocked()
		d.mu.Unlock()
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	wl := d.lines[sk]
	if wl == nil {
		if now.Sub(d.swept) > lineLinger {
			d.forgetIdleLocked(now)
			d.swept = now
		}
		d.next++
		wl = &waitLine{sk: sk, id: d.id + "." + strconv.FormatUint(d.next, 36)}
		d.lines[sk] = wl
		d.byID[wl.id] = wl
	}
	l := &redisLine{d: d, wl: wl, ch: make(chan grant, 1), kick: make(chan struct{}, 1)}
	wl.waiters = append(wl.waiters, l)
	return l, nil
}

// subscribe makes sure the subscription is live. The round trip runs
// without mu, so that releases and hand-overs go on meanwhile; concurrent
// callers wait for the one that subscribes.
func (d *dispatcher) subscribe(ctx context.Context) error {
	for {
		d.mu.Lock()
		if d.ps != nil {
			d.mu.Unlock()
			return nil
		}
		if ch := d.subscribing; ch != nil {
			d.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		ch := make(chan struct{})
		d.subscribing = ch
		d.mu.Unlock()

		ps := d.c.Subscribe(ctx, d.channel)
		_, err := ps.Receive(ctx) // the confirmation
		d.mu.Lock()
		d.subscribing = nil
		close(ch)
		if err != nil {
			_ = ps.Close()
			d.mu.Unlock()
			return err
		}
		d.ps = ps
		d.live.Store(true)
		if d.users == 0 && d.idle == nil {
			d.lingerLocked()
		}
		d.mu.Unlock()
		go d.read(ps)
		return nil
	}
}

// leftLocked counts a caller out and lets an unused subscription linger.
// Caller holds mu.
func (d *dispatcher) leftLocked() {
	d.users--
	if d.users == 0 && (d.ps != nil || d.subscribing != nil) && d.idle == nil {
		d.lingerLocked()
	}
}

// forgetIdleLocked drops lines nobody waits in whose entries are surely
// gone. Caller holds mu.
func (d *dispatcher) forgetIdleLocked(now time.Time) {
	for sk, wl := range d.lines {
		if len(wl.waiters) == 0 && !wl.maybe && now.After(wl.gone) {
			delete(d.lines, sk)
			delete(d.byID, wl.id)
		}
	}
}

// announcing records that an attempt of l is about to write the process's
// entry, and returns its announce time.
func (d *dispatcher) announcing(l *redisLine, sent time.Time) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	at := max(d.micros(sent), l.wl.stamp+1)
	l.wl.stamp, l.wl.maybe = at, true
	return at
}

// announced records that an attempt sent at sent kept the process's entry
// for wait from its arrival, and found a holder with remaining of its TTL
// left (-1: none).
func (d *dispatcher) announced(l *redisLine, sent time.Time, wait, remaining time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	wl := l.wl
	if sent.After(wl.looked) {
		wl.looked = sent
	}
	if !sent.After(wl.dropped) {
		// A drop decided since may have removed what it wrote, or landed
		// first: the entry may exist, unknown to how long.
		wl.maybe = true
		return
	}
	if u := sent.Add(wait); u.After(wl.until) {
		wl.until = u
	}
	wl.expiry = time.Time{}
	if remaining >= 0 {
		wl.expiry = sent.Add(remaining)
	}
}

// unknownWrite records that an attempt of l that may have written the
// process's entry failed: the entry may exist.
func (d *dispatcher) unknownWrite(l *redisLine) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l.wl.maybe = true
}

// dropLocked decides to drop the process's entry for wl, if it may have
// one (or always, with force: a grant to it proves it exists), and returns
// the drop for release.lua: "<entry id> <stamp>", or "". Caller holds mu.
func (wl *waitLine) dropLocked(now time.Time, force bool) string {
	if !force && !wl.maybe && wl.until.IsZero() {
		return ""
	}
	wl.until, wl.maybe, wl.dropped = time.Time{}, false, now
	wl.gone = now.Add(lineLinger)
	return wl.id + " " + strconv.FormatInt(wl.stamp, 10)
}

// dropWith returns the drop for a release of sk: the process's entry when
// nobody here waits for sk any more, else "".
func (d *dispatcher) dropWith(sk string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	wl := d.lines[sk]
	if wl == nil || len(wl.waiters) > 0 {
		return ""
	}
	return wl.dropLocked(time.Now(), false)
}

// dropFailed records that a drop of sk's entry may not have landed.
func (d *dispatcher) dropFailed(sk string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if wl := d.lines[sk]; wl != nil {
		wl.maybe = true
	}
}

// releaseFailed makes the first waiter for sk, if any, attempt at once: a
// release of unknown outcome (or one resent after it ran) may have handed
// the key to this process without telling it.
func (d *dispatcher) releaseFailed(sk string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if wl := d.lines[sk]; wl != nil && len(wl.waiters) > 0 {
		wl.waiters[0].kickLocked()
	}
}

// released records a successful release of sk, sent at sent, of a hold
// with fence fence. A grant of sk to this process with a larger fence
// happened after that release ran (nobody else held the key in between),
// so its TTL started after sent.
func (d *dispatcher) released(sk string, fence int64, sent time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if wl := d.lines[sk]; wl != nil && fence > wl.fence {
		wl.fence, wl.sent = fence, sent
	}
}

// discovered hands on a grant of fence that an attempt of l found instead
// of its message. Its TTL's start is unknown (zero since), so the caller
// that gets it confirms it with one more attempt.
func (d *dispatcher) discovered(l *redisLine, fence int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	wl := l.wl
	d.arrivedLocked(wl, grant{token: wl.id + ":" + strconv.FormatInt(fence, 10), fence: fence})
}

// read delivers the messages of ps until it is closed. A subscription
// confirmed anew follows a reconnection, during which messages may have
// been lost: the first caller of every line then makes an attempt, which
// finds a key handed to the process meanwhile.
func (d *dispatcher) read(ps *redis.PubSub) {
	for m := range ps.ChannelWithSubscriptions() {
		switch m := m.(type) {
		case *redis.Message:
			_ = d.deliverMessage(m.Payload)
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				d.kickAll()
			}
		}
	}
}

// kickAll makes the first caller of every line attempt at once.
func (d *dispatcher) kickAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, wl := range d.lines {
		if len(wl.waiters) > 0 {
			wl.waiters[0].kickLocked()
		}
	}
}

// deliverMessage delivers a grant message of release.lua: "<entry id>
// <fence> <announced µs> <TTL ms>".
func (d *dispatcher) deliverMessage(msg string) error {
	f := strings.Fields(msg)
	if len(f) != 4 {
		return fmt.Errorf("%w: grant %q", script.ErrReply, msg)
	}
	fence, err1 := strconv.ParseInt(f[1], 10, 64)
	at, err2 := strconv.ParseInt(f[2], 10, 64)
	ttl, err3 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return fmt.Errorf("%w: grant %q", script.ErrReply, msg)
	}
	d.deliver(f[0], fence, at, time.Duration(ttl)*time.Millisecond)
	return nil
}

// deliver hands the key granted to entry id, with fence and TTL ttl, to the
// first caller in the entry's line, or passes it on when nobody waits.
// announced is when the entry's data was written, in µs since the epoch.
func (d *dispatcher) deliver(id string, fence, announced int64, ttl time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	wl := d.byID[id]
	if wl == nil {
		return // unknown: the grant expires with its TTL
	}
	// The grant's TTL started after the entry's data was written, and
	// after this process's release of a hold with a smaller fence.
	g := grant{token: id + ":" + strconv.FormatInt(fence, 10), fence: fence, ttl: ttl,
		since: d.epoch.Add(time.Duration(announced) * time.Microsecond)}
	if fence > wl.fence && wl.sent.After(g.since) {
		g.since = wl.sent
	}
	d.arrivedLocked(wl, g)
}

// arrivedLocked hands on a grant that reached the process, once: its
// message and an attempt can both bring it. Caller holds mu.
func (d *dispatcher) arrivedLocked(wl *waitLine, g grant) {
	if g.fence <= wl.handed {
		return
	}
	wl.handed = g.fence
	d.handLocked(wl, g)
}

// handLocked gives g to the first caller in wl or, when nobody waits,
// passes it on and drops the process's entry. Caller holds mu.
func (d *dispatcher) handLocked(wl *waitLine, g grant) {
	if len(wl.waiters) == 0 {
		go d.passOnGrant(wl.sk, g.token, wl.dropLocked(time.Now(), true))
		return
	}
	head := wl.waiters[0]
	wl.waiters = wl.waiters[1:]
	head.out = true
	head.ch <- g // buffered, and a caller gets at most one grant
}

// passOnTimeout bounds the round trip that passes on a grant or drops an
// entry on nobody's behalf.
const passOnTimeout = time.Second

// passOnGrant releases a grant nobody takes, on a context of its own.
func (d *dispatcher) passOnGrant(sk, token, drop string) {
	ctx, cancel := context.WithTimeout(context.Background(), passOnTimeout)
	defer cancel()
	d.passOn(ctx, sk, token, drop)
}

// leave takes l out of its line; see line.leave.
func (d *dispatcher) leave(ctx context.Context, l *redisLine, holding bool) {
	d.mu.Lock()
	wl := l.wl
	if !l.out {
		for i, w := range wl.waiters {
			if w == l {
				wl.waiters = append(wl.waiters[:i], wl.waiters[i+1:]...)
				break
			}
		}
	}
	l.out = true
	var g grant
	handed := false
	select {
	case g = <-l.ch:
		handed = true
	default:
	}
	drop := ""
	switch {
	case handed && len(wl.waiters) > 0:
		d.handLocked(wl, g) // the next caller takes it
		handed = false
	case len(wl.waiters) == 0 && (handed || !holding):
		// Nobody here waits any more: drop the entry now, rather than have
		// the next release hand the key to nobody. A holder's release will
		// drop it instead.
		drop = wl.dropLocked(time.Now(), false)
	}
	d.leftLocked()
	d.mu.Unlock()
	if !handed && drop == "" {
		return
	}
	if !handed {
		g.token = "" // only drop the entry
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), passOnTimeout)
	defer cancel()
	d.passOn(pctx, wl.sk, g.token, drop)
}

// lingerLocked arms the timer that closes an unused subscription. Caller
// holds mu.
func (d *dispatcher) lingerLocked() {
	var t *time.Timer
	t = time.AfterFunc(dispatchLinger, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.idle != t || d.users > 0 {
			return // a caller came back
		}
		d.idle = nil
		// An entry the process may still have would be handed keys that
		// nobody here hears of: drop them first, and linger on.
		var drops [][2]string
		for _, wl := range d.lines {
			if len(wl.waiters) == 0 && (wl.maybe || time.Now().Before(wl.until)) {
				drops = append(drops, [2]string{wl.sk, wl.dropLocked(time.Now(), false)})
			}
		}
		if len(drops) > 0 {
			for _, dr := range drops {
				go d.passOnGrant(dr[0], "", dr[1])
			}
			d.lingerLocked()
			return
		}
		if d.ps != nil {
			d.live.Store(false)
			_ = d.ps.Close()
			d.ps = nil
		}
	})
	d.idle = t
}

// redisLine is a caller in a dispatcher's line.
type redisLine struct {
	d    *dispatcher
	wl   *waitLine
	ch   chan grant    // the grant handed to the caller
	kick chan struct{} // wakes the caller for an attempt
	out  bool          // no longer in wl.waiters; guarded by d.mu
	must bool          // the next attempt may not be skipped; guarded by d.mu
}

// kickLocked wakes l for an attempt. Caller holds d.mu.
func (l *redisLine) kickLocked() {
	l.must = true
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// queued reports whether the caller may skip its attempt and wait for d:
// an attempt of the line looked at the key less than d ago, the process's
// entry surely lasts, the holder seen last does not expire within d, and
// nothing asked for an attempt. So a key that became free without a
// hand-over (a forced Unlock, a restart) is seen within about two delays.
func (l *redisLine) queued(d time.Duration) bool {
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	wl := l.wl
	if l.must {
		l.must = false
		return false
	}
	return !l.out && time.Since(wl.looked) < d && time.Until(wl.until) > d &&
		(wl.expiry.IsZero() || time.Until(wl.expiry) > d)
}

// lasts returns how long after t the process's entry surely lasts.
func (l *redisLine) lasts(t time.Time) time.Duration {
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	return max(l.wl.until.Sub(t), 0)
}

func (l *redisLine) wait(ctx context.Context, d time.Duration) (grant, bool, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return grant{}, false, ctx.Err()
	case g := <-l.ch:
		return g, true, nil
	case <-l.kick:
		return grant{}, false, nil
	case <-t.C:
		return grant{}, false, nil
	}
}

func (l *redisLine) leave(ctx context.Context, holding bool) { l.d.leave(ctx, l, holding) }
