package allocator

import (
	"context"
	"time"
)

// WithClock sets the time the scripts use (instead of the server's clock),
// so tests can move time forward.
func WithClock(now func() time.Time) Option { return func(c *config) { c.clock = now } }

// WithWaitEntryTTL sets how long a waiter's queue entry lives unless
// renewed.
func WithWaitEntryTTL(d time.Duration) Option { return func(c *config) { c.waitTTL = d } }

// LateMalloc runs the malloc script with token, as a request of unknown
// outcome that reaches Redis late would.
func (a *Allocator) LateMalloc(ctx context.Context, token string, ttl time.Duration) (any, error) {
	return a.run(ctx, mallocScript, nil, a.budget, millis(ttl), token, "-", 1, 0)
}

// GiveBackToken runs the clean-up after a malloc of unknown outcome once.
func (a *Allocator) GiveBackToken(ctx context.Context, token string) error {
	_, err := a.runVia(ctx, a.c, freeTokenScript, nil, token)
	return err
}

// LateWaitTurn runs a turn of the waiter id with token, as a turn of
// unknown outcome that reaches Redis late would, and LeaveWait its leave.
func (a *Allocator) LateWaitTurn(ctx context.Context, id, token string, ttl time.Duration) (any, error) {
	return a.run(ctx, waitScript, nil, a.budget, millis(ttl), token, "-", id, int64(30000), a.wait.channel)
}

// LeaveWait runs leave.lua for the waiter id with token.
func (a *Allocator) LeaveWait(ctx context.Context, id, token string) error {
	_, err := a.runVia(ctx, a.c, leaveScript, nil, id, token)
	return err
}
