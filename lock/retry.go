package lock

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// RetryStrategy decides how long Acquire waits before the next attempt.
// NextBackoff is called with the number of failed attempts so far (1 after
// the first failure) and returns the delay and whether to try again at all.
// Implementations must be safe for concurrent use. With WithReleaseNotify,
// Acquire draws the delay before an attempt (to announce how long it will
// wait), so NextBackoff can be called for an attempt that then succeeds.
type RetryStrategy interface {
	NextBackoff(failures int) (time.Duration, bool)
}

type noRetry struct{}

// NoRetry makes Acquire give up after the first failed attempt, like
// TryAcquire.
func NoRetry() RetryStrategy { return noRetry{} }

func (noRetry) NextBackoff(int) (time.Duration, bool) { return 0, false }

type linearRetry struct{ interval time.Duration }

// LinearRetry retries at a fixed interval until the context ends. The
// interval must be > 0.
func LinearRetry(interval time.Duration) RetryStrategy { return linearRetry{interval} }

func (r linearRetry) NextBackoff(int) (time.Duration, bool) { return r.interval, true }

func (r linearRetry) validate() error {
	if r.interval <= 0 {
		return fmt.Errorf("%w: retry interval %v", ErrInvalidArgument, r.interval)
	}
	return nil
}

type exponentialRetry struct{ min, max time.Duration }

// ExponentialBackoff retries until the context ends, waiting a random
// duration in [d/2, d] ("equal jitter") where d doubles from min after every
// failure up to max. Both must be > 0 and min ≤ max.
func ExponentialBackoff(min, max time.Duration) RetryStrategy {
	return exponentialRetry{min, max}
}

func (r exponentialRetry) NextBackoff(failures int) (time.Duration, bool) {
	d := r.max
	// min·2^shift ≤ max, checked without computing a product that could
	// wrap around; failures below 1 count as the first.
	if shift := max(failures, 1) - 1; shift < 63 && r.min <= r.max>>shift {
		d = r.min << shift
	}
	half := d / 2
	return half + rand.N(d-half+1), true
}

func (r exponentialRetry) validate() error {
	if r.min <= 0 || r.max <= 0 || r.min > r.max {
		return fmt.Errorf("%w: exponential backoff from %v to %v", ErrInvalidArgument, r.min, r.max)
	}
	return nil
}

type limitRetry struct {
	s   RetryStrategy
	max int
}

// LimitRetry stops s after max retries (max+1 attempts in all). max must be
// ≥ 0.
func LimitRetry(s RetryStrategy, max int) RetryStrategy { return limitRetry{s, max} }

func (r limitRetry) NextBackoff(failures int) (time.Duration, bool) {
	if failures > r.max {
		return 0, false
	}
	return r.s.NextBackoff(failures)
}

func (r limitRetry) validate() error {
	if r.max < 0 {
		return fmt.Errorf("%w: retry limit %d", ErrInvalidArgument, r.max)
	}
	if r.s == nil {
		return fmt.Errorf("%w: nil retry strategy", ErrInvalidArgument)
	}
	if v, ok := r.s.(interface{ validate() error }); ok {
		return v.validate()
	}
	return nil
}
