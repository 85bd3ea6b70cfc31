package allocator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/lock"
)

// DefaultRefreshInterval is the pool refresher's interval when
// Policy.RefreshInterval is 0 (the Python redis-allocator's default
// update_interval of 300 s).
const DefaultRefreshInterval = 5 * time.Minute

// refreshLockKey is the key of the refresh lock, in the lock namespace
// <prefix>|<suffix>-refresh.
const refreshLockKey = "update"

// ErrNoUpdater is returned by Refresh, RefreshIfDue and StartRefresher
// when the allocator's policy has no Updater (or it has no policy).
var ErrNoUpdater = errors.New("allocator: no updater in the policy")

// Policy is the allocation policy of an Allocator (WithPolicy), the Python
// redis-allocator's DefaultRedisAllocatorPolicy: housekeeping before each
// malloc, a pool refresher that keeps the membership in step with an outside
// source, and the auto-close of objects. The zero value does nothing.
type Policy struct {
	// GCCount makes every malloc (MallocLease, MallocN, MallocWait, Malloc)
	// run GC(ctx, GCCount) first, on top of the reclaim budget of the
	// malloc itself (WithReclaimBudget). A failed GC is logged and never
	// fails the malloc. 0, the default, runs none; it must be ≥ 0.
	GCCount int

	// Updater, when set, refreshes the pool's membership: with one source
	// the pool is Assigned exactly what it returns; with several, the keys
	// of each source are Extended (set MemberTTL, so that keys no source
	// lists any longer expire). A source that returns no keys changes
	// nothing (Clear empties a pool). Keys that are empty or longer than
	// 1 KiB are dropped with a warning.
	//
	// A malloc starts a refresh in the background, without waiting for it,
	// when RefreshInterval has passed since this Allocator last looked;
	// at most one refresh runs per Allocator. Across all processes, the
	// pool is refreshed at most once per RefreshInterval: a refresh takes
	// a lock in Redis that expires after the interval. A failed refresh
	// (an Updater error or panic, or a Redis error) is logged, releases
	// the lock and is retried at the next interval; malloc never sees it.
	// See also Refresh, RefreshIfDue and StartRefresher.
	Updater Updater

	// RefreshInterval is the least time between two refreshes; 0 means
	// DefaultRefreshInterval. It also bounds each background refresh
	// (after it, the lock has expired and another process may start one).
	// It must be 0 or at least a millisecond. The refresh lock is the key
	// <prefix>|<suffix>-refresh:update of the lock package.
	RefreshInterval time.Duration

	// Shuffle puts the keys of each refresh in random order before adding
	// them, so that new members are allocated in random order.
	Shuffle bool

	// MemberTTL is the membership TTL of the keys a refresh adds or keeps
	// (WithMemberTTL); ≤ 0, the default, means none.
	MemberTTL time.Duration

	// AutoClose makes Malloc release the live Allocation that this
	// Allocator made for an object of the same Name before it allocates
	// for the new one (the seed closes the previous object of the same
	// unique id), so that one name holds one resource per process.
	AutoClose bool
}

// Updater fetches the keys that should make up the pool, from one or
// several sources (the seed's RedisAllocatorUpdater and its params).
// Fetch may be called from a background goroutine; it should return when
// ctx ends (a refresh ends within its interval): one that does not is
// abandoned, and the refresh fails.
type Updater interface {
	// Sources returns the number of sources, at least 1.
	Sources() int
	// Fetch returns the keys of source i, 0 ≤ i < Sources().
	Fetch(ctx context.Context, i int) ([]string, error)
}

// UpdaterFunc is an Updater of one source: the pool is Assigned its keys.
type UpdaterFunc func(ctx context.Context) ([]string, error)

// Sources returns 1.
func (f UpdaterFunc) Sources() int { return 1 }

// Fetch calls f.
func (f UpdaterFunc) Fetch(ctx context.Context, _ int) ([]string, error) { return f(ctx) }

// UpdaterFuncs is an Updater of several sources, one function each: the
// pool is Extended with the keys of each.
type UpdaterFuncs []UpdaterFunc

// Sources returns the number of functions.
func (fs UpdaterFuncs) Sources() int { return len(fs) }

// Fetch calls function i.
func (fs UpdaterFuncs) Fetch(ctx context.Context, i int) ([]string, error) { return fs[i](ctx) }

// policyState is the run-time state of an Allocator's Policy.
type policyState struct {
	a        *Allocator
	p        Policy
	interval time.Duration
	lk       *lock.Lock // the refresh lock's namespace; nil without Updater

	next atomic.Int64 // unix ns before which malloc does not look at the refresher
	busy atomic.Bool  // a background refresh is in flight

	// mu guards closed and quit, and orders wg.Add before Close's wg.Wait.
	mu     sync.Mutex
	closed bool
	quit   chan struct{} // closed by Close: background refreshes stop
	wg     sync.WaitGroup

	// objMu guards objects: the live Allocations by object Name, for
	// AutoClose.
	objMu   sync.Mutex
	objects map[string]*Allocation
}

func newPolicyState(a *Allocator, p Policy) (*policyState, error) {
	switch {
	case p.GCCount < 0:
		return nil, fmt.Errorf("%w: negative GCCount %d", ErrInvalidArgument, p.GCCount)
	case p.RefreshInterval < 0 || (p.RefreshInterval > 0 && p.RefreshInterval < time.Millisecond):
		return nil, fmt.Errorf("%w: refresh interval %v", ErrInvalidArgument, p.RefreshInterval)
	}
	ps := &policyState{a: a, p: p, interval: p.RefreshInterval, quit: make(chan struct{}), objects: map[string]*Allocation{}}
	if ps.interval == 0 {
		ps.interval = DefaultRefreshInterval
	}
	if p.Updater != nil {
		if n := p.Updater.Sources(); n < 1 {
			return nil, fmt.Errorf("%w: updater with %d sources", ErrInvalidArgument, n)
		}
		lk, err := lock.New(a.c, a.prefix, lock.WithSuffix(a.suffix+"-refresh"), lock.WithBatching(0))
		if err != nil {
			return nil, fmt.Errorf("%w: refresh lock: %w", ErrInvalidArgument, err)
		}
		ps.lk = lk
	}
	a.onClose(ps.close)
	return ps, nil
}

// close stops the background refresh and waits for it.
func (ps *policyState) close() {
	ps.mu.Lock()
	if !ps.closed {
		ps.closed = true
		close(ps.quit)
	}
	ps.mu.Unlock()
	ps.wg.Wait()
}

// beforeMalloc runs the policy's part of every malloc: GC, and a look at
// the refresher. Without a policy it does nothing.
func (a *Allocator) beforeMalloc(ctx context.Context) {
	ps := a.policy
	if ps == nil {
		return
	}
	if ps.p.GCCount > 0 {
		if _, err := a.GC(ctx, ps.p.GCCount); err != nil {
			a.log.Warn("allocator: GC before malloc failed", "err", err)
		}
	}
	if ps.lk != nil {
		ps.maybeRefresh(ctx)
	}
}

// maybeRefresh starts a background refresh when the local next-check time
// has passed and none is in flight. It costs two atomic loads otherwise.
func (ps *policyState) maybeRefresh(ctx context.Context) {
	now := time.Now()
	if now.UnixNano() < ps.next.Load() || ps.busy.Load() || !ps.busy.CompareAndSwap(false, true) {
		return
	}
	ps.mu.Lock()
	if ps.closed {
		ps.mu.Unlock()
		ps.busy.Store(false)
		return
	}
	ps.wg.Add(1)
	ps.mu.Unlock()
	ps.next.Store(now.Add(ps.interval).UnixNano())
	go func() {
		defer ps.wg.Done()
		defer ps.busy.Store(false)
		rctx, cancel := ps.detach(ctx)
		defer cancel()
		if _, err := ps.refreshIfDue(rctx); err != nil {
			ps.a.log.Warn("allocator: pool refresh failed; retrying at the next interval", "err", err)
		}
	}()
}

// detach returns a context with ctx's values but not its cancellation,
// ending after the refresh interval or when the allocator closes.
func (ps *policyState) detach(ctx context.Context) (context.Context, context.CancelFunc) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ps.interval)
	go func() {
		select {
		case <-ps.quit:
			cancel()
		case <-rctx.Done():
		}
	}()
	return rctx, cancel
}

// refresher returns the policy state when it has an Updater.
func (a *Allocator) refresher() (*policyState, error) {
	if a.policy == nil || a.policy.lk == nil {
		return nil, ErrNoUpdater
	}
	return a.policy, nil
}

// RefreshIfDue refreshes the pool from the policy's Updater, now, unless
// some process did within the refresh interval: it takes the refresh lock
// (which expires after the interval) and reports whether it did. A failed
// refresh releases the lock, so any process can retry. It returns
// ErrNoUpdater without an Updater.
func (a *Allocator) RefreshIfDue(ctx context.Context) (bool, error) {
	ps, err := a.refresher()
	if err != nil {
		return false, err
	}
	return ps.refreshIfDue(ctx)
}

func (ps *policyState) refreshIfDue(ctx context.Context) (bool, error) {
	h, err := ps.lk.TryAcquire(ctx, refreshLockKey, ps.interval)
	if errors.Is(err, lock.ErrNotObtained) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("allocator: refresh lock: %w", err)
	}
	// The lock expires an interval after the server took it, so the next
	// local look is due an interval from now.
	ps.next.Store(time.Now().Add(ps.interval).UnixNano())
	if err := ps.apply(ctx); err != nil {
		ps.releaseLock(ctx, h.Release)
		return true, err
	}
	return true, nil
}

// releaseLock releases the refresh lock after a failed refresh, so any
// process can retry. When ctx has ended (Close, Stop), it does so in the
// background, so shutting down never waits for Redis.
func (ps *policyState) releaseLock(ctx context.Context, release func(context.Context) error) {
	do := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if rerr := release(rctx); rerr != nil && !errors.Is(rerr, lock.ErrNotHeld) {
			ps.a.log.Warn("allocator: releasing the refresh lock failed; it expires by itself", "err", rerr)
		}
	}
	if ctx.Err() != nil {
		go do()
		return
	}
	do()
}

// Refresh refreshes the pool from the policy's Updater now, whenever the
// last refresh was: it takes the refresh lock over (so that the
// refreshes malloc starts wait a full interval after it) and releases it
// when the refresh fails. It returns the Updater's or Redis's error, and
// ErrNoUpdater without an Updater.
func (a *Allocator) Refresh(ctx context.Context) error {
	ps, err := a.refresher()
	if err != nil {
		return err
	}
	token := randomID(16)
	if err := ps.lk.Update(ctx, refreshLockKey, token, ps.interval); err != nil {
		return fmt.Errorf("allocator: refresh lock: %w", err)
	}
	ps.next.Store(time.Now().Add(ps.interval).UnixNano())
	if err := ps.apply(ctx); err != nil {
		ps.releaseLock(ctx, func(ctx context.Context) error { return ps.lk.ReleaseToken(ctx, refreshLockKey, token) })
		return err
	}
	return nil
}

// StartRefresher runs RefreshIfDue now and then every refresh interval, in
// the background, until ctx ends, Stop or Close, so the pool is refreshed
// even while nobody mallocs. Errors are logged. It returns ErrNoUpdater
// without an Updater and ErrClosed after Close.
func (a *Allocator) StartRefresher(ctx context.Context) (*Background, error) {
	ps, err := a.refresher()
	if err != nil {
		return nil, err
	}
	return a.startBackground(ctx, func(ctx context.Context) {
		every(ctx, ps.interval, func(ctx context.Context) {
			// Each pass ends within its interval, as a malloc's does: a
			// Fetch that hangs must not stop the refresher.
			pctx, cancel := context.WithTimeout(ctx, ps.interval)
			defer cancel()
			if _, err := ps.refreshIfDue(pctx); err != nil && ctx.Err() == nil {
				a.log.Warn("allocator: pool refresh failed; retrying at the next interval", "err", err)
			}
		})
	})
}

// apply fetches every source and updates the pool.
func (ps *policyState) apply(ctx context.Context) error {
	up := ps.p.Updater
	n := up.Sources()
	if n < 1 {
		return fmt.Errorf("%w: updater with %d sources", ErrInvalidArgument, n)
	}
	var opts []ExtendOption
	if ps.p.MemberTTL > 0 {
		opts = append(opts, WithMemberTTL(ps.p.MemberTTL))
	}
	var errs []error
	for i := range n {
		ks, err := ps.fetch(ctx, up, i)
		if err != nil {
			errs = append(errs, fmt.Errorf("allocator: updater source %d: %w", i, err))
			continue
		}
		if len(ks) == 0 {
			ps.a.log.Warn("allocator: updater source returned no keys; the pool is left as it is", "source", i)
			continue
		}
		if n == 1 {
			added, removed, err := ps.a.Assign(ctx, ks, opts...)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			ps.a.log.Info("allocator: pool refreshed", "keys", len(ks), "added", added, "removed", removed)
			continue
		}
		added, err := ps.a.Extend(ctx, ks, opts...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ps.a.log.Info("allocator: pool refreshed", "source", i, "keys", len(ks), "added", added)
	}
	return errors.Join(errs...)
}

// fetchGrace is how long a refresh whose ctx ended waits for its Fetch to
// return before it abandons it.
const fetchGrace = 100 * time.Millisecond

// fetch calls the Updater, turning a panic into an error, and returns its
// valid keys, deduplicated and shuffled if the policy says so. A Fetch
// that outlives ctx by fetchGrace is abandoned: its goroutine is left to
// return by itself.
func (ps *policyState) fetch(ctx context.Context, up Updater, i int) ([]string, error) {
	type result struct {
		ks  []string
		err error
	}
	res := make(chan result, 1) // buffered: an abandoned Fetch does not block
	go func() {
		defer func() {
			if r := recover(); r != nil {
				res <- result{err: fmt.Errorf("updater panicked: %v", r)}
			}
		}()
		ks, err := up.Fetch(ctx, i)
		res <- result{ks, err}
	}()
	var raw []string
	select {
	case r := <-res:
		if r.err != nil {
			return nil, r.err
		}
		raw = r.ks
	case <-ctx.Done():
		// Give a Fetch that heeds its ctx a moment to return, so that a
		// next refresh does not overlap it; abandon one that does not.
		t := time.NewTimer(fetchGrace)
		defer t.Stop()
		select {
		case <-res:
		case <-t.C:
		}
		return nil, fmt.Errorf("updater abandoned: %w", ctx.Err())
	}
	seen := make(map[string]bool, len(raw))
	ks := make([]string, 0, len(raw))
	for _, k := range raw {
		if p := keys.Problem(k); p != "" {
			ps.a.log.Warn("allocator: updater returned an invalid key; dropped", "source", i, "problem", p)
			continue
		}
		if !seen[k] {
			seen[k] = true
			ks = append(ks, k)
		}
	}
	if ps.p.Shuffle {
		rand.Shuffle(len(ks), func(i, j int) { ks[i], ks[j] = ks[j], ks[i] })
	}
	return ks, nil
}
