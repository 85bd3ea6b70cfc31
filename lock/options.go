package lock

import (
	"fmt"
	"math"
	"time"
)

// DefaultSuffix is the suffix of a Lock namespace when WithSuffix is not
// given; DefaultPoolSuffix is the suffix of a Pool. Both match the Python
// redis-allocator.
const (
	DefaultSuffix     = "lock"
	DefaultPoolSuffix = "lock-pool"
)

// DefaultEpsilon is the tolerance of the ≥, ≤, == and != comparisons of
// SetIf and DeleteIf.
const DefaultEpsilon = 1e-6

// Option configures New, NewPool and NewMemory.
type Option func(*config)

type config struct {
	suffix    string
	suffixSet bool
	eps       float64
	batch     int
	grace     time.Duration
}

// DefaultFenceGrace is how long a key's fencing counter outlives the TTL of
// the key's last grant when WithFenceGrace is not given.
const DefaultFenceGrace = time.Minute

// WithFenceGrace sets how long the fencing counter of a key outlives the TTL
// of the key's last grant (for a grant without expiry: how long it outlives
// the grant). Fences are the larger of the last fence plus one and the
// Redis server's clock in microseconds, so they keep growing after the
// counter expired as long as that clock never steps back by more than the
// counter's life. The default is DefaultFenceGrace; it must be at least a
// millisecond. The in-memory twin applies it too.
func WithFenceGrace(d time.Duration) Option {
	return func(c *config) { c.grace = d }
}

// WithSuffix sets the namespace suffix: keys are <prefix>|<suffix>:<key>.
// The default is DefaultSuffix for New and DefaultPoolSuffix for NewPool.
// It has no effect on the in-memory twin.
func WithSuffix(suffix string) Option {
	return func(c *config) { c.suffix, c.suffixSet = suffix, true }
}

// WithEpsilon sets the tolerance of the ≥, ≤, == and != comparisons of
// SetIf and DeleteIf. The default is DefaultEpsilon; it must be ≥ 0.
func WithEpsilon(eps float64) Option {
	return func(c *config) { c.eps = eps }
}

// DefaultBatching is the number of commands per Redis node that a Lock or
// Pool sends on their own before it batches further ones (WithBatching).
const DefaultBatching = 8

// WithBatching sets how the namespace batches the commands of concurrent
// operations: while maxInFlight of its commands to one Redis node are on
// their way, further ones to that node queue, and when one returns the
// node's whole queue leaves in one pipeline. Every operation is still one
// round trip, and a caller alone sends at once as without batching; under
// load one round trip carries many operations, which saves system calls on
// both sides. The budget is per node, so a slow node of a cluster holds up
// only the operations on its own keys. The default, DefaultBatching, was
// never measurably slower than no batching on the 2-core test machine and
// gave 1.2× the throughput at 16 goroutines and 1.9× at 50 (see
// bench/README.md); a queued operation waits for a round trip in flight to
// finish first, so measure with your own network and concurrency. An
// operation whose command has left the queue waits for its reply even when
// its context ends, within the client's read and write timeouts.
// maxInFlight must be ≥ 0; 0 sends every command on its own. Subscriptions
// and the pool's membership commands are never batched. The in-memory twin
// ignores it.
func WithBatching(maxInFlight int) Option {
	return func(c *config) { c.batch = maxInFlight }
}

func newConfig(defaultSuffix string, opts []Option) (config, error) {
	c := config{suffix: defaultSuffix, eps: DefaultEpsilon, grace: DefaultFenceGrace, batch: DefaultBatching}
	for _, o := range opts {
		o(&c)
	}
	if c.eps < 0 || math.IsNaN(c.eps) || math.IsInf(c.eps, 0) {
		return c, fmt.Errorf("%w: epsilon %v", ErrInvalidArgument, c.eps)
	}
	if c.grace < time.Millisecond {
		return c, fmt.Errorf("%w: fence grace %v is below a millisecond", ErrInvalidArgument, c.grace)
	}
	if c.batch < 0 {
		return c, fmt.Errorf("%w: batching with %d commands in flight", ErrInvalidArgument, c.batch)
	}
	return c, nil
}

// AcquireOption configures TryAcquire and Acquire.
type AcquireOption func(*acquireConfig)

type acquireConfig struct {
	retry     RetryStrategy
	retrySet  bool
	notify    bool
	token     string
	margin    time.Duration
	marginSet bool
}

// WithRetry sets how Acquire waits between attempts. The default is
// ExponentialBackoff(8*time.Millisecond, 512*time.Millisecond), and with
// WithReleaseNotify ExponentialBackoff(100*time.Millisecond, time.Second):
// a notified waiter is woken by the release that hands it the key (or by
// the holder's TTL running out), so its attempts in between only catch a
// forced Unlock, which hands the key to nobody. TryAcquire ignores it and
// never retries.
func WithRetry(s RetryStrategy) AcquireOption {
	return func(c *acquireConfig) { c.retry, c.retrySet = s, true }
}

// WithReleaseNotify makes Acquire wait in line for the key: a release hands
// the key to the waiters in the order they arrived (processes take turns,
// and the calls of one process go first in, first out), without freeing it
// in between, and tells the next one at once. See the package
// documentation. The retry strategy (and the holder's remaining TTL,
// whichever is shorter) still bounds every wait, so a forced Unlock, which
// hands the key to nobody, or an expiry is noticed too. The value's waiting
// calls share one subscription: one more connection while any of them
// waits, and for 30 s after the last one left.
func WithReleaseNotify() AcquireOption {
	return func(c *acquireConfig) { c.notify = true }
}

// WithToken sets the owner token instead of a random one. Acquiring with the
// token that already owns the key succeeds, resets the TTL and issues a new
// fencing token. Tokens must be unique per owner: two owners with the same
// token both believe they hold the lock.
func WithToken(token string) AcquireOption {
	return func(c *acquireConfig) { c.token = token }
}

// MinSafetyMargin is the smallest margin WithSafetyMargin accepts: it
// covers timer and scheduling delays between the local deadline and the
// moment the holder can react.
const MinSafetyMargin = time.Millisecond

// maxTokenLen bounds owner tokens.
const maxTokenLen = 1024

// WithSafetyMargin sets how long before the server-side expiry the handle
// considers the lock lost when no renewal was confirmed (see Held.Lost).
// The default is a tenth of the TTL. It must be at least MinSafetyMargin and
// below every TTL the handle is acquired or refreshed with; choose it to
// cover clock-rate drift (parts per million of the TTL), pauses of your
// process and the time your work needs to stop.
func WithSafetyMargin(d time.Duration) AcquireOption {
	return func(c *acquireConfig) { c.margin, c.marginSet = d, true }
}

func newAcquireConfig(ttl time.Duration, opts []AcquireOption) (acquireConfig, error) {
	var c acquireConfig
	for _, o := range opts {
		o(&c)
	}
	if !c.retrySet {
		c.retry = defaultRetry
		if c.notify {
			c.retry = defaultNotifyRetry
		}
	}
	if c.retry == nil {
		c.retry = NoRetry()
	}
	if v, ok := c.retry.(interface{ validate() error }); ok {
		if err := v.validate(); err != nil {
			return c, err
		}
	}
	if c.marginSet && (c.margin < MinSafetyMargin || (ttl > 0 && c.margin >= ttl)) {
		return c, fmt.Errorf("%w: safety margin %v for TTL %v (it must be at least %v and below the TTL)", ErrInvalidArgument, c.margin, ttl, MinSafetyMargin)
	}
	if len(c.token) > maxTokenLen {
		return c, fmt.Errorf("%w: token longer than %d bytes", ErrInvalidArgument, maxTokenLen)
	}
	return c, nil
}

// ttlMillis converts a TTL to the milliseconds the scripts expect: 0 for no
// expiry (ttl ≤ 0), an error for a positive TTL below one millisecond.
func ttlMillis(ttl time.Duration) (int64, error) {
	switch {
	case ttl <= 0:
		return 0, nil
	case ttl < time.Millisecond:
		return 0, fmt.Errorf("%w: TTL %v is below one millisecond", ErrInvalidArgument, ttl)
	}
	return ttl.Milliseconds(), nil
}
