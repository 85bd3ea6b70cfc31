package allocator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Defaults of the health options.
const (
	// DefaultCheckConcurrency is how many checks HealthCheck runs at once
	// when WithCheckConcurrency is not given.
	DefaultCheckConcurrency = 8
	// DefaultCheckTimeout bounds each check when WithCheckTimeout is not
	// given.
	DefaultCheckTimeout = 5 * time.Second
	// DefaultCooldown is how long an unhealthy resource stays quarantined
	// when WithCooldown is not given.
	DefaultCooldown = time.Minute
)

// ErrCheckTimeout is the failure recorded for a check that did not return
// within its timeout (WithCheckTimeout).
var ErrCheckTimeout = errors.New("allocator: health check timed out")

// ErrCheckPanic is the failure recorded for a check that panicked.
var ErrCheckPanic = errors.New("allocator: health check panicked")

// CheckFunc checks the health of one resource: nil means healthy. It
// should return when ctx ends (its timeout, WithCheckTimeout); one that
// does not is abandoned and counts as unhealthy.
type CheckFunc func(ctx context.Context, key string) error

// HealthOption configures HealthCheck, StartHealthChecker and
// Allocation.RefreshUntilHealthy.
type HealthOption func(*healthConfig)

type healthConfig struct {
	concurrency int
	timeout     time.Duration
	cooldown    time.Duration
	report      func(key string, err error)
}

// WithCheckConcurrency sets how many checks run at once (default
// DefaultCheckConcurrency); it must be ≥ 1.
func WithCheckConcurrency(n int) HealthOption {
	return func(c *healthConfig) { c.concurrency = n }
}

// WithCheckTimeout bounds each check (default DefaultCheckTimeout): its
// ctx ends then, and a check still running is abandoned and counts as
// unhealthy. It must be positive.
func WithCheckTimeout(d time.Duration) HealthOption {
	return func(c *healthConfig) { c.timeout = d }
}

// WithCooldown sets how long an unhealthy resource is quarantined (default
// DefaultCooldown): it is not allocated, its soft bindings are dropped, and
// it returns to the pool by itself afterwards. It must be positive.
func WithCooldown(d time.Duration) HealthOption {
	return func(c *healthConfig) { c.cooldown = d }
}

// WithCheckReport has HealthCheck call f with the outcome of every check
// (err nil: healthy), from the goroutine that collects the outcomes, one
// call at a time.
func WithCheckReport(f func(key string, err error)) HealthOption {
	return func(c *healthConfig) { c.report = f }
}

func newHealthConfig(opts []HealthOption) (healthConfig, error) {
	c := healthConfig{concurrency: DefaultCheckConcurrency, timeout: DefaultCheckTimeout, cooldown: DefaultCooldown}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	switch {
	case c.concurrency < 1:
		return c, fmt.Errorf("%w: check concurrency %d", ErrInvalidArgument, c.concurrency)
	case c.timeout <= 0:
		return c, fmt.Errorf("%w: check timeout %v", ErrInvalidArgument, c.timeout)
	case c.cooldown <= 0:
		return c, fmt.Errorf("%w: cooldown %v", ErrInvalidArgument, c.cooldown)
	}
	return c, nil
}

// quarantineBatch bounds the members of one Quarantine call.
const quarantineBatch = 512

// HealthCheck runs check over every member of the pool (Keys), at most
// WithCheckConcurrency at once, each within WithCheckTimeout, and
// quarantines the members found unhealthy for WithCooldown: they are not
// allocated and lose their soft bindings until the cooldown ends, when
// they return by themselves. A leased member keeps its lease and is
// quarantined when it comes back. A check that returns an error, panics
// or outlives its timeout counts as unhealthy; a hanging check is
// abandoned (its goroutine is left to return by itself) and does not hold
// up the run. A healthy result changes nothing, so a quarantined member
// checked healthy stays out until its cooldown ends (see Unquarantine).
//
// It returns how many members were found healthy and unhealthy. When ctx
// ends during the run, checks cut short count as neither, nothing is
// quarantined, and the error wraps ctx.Err(). It returns
// ErrInvalidArgument for a nil check or a bad option.
func (a *Allocator) HealthCheck(ctx context.Context, check CheckFunc, opts ...HealthOption) (healthy, unhealthy int, err error) {
	c, err := newHealthConfig(opts)
	if err != nil {
		return 0, 0, err
	}
	if check == nil {
		return 0, 0, fmt.Errorf("%w: nil health check", ErrInvalidArgument)
	}
	return a.healthCheck(ctx, check, c)
}

// checkOutcome is the result of one check; aborted when ctx ended first.
type checkOutcome struct {
	key     string
	err     error
	aborted bool
}

func (a *Allocator) healthCheck(ctx context.Context, check CheckFunc, c healthConfig) (int, int, error) {
	ks, err := a.Keys(ctx)
	if err != nil {
		return 0, 0, err
	}
	out := make(chan checkOutcome, len(ks))
	sem := make(chan struct{}, c.concurrency)
	var wg sync.WaitGroup
launch:
	for _, k := range ks {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break launch
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out <- runCheck(ctx, check, k, c.timeout)
		}()
	}
	wg.Wait()
	close(out)
	var healthy int
	var bad []string
	for o := range out {
		if o.aborted {
			continue
		}
		if c.report != nil {
			c.report(o.key, o.err)
		}
		if o.err == nil {
			healthy++
			continue
		}
		a.log.Warn("allocator: resource unhealthy", "key", o.key, "err", o.err)
		bad = append(bad, o.key)
	}
	if ctx.Err() != nil {
		return healthy, len(bad), fmt.Errorf("allocator: health check cut short: %w", ctx.Err())
	}
	for i := 0; i < len(bad); i += quarantineBatch {
		if _, err := a.Quarantine(ctx, c.cooldown, bad[i:min(i+quarantineBatch, len(bad))]...); err != nil {
			return healthy, len(bad), fmt.Errorf("allocator: quarantining unhealthy resources: %w", err)
		}
	}
	return healthy, len(bad), nil
}

// runCheck runs one check within timeout and turns a panic or an overrun
// into an error. It returns once the check returned or its time is up,
// whichever comes first.
func runCheck(ctx context.Context, check CheckFunc, key string, timeout time.Duration) checkOutcome {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := make(chan error, 1) // buffered: an abandoned check does not block
	entered := make(chan bool, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				res <- fmt.Errorf("%w: %v", ErrCheckPanic, r)
			}
		}()
		if cctx.Err() != nil {
			entered <- false
			res <- cctx.Err()
			return
		}
		entered <- true
		res <- check(cctx, key)
	}()
	// Wait until the goroutine has called check or decided not to, so that
	// no check starts after the run (or a Stop) has returned.
	<-entered
	var err error
	select {
	case err = <-res:
	case <-cctx.Done():
		err = fmt.Errorf("%w after %v", ErrCheckTimeout, timeout)
	}
	if ctx.Err() != nil {
		return checkOutcome{key: key, aborted: true}
	}
	return checkOutcome{key: key, err: err}
}

// Background is a loop an Allocator runs in the background: a health
// checker (StartHealthChecker) or a pool refresher (StartRefresher). It
// stops when the ctx it was started with ends, on Stop, or when the
// Allocator is closed.
type Background struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Stop stops the loop and waits until it has exited. It is idempotent.
func (b *Background) Stop() {
	b.cancel()
	<-b.done
}

// Done returns a channel closed when the loop has exited.
func (b *Background) Done() <-chan struct{} { return b.done }

// startBackground runs loop in a goroutine until ctx ends, Stop or Close.
func (a *Allocator) startBackground(ctx context.Context, loop func(ctx context.Context)) (*Background, error) {
	bctx, cancel := context.WithCancel(ctx)
	b := &Background{cancel: cancel, done: make(chan struct{})}
	if !a.onClose(b.Stop) {
		cancel()
		return nil, ErrClosed
	}
	go func() {
		defer close(b.done)
		defer cancel()
		loop(bctx)
	}()
	return b, nil
}

// every runs f now and then every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func(ctx context.Context)) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f(ctx)
		t.Reset(interval)
	}
}

// StartHealthChecker runs HealthCheck with check and opts now and then
// every interval, in the background, until ctx ends, Stop or Close. Errors
// are logged. It returns ErrInvalidArgument for a non-positive interval, a
// nil check or a bad option, and ErrClosed after Close.
func (a *Allocator) StartHealthChecker(ctx context.Context, interval time.Duration, check CheckFunc, opts ...HealthOption) (*Background, error) {
	c, err := newHealthConfig(opts)
	if err != nil {
		return nil, err
	}
	switch {
	case check == nil:
		return nil, fmt.Errorf("%w: nil health check", ErrInvalidArgument)
	case interval <= 0:
		return nil, fmt.Errorf("%w: health check interval %v", ErrInvalidArgument, interval)
	}
	return a.startBackground(ctx, func(ctx context.Context) {
		every(ctx, interval, func(ctx context.Context) {
			h, u, err := a.healthCheck(ctx, check, c)
			switch {
			case err != nil && ctx.Err() == nil:
				a.log.Warn("allocator: health check failed", "err", err)
			case err == nil:
				a.log.Debug("allocator: health check done", "healthy", h, "unhealthy", u)
			}
		})
	})
}
