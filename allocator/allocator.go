package allocator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/batch"
	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/script"
)

// Allocator is a pool of named resources on Redis that clients lease and
// return. Every structure of the pool lives under one hash tag, so the pool
// works on Redis Cluster (one pool per slot; different pools spread over
// the shards). Every malloc, free and renew is one round trip.
//
// An Allocator is safe for concurrent use. Close it to stop its background
// work (waiter subscription, refresher, health checker).
type Allocator struct {
	c      redis.UniversalClient
	p      script.Processor // c, or a batcher in front of it
	keys   keys.Pool
	prefix string
	suffix string
	shared bool
	budget int
	log    *slog.Logger
	clock  func() time.Time
	policy *policyState
	id     string // this value's id: names its wake channel
	wait   *waitHub

	mu     sync.Mutex
	closed bool
	stop   []func() // background work to stop on Close
}

// New returns the allocator pool prefix (suffix DefaultSuffix unless
// WithSuffix is given) on client, which may be a plain, failover or cluster
// client. It returns ErrInvalidKey for an empty or oversized prefix or a
// prefix or suffix holding a brace.
func New(client redis.UniversalClient, prefix string, opts ...Option) (*Allocator, error) {
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if p := keys.NamespaceProblem(prefix, c.suffix, true); p != "" {
		return nil, fmt.Errorf("%w: %s", ErrInvalidKey, p)
	}
	if client == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalidArgument)
	}
	a := &Allocator{
		c: client, p: client, keys: keys.NewPool(prefix, c.suffix), prefix: prefix, suffix: c.suffix,
		shared: c.shared, budget: c.budget, log: c.logger, clock: c.clock, id: randomID(12),
	}
	if c.batch > 0 {
		b, err := batch.New(client, c.batch)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
		a.p = b
	}
	a.wait = newWaitHub(a, c.waitTTL)
	if c.policy != nil {
		ps, err := newPolicyState(a, *c.policy)
		if err != nil {
			return nil, err
		}
		a.policy = ps
	}
	return a, nil
}

// Prefix returns the pool's prefix and Suffix its suffix.
func (a *Allocator) Prefix() string { return a.prefix }

// Suffix returns the pool's suffix.
func (a *Allocator) Suffix() string { return a.suffix }

// Shared reports whether the allocator is in shared mode (WithShared).
func (a *Allocator) Shared() bool { return a.shared }

// Close stops the allocator's background work: the waiter subscription
// (pending MallocWait calls fail with ErrClosed), the refresher and the
// health checker it started. Afterwards the malloc methods and NewSession
// return ErrClosed; leases stay as they are in Redis and can still be
// renewed and freed, and the pool can still be managed. Close is
// idempotent.
func (a *Allocator) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	stop := a.stop
	a.stop = nil
	a.mu.Unlock()
	for i := len(stop) - 1; i >= 0; i-- {
		stop[i]()
	}
	a.wait.close()
	return nil
}

func (a *Allocator) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

// onClose registers background work to stop on Close; it reports false
// when the allocator is already closed.
func (a *Allocator) onClose(f func()) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	a.stop = append(a.stop, f)
	return true
}

// maxBudget caps housekeeping budgets: Lua hands larger numbers to Redis
// commands in exponent notation, which they reject.
const maxBudget = 1 << 30

// now is the scripts' clock argument: "" (the server's clock) unless a
// test clock is set.
func (a *Allocator) now() string {
	if a.clock == nil {
		return ""
	}
	return strconv.FormatInt(a.clock().UnixMilli(), 10)
}

// run executes a pool script with the pool's keys (then extra) and the
// clock argument before args.
func (a *Allocator) run(ctx context.Context, s *script.Script, extra []string, args ...any) (any, error) {
	return a.runVia(ctx, a.p, s, extra, args...)
}

func (a *Allocator) runVia(ctx context.Context, p script.Processor, s *script.Script, extra []string, args ...any) (any, error) {
	argv := make([]any, 0, len(args)+1)
	argv = append(argv, a.now())
	argv = append(argv, args...)
	v, err := s.Run(ctx, p, a.keys.Scripts(extra...), argv...).Result()
	if err == redis.Nil {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("allocator: %s: %w", s.Name(), err)
	}
	return v, nil
}

func (a *Allocator) runInt(ctx context.Context, s *script.Script, extra []string, args ...any) (int64, error) {
	v, err := a.run(ctx, s, extra, args...)
	if err != nil {
		return 0, err
	}
	return script.Int64(v)
}

// Extend adds keys to the pool. A new member starts clean (free, with the
// priority of WithPriority, no quarantine, no binding); an existing member
// only has its membership expiry refreshed (WithMemberTTL; none by
// default). A key that was removed while leased comes back as leased and
// becomes free when that lease ends. It returns how many keys were new.
func (a *Allocator) Extend(ctx context.Context, ks []string, opts ...ExtendOption) (int, error) {
	e, err := newExtendConfig(opts)
	if err != nil {
		return 0, err
	}
	if err := checkKeys(ks); err != nil {
		return 0, err
	}
	if len(ks) == 0 {
		return 0, nil
	}
	added, _, err := a.extend(ctx, "extend", ks, e)
	return added, err
}

// Assign makes keys the pool's exact membership: members not listed are
// removed (their leases live on), listed members stay with their membership
// expiry refreshed, new ones are added as by Extend. It returns how many
// were added and removed.
func (a *Allocator) Assign(ctx context.Context, ks []string, opts ...ExtendOption) (added, removed int, err error) {
	e, err := newExtendConfig(opts)
	if err != nil {
		return 0, 0, err
	}
	if err := checkKeys(ks); err != nil {
		return 0, 0, err
	}
	return a.extend(ctx, "assign", ks, e)
}

func (a *Allocator) extend(ctx context.Context, mode string, ks []string, e extendConfig) (int, int, error) {
	args := make([]any, 0, len(ks)+3)
	args = append(args, millis(e.ttl), formatPriority(e.prio), mode)
	for _, k := range ks {
		args = append(args, k)
	}
	v, err := a.run(ctx, extendScript, nil, args...)
	if err != nil {
		return 0, 0, err
	}
	n, err := script.Ints(v, 2)
	if err != nil {
		return 0, 0, err
	}
	return int(n[0]), int(n[1]), nil
}

// Shrink removes keys from the pool. A leased key keeps its lease until it
// ends and does not return to the pool then. It returns how many members
// were removed.
func (a *Allocator) Shrink(ctx context.Context, ks ...string) (int, error) {
	if err := checkKeys(ks); err != nil {
		return 0, err
	}
	if len(ks) == 0 {
		return 0, nil
	}
	args := make([]any, 0, len(ks)+1)
	args = append(args, "some")
	for _, k := range ks {
		args = append(args, k)
	}
	n, err := a.runInt(ctx, shrinkScript, nil, args...)
	return int(n), err
}

// Clear removes every member from the pool. Leases live on until they end
// and their resources do not return to the pool.
func (a *Allocator) Clear(ctx context.Context) (int, error) {
	n, err := a.runInt(ctx, shrinkScript, nil, "all")
	return int(n), err
}

// Keys returns the members of the pool (whose membership has not expired),
// in no particular order.
func (a *Allocator) Keys(ctx context.Context) ([]string, error) {
	v, err := a.run(ctx, membersScript, nil, "keys")
	if err != nil {
		return nil, err
	}
	return script.Strings(v)
}

// Contains reports whether key is a member of the pool.
func (a *Allocator) Contains(ctx context.Context, key string) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	n, err := a.runInt(ctx, membersScript, nil, "has", key)
	return n == 1, err
}

// Len returns the number of members of the pool.
func (a *Allocator) Len(ctx context.Context) (int, error) {
	n, err := a.runInt(ctx, membersScript, nil, "len")
	return int(n), err
}

// SetPriority changes the priority of members; a higher priority is
// allocated first. A free member keeps its place among those of equal
// priority returned before and after it. It returns how many members
// changed (keys that are not members are ignored).
func (a *Allocator) SetPriority(ctx context.Context, priority float64, ks ...string) (int, error) {
	if err := checkPriority(priority); err != nil {
		return 0, err
	}
	if err := checkKeys(ks); err != nil {
		return 0, err
	}
	args := append([]any{formatPriority(priority)}, anys(ks)...)
	n, err := a.runInt(ctx, priorityScript, nil, args...)
	return int(n), err
}

// Quarantine takes members out of allocation for d: they are not handed
// out and their soft bindings stop applying; they return by themselves
// afterwards (at the next malloc or GC that reaches them). A leased member
// keeps its lease and stays out of the pool when it comes back. d must be
// positive. It returns how many members were quarantined.
func (a *Allocator) Quarantine(ctx context.Context, d time.Duration, ks ...string) (int, error) {
	if d <= 0 {
		return 0, fmt.Errorf("%w: quarantine of %v", ErrInvalidArgument, d)
	}
	return a.quarantine(ctx, millis(d), ks)
}

// Unquarantine ends the quarantine of members now: each returns to the pool
// unless it is leased. It returns how many members were quarantined.
func (a *Allocator) Unquarantine(ctx context.Context, ks ...string) (int, error) {
	return a.quarantine(ctx, 0, ks)
}

func (a *Allocator) quarantine(ctx context.Context, ms int64, ks []string) (int, error) {
	if err := checkKeys(ks); err != nil {
		return 0, err
	}
	if len(ks) == 0 {
		return 0, nil
	}
	args := append([]any{ms}, anys(ks)...)
	n, err := a.runInt(ctx, quarantineScript, nil, args...)
	return int(n), err
}

// GCStats counts what one GC call reclaimed.
type GCStats struct {
	Leases      int // expired leases ended
	Sessions    int // leases of lapsed sessions ended
	Members     int // members whose membership expired, removed
	Quarantines int // quarantines that ended
}

// Total is the sum of the counts.
func (s GCStats) Total() int { return s.Leases + s.Sessions + s.Members + s.Quarantines }

// GC reclaims up to count items of housekeeping, oldest first: expired
// leases (their resources return to the pool or to a waiter), the leases of
// lapsed sessions, expired members (a leased one is removed when its lease
// ends) and ended quarantines. Its cost follows what it reclaims, not the
// pool's size. Malloc does the same in small batches (WithReclaimBudget),
// so calling GC is optional. count must be ≥ 0; counts above maxBudget
// (2^30) do that much.
func (a *Allocator) GC(ctx context.Context, count int) (GCStats, error) {
	if count < 0 {
		return GCStats{}, fmt.Errorf("%w: negative GC count %d", ErrInvalidArgument, count)
	}
	v, err := a.run(ctx, gcScript, nil, min(count, maxBudget))
	if err != nil {
		return GCStats{}, err
	}
	n, err := script.Ints(v, 4)
	if err != nil {
		return GCStats{}, err
	}
	return GCStats{Leases: int(n[0]), Sessions: int(n[1]), Members: int(n[2]), Quarantines: int(n[3])}, nil
}

// FreeKeys ends the leases on keys whoever holds them: the operators'
// forced path (a holder's Lease reports the loss at its next renewal). It
// returns how many leases ended.
func (a *Allocator) FreeKeys(ctx context.Context, ks ...string) (int, error) {
	if err := checkKeys(ks); err != nil {
		return 0, err
	}
	if len(ks) == 0 {
		return 0, nil
	}
	n, err := a.runInt(ctx, freeKeysScript, nil, anys(ks)...)
	return int(n), err
}

// UpdateSoftBind binds name to the member key for ttl (≤ 0: until
// overwritten or unbound). It returns ErrNotMember when key is not a
// member.
func (a *Allocator) UpdateSoftBind(ctx context.Context, name, key string, ttl time.Duration) error {
	if err := checkKey(name); err != nil {
		return err
	}
	if err := checkKey(key); err != nil {
		return err
	}
	n, err := a.runInt(ctx, bindScript, []string{a.keys.Bind(name)}, "set", key, millis(ttl))
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: %q", ErrNotMember, key)
	}
	return nil
}

// GetSoftBind returns the member name is bound to, while the binding
// applies: it has not expired and the member was neither removed,
// quarantined nor re-created since. The member may be leased.
func (a *Allocator) GetSoftBind(ctx context.Context, name string) (string, bool, error) {
	if err := checkKey(name); err != nil {
		return "", false, err
	}
	v, err := a.run(ctx, bindScript, []string{a.keys.Bind(name)}, "get")
	if err != nil || v == nil {
		return "", false, err
	}
	s, ok := v.(string)
	if !ok {
		return "", false, fmt.Errorf("%w: binding reply %T", script.ErrReply, v)
	}
	return s, true, nil
}

// UnbindSoftBind removes the binding of name.
func (a *Allocator) UnbindSoftBind(ctx context.Context, name string) error {
	if err := checkKey(name); err != nil {
		return err
	}
	return a.p.Process(ctx, redis.NewIntCmd(ctx, "del", a.keys.Bind(name)))
}

func anys(ks []string) []any {
	out := make([]any, len(ks))
	for i, k := range ks {
		out[i] = k
	}
	return out
}

func formatPriority(p float64) string {
	if p == 0 {
		return "0" // also for -0
	}
	return strconv.FormatFloat(p, 'g', -1, 64)
}

// randomID returns n random bytes in hex.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}
