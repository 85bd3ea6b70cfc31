package allocator

import "time"

// WithClock sets the time the scripts use (instead of the server's clock),
// so tests can move time forward.
func WithClock(now func() time.Time) Option { return func(c *config) { c.clock = now } }

// WithWaitEntryTTL sets how long a waiter's queue entry lives unless
// renewed.
func WithWaitEntryTTL(d time.Duration) Option { return func(c *config) { c.waitTTL = d } }
