package allocator

import (
	"fmt"
	"log/slog"
	"math"
	"time"
)

// DefaultSuffix is the suffix of an allocator namespace when WithSuffix is
// not given, as in the Python redis-allocator.
const DefaultSuffix = "allocator"

// DefaultLeaseTTL is the TTL of a lease when WithLeaseTTL is not given (the
// Python redis-allocator's default timeout).
const DefaultLeaseTTL = 2 * time.Minute

// DefaultReclaimBudget is how many units of housekeeping (expired leases,
// lapsed sessions, expired members, ended quarantines) every malloc does
// before it allocates, when WithReclaimBudget is not given.
const DefaultReclaimBudget = 16

// DefaultBatching is the number of commands per Redis node that an
// Allocator sends on their own before it batches further ones
// (WithBatching), as for the lock package.
const DefaultBatching = 8

// Option configures New.
type Option func(*config)

type config struct {
	suffix  string
	shared  bool
	budget  int
	batch   int
	logger  *slog.Logger
	policy  *Policy
	clock   func() time.Time // test clock: sent as the scripts' time
	waitTTL time.Duration    // how long a waiter's entry lives unless renewed
}

func newConfig(opts []Option) (config, error) {
	c := config{suffix: DefaultSuffix, budget: DefaultReclaimBudget, batch: DefaultBatching, waitTTL: 30 * time.Second}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	switch {
	case c.budget < 0:
		return c, fmt.Errorf("%w: negative reclaim budget %d", ErrInvalidArgument, c.budget)
	case c.batch < 0:
		return c, fmt.Errorf("%w: negative batching %d", ErrInvalidArgument, c.batch)
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	c.budget = min(c.budget, maxBudget)
	return c, nil
}

// WithSuffix sets the namespace suffix; the default is DefaultSuffix. All
// keys of the pool share the hash tag {<prefix>|<suffix>}.
func WithSuffix(suffix string) Option { return func(c *config) { c.suffix = suffix } }

// WithShared puts the allocator in shared mode: malloc hands the same
// resource to many clients, rotating through the pool (among members of the
// highest priority), and holds no lease. Use it on every Allocator of the
// pool or none.
func WithShared() Option { return func(c *config) { c.shared = true } }

// WithReclaimBudget sets how many expired leases, lapsed sessions, expired
// members and ended quarantines each malloc reclaims first (default
// DefaultReclaimBudget), so that a pool never starves because nobody runs
// GC. 0 leaves all of it to GC. It must be ≥ 0; it is capped at 2^30.
func WithReclaimBudget(n int) Option { return func(c *config) { c.budget = n } }

// WithBatching sets how the allocator batches the commands of concurrent
// operations, as lock.WithBatching does: while maxInFlight commands to a
// node are on their way, further ones queue and leave together in one
// pipeline. Every operation is still one round trip. The default is
// DefaultBatching; 0 sends every command on its own.
func WithBatching(maxInFlight int) Option { return func(c *config) { c.batch = maxInFlight } }

// WithLogger sets the logger of background work (refresher, health
// checker, give-backs); the default discards.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithPolicy sets the allocation policy: GC before malloc, the pool
// refresher and the auto-close of objects (see Policy).
func WithPolicy(p Policy) Option { return func(c *config) { c.policy = &p } }

// MallocOption configures a malloc.
type MallocOption func(*mallocConfig)

type mallocConfig struct {
	ttl     time.Duration
	bind    string
	bindTTL time.Duration
	session *Session
}

// WithLeaseTTL sets the lease's TTL (default DefaultLeaseTTL), rounded down
// to whole milliseconds. ttl ≤ 0 makes a permanent lease that only Free,
// FreeKeys or the end of its session ends.
func WithLeaseTTL(ttl time.Duration) MallocOption { return func(m *mallocConfig) { m.ttl = ttl } }

// WithBind asks for the resource soft-bound to name: it is taken when it
// is still a member, free and valid; otherwise malloc allocates normally
// and binds name to the new resource. The binding lasts ttl (≤ 0: until
// overwritten or unbound).
func WithBind(name string, ttl time.Duration) MallocOption {
	return func(m *mallocConfig) { m.bind, m.bindTTL = name, ttl }
}

// WithSession ties the lease to a client session: when the session lapses
// (its holder stopped heartbeating) or is closed, the lease ends with all
// the session's others.
func WithSession(s *Session) MallocOption { return func(m *mallocConfig) { m.session = s } }

func newMallocConfig(opts []MallocOption) (mallocConfig, error) {
	m := mallocConfig{ttl: DefaultLeaseTTL}
	for _, o := range opts {
		if o != nil {
			o(&m)
		}
	}
	if m.bind != "" || m.bindTTL != 0 {
		if err := checkKey(m.bind); err != nil {
			return m, fmt.Errorf("soft-binding name: %w", err)
		}
	}
	return m, nil
}

// ExtendOption configures Extend and Assign.
type ExtendOption func(*extendConfig)

type extendConfig struct {
	ttl  time.Duration
	prio float64
}

// WithMemberTTL makes membership expire ttl after the call (an existing
// member's expiry is refreshed). ttl ≤ 0, the default, means no expiry.
func WithMemberTTL(ttl time.Duration) ExtendOption { return func(e *extendConfig) { e.ttl = ttl } }

// WithPriority sets the priority of new members (default 0); a higher
// priority is allocated first. An existing member keeps its priority; see
// SetPriority.
func WithPriority(p float64) ExtendOption { return func(e *extendConfig) { e.prio = p } }

func newExtendConfig(opts []ExtendOption) (extendConfig, error) {
	var e extendConfig
	for _, o := range opts {
		if o != nil {
			o(&e)
		}
	}
	if err := checkPriority(e.prio); err != nil {
		return e, err
	}
	return e, nil
}

func checkPriority(p float64) error {
	if math.IsNaN(p) || math.IsInf(p, 0) {
		return fmt.Errorf("%w: priority %v", ErrInvalidArgument, p)
	}
	return nil
}

// millis converts a duration to whole milliseconds for a script, ≤ 0 for
// "none": a positive duration below a millisecond rounds up to one so it
// keeps meaning "expires".
func millis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return max(d.Milliseconds(), 1)
}
