package lock

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Memory is the in-memory twin of Lock (the seed's ThreadLock): the same
// Locker semantics — TTLs, reentrancy, fencing tokens, owner handles,
// release notification — inside one process, for single-process programs and
// tests. The zero value is not usable; call NewMemory.
type Memory struct {
	core
}

var _ Locker = (*Memory)(nil)

// NewMemory returns an empty in-memory lock namespace. Of the options
// WithEpsilon and WithFenceGrace apply; an invalid option panics, as it is
// a programming error.
func NewMemory(opts ...Option) *Memory {
	c, err := newConfig(DefaultSuffix, opts)
	if err != nil {
		panic(err)
	}
	return &Memory{core: core{b: newMemStore(false, c.grace), eps: c.eps}}
}

// NewMemoryPool returns an empty in-memory lock pool (the seed's
// ThreadLockPool). Of the options WithEpsilon and WithFenceGrace apply; an
// invalid option panics.
func NewMemoryPool(opts ...Option) *Pool {
	c, err := newConfig(DefaultPoolSuffix, opts)
	if err != nil {
		panic(err)
	}
	s := newMemStore(true, c.grace)
	return &Pool{core: core{b: s, eps: c.eps}, p: s}
}

// memStore keeps lock keys in a map guarded by one mutex. Expired entries,
// fencing counters and queue entries are dropped when read and by a sweep
// every sweepEvery writes.
type memStore struct {
	mu      sync.Mutex
	entries map[string]memEntry      // live (or not yet swept) keys
	fences  map[string]memFence      // fencing counter per key ("" when shared)
	marks   map[string]memFence      // grant marker per key: grant id and expiry
	shared  bool                     // one fencing counter for all keys (a pool)
	grace   time.Duration            // a counter outlives a grant's TTL by this much
	queues  map[string][]*memWaiting // calls waiting for a key, in arrival order
	pool    map[string]struct{}      // pool members
	writes  int                      // writes since the last sweep
	lines   int                      // lines made, to name them
}

type memEntry struct {
	value   string
	expires time.Time // zero: no expiry
}

// memFence is a fencing counter (the last fence issued and when the
// counter expires) or a grant marker (a grant id and its expiry).
type memFence struct {
	last    int64
	grant   string
	expires time.Time
}

// memWaiting is the queue entry of a waiting call: the twin queues calls,
// where Redis queues processes (see dispatcher); each call is a process of
// its own.
type memWaiting struct {
	l        *memLine
	ttl      time.Duration // granted TTL
	deadline time.Time
}

const sweepEvery = 1024

func newMemStore(sharedFence bool, grace time.Duration) *memStore {
	return &memStore{
		shared:  sharedFence,
		grace:   grace,
		entries: map[string]memEntry{},
		fences:  map[string]memFence{},
		marks:   map[string]memFence{},
		queues:  map[string][]*memWaiting{},
		pool:    map[string]struct{}{},
	}
}

// getLocked returns the live entry of key. Caller holds mu.
func (m *memStore) getLocked(key string, now time.Time) (memEntry, bool) {
	e, ok := m.entries[key]
	if ok && !e.expires.IsZero() && !now.Before(e.expires) {
		delete(m.entries, key)
		return memEntry{}, false
	}
	return e, ok
}

// setLocked stores key. Caller holds mu.
func (m *memStore) setLocked(key, value string, ttl time.Duration, now time.Time) {
	e := memEntry{value: value}
	if ttl > 0 {
		e.expires = now.Add(ttl.Truncate(time.Millisecond))
	}
	m.entries[key] = e
	if m.writes++; m.writes >= sweepEvery {
		m.writes = 0
		m.sweepLocked(now)
	}
}

// deleteLocked removes key. Caller holds mu.
func (m *memStore) deleteLocked(key string) { delete(m.entries, key) }

// sweepLocked drops what has expired. Caller holds mu.
func (m *memStore) sweepLocked(now time.Time) {
	for k, e := range m.entries {
		if !e.expires.IsZero() && !now.Before(e.expires) {
			delete(m.entries, k)
		}
	}
	for _, fences := range []map[string]memFence{m.fences, m.marks} {
		for k, f := range fences {
			if !now.Before(f.expires) {
				delete(fences, k)
			}
		}
	}
	for k, q := range m.queues {
		live := q[:0]
		for _, w := range q {
			if !now.After(w.deadline) {
				live = append(live, w)
			}
		}
		if len(live) == 0 {
			delete(m.queues, k)
		} else {
			m.queues[k] = live
		}
	}
}

// fenceKey returns the key of key's fencing counter.
func (m *memStore) fenceKey(key string) string {
	if m.shared {
		return ""
	}
	return key
}

// fenceLocked issues the next fence of key for a grant whose counter, if
// it starts one, lives life; as issue_fence in fence.lua does. Caller holds
// mu.
func (m *memStore) fenceLocked(key string, life time.Duration, now time.Time) int64 {
	fk := m.fenceKey(key)
	if c, ok := m.fences[fk]; ok && now.Before(c.expires) {
		c.last++
		m.fences[fk] = c
		return c.last
	}
	f := now.UnixMicro()
	m.fences[fk] = memFence{last: f, expires: now.Add(life)}
	return f
}

// grantedLocked issues the fence of a grant of ttl and keeps key's grant
// marker, as granted in acquire.lua does. Caller holds mu.
func (m *memStore) grantedLocked(key string, ttl time.Duration, fresh bool, grantID string, now time.Time) int64 {
	life := max(ttl, 0) + m.grace
	switch {
	case !fresh:
		delete(m.marks, key)
	case grantID != "":
		m.marks[key] = memFence{grant: grantID, expires: now.Add(life)}
	}
	return m.fenceLocked(key, life, now)
}

// dequeueLocked drops l's entry from key's queue. Caller holds mu.
func (m *memStore) dequeueLocked(key string, l *memLine) {
	q := m.queues[key]
	if i := slices.IndexFunc(q, func(w *memWaiting) bool { return w.l == l }); i >= 0 {
		q = slices.Delete(q, i, i+1)
	}
	if len(q) == 0 {
		delete(m.queues, key)
	} else {
		m.queues[key] = q
	}
}

func (m *memStore) storeKey(key string) string { return key }

func (m *memStore) lock(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if _, held := m.getLocked(key, now); held {
		return false, nil
	}
	m.setLocked(key, value, ttl, now)
	return true, nil
}

func (m *memStore) rlock(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if e, held := m.getLocked(key, now); held && e.value != value {
		return false, nil
	}
	m.setLocked(key, value, ttl, now)
	return true, nil
}

func (m *memStore) update(ctx context.Context, key, value string, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setLocked(key, value, ttl, time.Now())
	return nil
}

func (m *memStore) unlock(ctx context.Context, key string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, held := m.getLocked(key, time.Now())
	m.deleteLocked(key)
	return held, nil
}

func (m *memStore) exists(ctx context.Context, key string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, held := m.getLocked(key, time.Now())
	return held, nil
}

func (m *memStore) value(ctx context.Context, key string) (string, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, held := m.getLocked(key, time.Now())
	return e.value, held, nil
}

func (m *memStore) pttl(ctx context.Context, key string) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	e, held := m.getLocked(key, now)
	switch {
	case !held:
		return -2, nil
	case e.expires.IsZero():
		return -1, nil
	}
	return e.expires.Sub(now).Truncate(time.Millisecond), nil
}

func (m *memStore) cond(ctx context.Context, key string, op Op, compare, eps float64, del bool, value string, ttl time.Duration) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if e, held := m.getLocked(key, now); held {
		cur, ok := parseNumber(e.value)
		if !ok {
			return -1, nil
		}
		if !op.holds(compare, cur, eps) {
			return 0, nil
		}
	}
	if del {
		m.deleteLocked(key)
	} else {
		m.setLocked(key, value, ttl, now)
	}
	return 1, nil
}

// parseNumber reads a stored value as a number with the rule cond.lua
// applies: what Lua 5.1's tonumber accepts (C's strtod in the C locale,
// which stops at a NUL byte and allows ASCII white space around the
// number), except hexadecimal (any x or X in the value), infinities and NaN.
func parseNumber(s string) (float64, bool) {
	if strings.ContainsAny(s, "xX") {
		return 0, false
	}
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	s = strings.Trim(s, " \t\n\v\f\r")
	if !isDecimal(s) {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if (err != nil && !errors.Is(err, strconv.ErrRange)) || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true // an underflow reads as 0 or a subnormal, as with strtod
}

// isDecimal reports whether s is a decimal floating-point number as strtod
// reads it: [+-] digits [. [digits]] or [+-] . digits, then an optional
// exponent e[+-]digits.
func isDecimal(s string) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	n := digits()
	if i < len(s) && s[i] == '.' {
		i++
		n += digits()
	}
	if n == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

func (m *memStore) acquire(ctx context.Context, key string, a *attempt) (int64, time.Duration, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	e, held := m.getLocked(key, now)
	if !held || e.value == a.token || (a.from != "" && e.value == a.from) {
		m.setLocked(key, a.token, a.ttl, now)
		fresh := !held || e.value != a.token
		return m.grantedLocked(key, a.ttl, fresh, a.grant, now), 0, true, nil
	}
	if l, ok := a.line.(*memLine); ok {
		w := &memWaiting{l: l, ttl: a.ttl, deadline: now.Add(time.Duration(waitMillis(a.wait)) * time.Millisecond)}
		if w.ttl <= 0 {
			w.ttl = provisionalTTL
		}
		q := m.queues[key]
		if i := slices.IndexFunc(q, func(o *memWaiting) bool { return o.l == l }); i >= 0 {
			q[i] = w // keeps its place
		} else {
			m.queues[key] = append(q, w)
		}
	}
	if e.expires.IsZero() {
		return 0, -1, false, nil
	}
	return 0, e.expires.Sub(now).Truncate(time.Millisecond), false, nil
}

func (m *memStore) refresh(ctx context.Context, key, token string, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if e, held := m.getLocked(key, now); !held || e.value != token {
		return false, nil
	}
	m.setLocked(key, token, ttl, now)
	return true, nil
}

func (m *memStore) release(ctx context.Context, key, token string, o releaseOpts) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.releaseLocked(key, token, o.grant, time.Now()), nil
}

// releaseLocked is release.lua for the twin: it deletes key while token
// owns it, or hands it to the first call waiting in its queue. Caller holds
// mu.
func (m *memStore) releaseLocked(key, token, grantID string, now time.Time) bool {
	if e, held := m.getLocked(key, now); !held || e.value != token {
		return false
	}
	if grantID != "" {
		if f, ok := m.marks[key]; !ok || !now.Before(f.expires) || f.grant != grantID {
			return false
		}
	}
	for q := m.queues[key]; len(q) > 0; q = m.queues[key] {
		w := q[0]
		m.dequeueLocked(key, w.l)
		if now.After(w.deadline) {
			continue // stopped waiting
		}
		f := m.fenceLocked(key, w.ttl+m.grace, now)
		g := grant{token: w.l.id + ":" + strconv.FormatInt(f, 10), fence: f, ttl: w.ttl, since: now}
		m.setLocked(key, g.token, w.ttl, now)
		w.l.ch <- g // buffered, and a call gets at most one grant
		return true
	}
	m.deleteLocked(key)
	return true
}

func (m *memStore) join(ctx context.Context, key string) (line, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lines++
	return &memLine{m: m, key: key, id: "m" + strconv.Itoa(m.lines), ch: make(chan grant, 1)}, nil
}

func (m *memStore) joinable() bool { return true }

// memLine is a waiting call of the twin.
type memLine struct {
	m   *memStore
	key string
	id  string
	ch  chan grant // buffered: the grant handed to the call
}

// queued is always false: an attempt costs the twin nothing.
func (l *memLine) queued(time.Duration) bool { return false }

func (l *memLine) wait(ctx context.Context, d time.Duration) (grant, bool, error) {
	return waitOn(ctx, d, l.ch)
}

func (l *memLine) leave(context.Context, bool) {
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dequeueLocked(l.key, l)
	select {
	case g := <-l.ch: // handed over but not taken: pass it on
		m.releaseLocked(l.key, g.token, "", time.Now())
	default:
	}
}

func (m *memStore) extend(ctx context.Context, ks []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range ks {
		m.pool[k] = struct{}{}
	}
	return nil
}

func (m *memStore) shrink(ctx context.Context, ks []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range ks {
		delete(m.pool, k)
	}
	return nil
}

func (m *memStore) assign(ctx context.Context, ks []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.pool)
	for _, k := range ks {
		m.pool[k] = struct{}{}
	}
	return nil
}

func (m *memStore) clear(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.pool)
	return nil
}

func (m *memStore) members(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.pool))
	for k := range m.pool {
		out = append(out, k)
	}
	return out, nil
}

func (m *memStore) contains(ctx context.Context, key string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.pool[key]
	return ok, nil
}

func (m *memStore) size(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pool), nil
}

func (m *memStore) statuses(ctx context.Context) ([]MemberStatus, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	out := make([]MemberStatus, 0, len(m.pool))
	for k := range m.pool {
		_, held := m.getLocked(k, now)
		out = append(out, MemberStatus{Key: k, Locked: held})
	}
	return out, nil
}

func (m *memStore) health(ctx context.Context) (int, int, error) {
	st, err := m.statuses(ctx)
	if err != nil {
		return 0, 0, err
	}
	locked := 0
	for _, s := range st {
		if s.Locked {
			locked++
		}
	}
	return locked, len(st) - locked, nil
}
