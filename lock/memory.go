package lock

import (
	"context"
	"math"
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

// NewMemory returns an empty in-memory lock namespace. Of the options only
// WithEpsilon applies; an invalid option panics, as it is a programming
// error.
func NewMemory(opts ...Option) *Memory {
	c, err := newConfig(DefaultSuffix, opts)
	if err != nil {
		panic(err)
	}
	return &Memory{core: core{b: newMemStore(false), eps: c.eps}}
}

// NewMemoryPool returns an empty in-memory lock pool (the seed's
// ThreadLockPool). Of the options only WithEpsilon applies; an invalid
// option panics.
func NewMemoryPool(opts ...Option) *Pool {
	c, err := newConfig(DefaultPoolSuffix, opts)
	if err != nil {
		panic(err)
	}
	s := newMemStore(true)
	return &Pool{core: core{b: s, eps: c.eps}, p: s}
}

// memStore keeps lock keys in a map guarded by one mutex. Expired entries
// are dropped when read and by a sweep every sweepEvery writes.
type memStore struct {
	mu      sync.Mutex
	entries map[string]memEntry    // live (or not yet swept) keys
	fences  map[string]int64       // fencing counter per key ("" when shared)
	shared  bool                   // one fencing counter for all keys (a pool)
	waiters map[string]*memWaiters // subscribers to a key's releases
	pool    map[string]struct{}    // pool members
	writes  int                    // writes since the last sweep
}

type memEntry struct {
	value   string
	expires time.Time // zero: no expiry
}

const sweepEvery = 1024

func newMemStore(sharedFence bool) *memStore {
	return &memStore{
		shared:  sharedFence,
		entries: map[string]memEntry{},
		fences:  map[string]int64{},
		waiters: map[string]*memWaiters{},
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
		for k, e := range m.entries {
			if !e.expires.IsZero() && !now.Before(e.expires) {
				delete(m.entries, k)
			}
		}
	}
}

// memWaiters are the subscribers to the releases of one key: ch is closed
// at the next release and then replaced; n counts the subscribers, and the
// entry is dropped when the last one leaves.
type memWaiters struct {
	ch chan struct{}
	n  int
}

// deleteLocked removes key and, when notify is set, wakes its subscribers.
// Caller holds mu.
func (m *memStore) deleteLocked(key string, notify bool) {
	delete(m.entries, key)
	if w, ok := m.waiters[key]; ok && notify {
		close(w.ch)
		m.waiters[key] = &memWaiters{ch: make(chan struct{}), n: w.n}
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
	m.deleteLocked(key, false)
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
		m.deleteLocked(key, false)
	} else {
		m.setLocked(key, value, ttl, now)
	}
	return 1, nil
}

// parseNumber reads a stored value as a number with the rule cond.lua
// applies: a decimal number, optionally surrounded by spaces; hexadecimal,
// infinities and NaN are not numbers.
func parseNumber(s string) (float64, bool) {
	if strings.ContainsAny(s, "xX") {
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

func (m *memStore) acquire(ctx context.Context, key, token string, ttl, _ time.Duration) (int64, time.Duration, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if e, held := m.getLocked(key, now); held && e.value != token {
		if e.expires.IsZero() {
			return 0, -1, false, nil
		}
		return 0, e.expires.Sub(now).Truncate(time.Millisecond), false, nil
	}
	m.setLocked(key, token, ttl, now)
	fk := key
	if m.shared {
		fk = ""
	}
	m.fences[fk]++
	return m.fences[fk], 0, true, nil
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

func (m *memStore) release(ctx context.Context, key, token string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, held := m.getLocked(key, time.Now()); !held || e.value != token {
		return false, nil
	}
	m.deleteLocked(key, true)
	return true, nil
}

func (m *memStore) subscribe(ctx context.Context, key string) (waiter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.waiters[key]
	if !ok {
		w = &memWaiters{ch: make(chan struct{})}
		m.waiters[key] = w
	}
	w.n++
	return &memWaiter{m: m, key: key, ch: w.ch}, nil
}

// memWaiter waits for the releases of one key. After each wake-up it takes
// the channel of the next release before the caller retries, so no release
// between two attempts is missed.
type memWaiter struct {
	m   *memStore
	key string
	ch  <-chan struct{}
}

func (w *memWaiter) wait(ctx context.Context, d time.Duration) error {
	woken, err := waitOn(ctx, d, w.ch)
	if woken {
		w.m.mu.Lock()
		w.ch = w.m.waiters[w.key].ch
		w.m.mu.Unlock()
	}
	return err
}

func (w *memWaiter) close() error {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	if e := w.m.waiters[w.key]; e != nil {
		if e.n--; e.n <= 0 {
			delete(w.m.waiters, w.key)
		}
	}
	return nil
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
	st, _ := m.statuses(ctx)
	locked := 0
	for _, s := range st {
		if s.Locked {
			locked++
		}
	}
	return locked, len(st) - locked, nil
}
