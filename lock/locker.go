package lock

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Locker is the interface shared by the Redis lock (*Lock), the lock pool
// (*Pool) and the in-memory twin (*Memory). They have the same semantics —
// the shared test suite runs against each, and a differential test compares
// the twin with Redis — except for what only a network has: round trips,
// connection errors and client retries. Lock uses the name of sync.Locker's
// method but is not a sync.Locker.
type Locker interface {
	// Lock takes key for value when the key is free (SET NX). ttl ≤ 0 makes
	// a permanent lock. It reports whether the lock was taken.
	Lock(ctx context.Context, key, value string, ttl time.Duration) (bool, error)
	// RLock is the reentrant Lock: it succeeds when key is free or already
	// holds value, and then (re)sets the TTL.
	RLock(ctx context.Context, key, value string, ttl time.Duration) (bool, error)
	// Update sets key to value whoever holds it.
	Update(ctx context.Context, key, value string, ttl time.Duration) error
	// Unlock deletes key whoever holds it and reports whether it existed.
	Unlock(ctx context.Context, key string) (bool, error)
	// IsLocked reports whether key is held.
	IsLocked(ctx context.Context, key string) (bool, error)
	// Value returns the value holding key and whether key is held.
	Value(ctx context.Context, key string) (string, bool, error)
	// Status classifies key against the TTL a holder is expected to use.
	Status(ctx context.Context, key string, timeout time.Duration) (Status, error)
	// SetIf stores value when "compare op stored" holds or key is missing.
	SetIf(ctx context.Context, key string, op Op, compare, value float64, ttl time.Duration) (bool, error)
	// DeleteIf deletes key when "compare op stored" holds or key is missing.
	DeleteIf(ctx context.Context, key string, op Op, compare float64) (bool, error)
	// TryAcquire makes one attempt to own key with a random token.
	TryAcquire(ctx context.Context, key string, ttl time.Duration, opts ...AcquireOption) (*Held, error)
	// Acquire tries to own key until it succeeds, the retry strategy gives
	// up or ctx ends.
	Acquire(ctx context.Context, key string, ttl time.Duration, opts ...AcquireOption) (*Held, error)
	// ReleaseToken releases key if token still owns it.
	ReleaseToken(ctx context.Context, key, token string) error
}

// Status is the state of a lock key as Status reports it.
type Status int

const (
	// Free: nobody holds the key.
	Free Status = iota
	// Locked: the key is held with a TTL no longer than the expected one.
	Locked
	// Unavailable: the key is held with a TTL longer than the expected
	// one, so it was locked for longer than normal use (the seed marks
	// resources unavailable for a while this way).
	Unavailable
	// Permanent: the key is held without expiry.
	Permanent
)

// String returns the lower-case name of the status.
func (s Status) String() string {
	switch s {
	case Free:
		return "free"
	case Locked:
		return "locked"
	case Unavailable:
		return "unavailable"
	case Permanent:
		return "permanent"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Op is a comparison of SetIf and DeleteIf. The condition reads
// "compare Op stored": SetIf(ctx, k, GT, 5, 5, 0) stores 5 when 5 is
// greater than the stored number.
type Op int

// The comparisons. GE, LE, EQ and NE allow the namespace's epsilon.
const (
	GT Op = iota + 1 // compare > stored
	LT               // compare < stored
	GE               // compare ≥ stored − ε
	LE               // compare ≤ stored + ε
	EQ               // |compare − stored| < ε
	NE               // |compare − stored| > ε
)

var opNames = [...]string{GT: "gt", LT: "lt", GE: "ge", LE: "le", EQ: "eq", NE: "ne"}

// String returns the operator's short name: gt, lt, ge, le, eq or ne.
func (o Op) String() string {
	if o >= GT && o <= NE {
		return opNames[o]
	}
	return "Op(" + strconv.Itoa(int(o)) + ")"
}

// holds evaluates "compare o stored" with tolerance eps, as cond.lua does.
func (o Op) holds(compare, stored, eps float64) bool {
	switch o {
	case GT:
		return compare > stored
	case LT:
		return compare < stored
	case GE:
		return compare >= stored-eps
	case LE:
		return compare <= stored+eps
	case EQ:
		return math.Abs(compare-stored) < eps
	case NE:
		return math.Abs(compare-stored) > eps
	}
	return false
}

// backend is what a lock store implements; core validates the arguments and
// converts the results. Keys passed to a backend are the caller's keys, and
// every TTL is already valid (0 for no expiry).
type backend interface {
	lock(ctx context.Context, key, value string, ttl time.Duration) (bool, error)
	rlock(ctx context.Context, key, value string, ttl time.Duration) (bool, error)
	update(ctx context.Context, key, value string, ttl time.Duration) error
	unlock(ctx context.Context, key string) (bool, error)
	exists(ctx context.Context, key string) (bool, error)
	value(ctx context.Context, key string) (string, bool, error)
	// pttl returns the remaining TTL; -1 for no expiry, -2 for a missing key.
	pttl(ctx context.Context, key string) (time.Duration, error)
	// cond returns 1 when done, 0 when the condition failed, -1 when the
	// stored value is not a number.
	cond(ctx context.Context, key string, op Op, compare, eps float64, del bool, value string, ttl time.Duration) (int, error)
	heldBackend
}

// heldBackend is the part of a store that owner handles use. Its methods
// take the store key, computed once per handle by storeKey.
type heldBackend interface {
	// storeKey maps a caller's key to the key the store keeps.
	storeKey(key string) string
	// acquire makes attempt a on sk. It returns the fencing token when
	// a.token now owns sk, else the holder's remaining TTL (-1 for no
	// expiry).
	acquire(ctx context.Context, sk string, a *attempt) (fence int64, remaining time.Duration, ok bool, err error)
	refresh(ctx context.Context, sk, token string, ttl time.Duration) (bool, error)
	// release deletes sk while token owns it or, when processes wait in
	// sk's queue, hands it to the first of them. It reports whether token
	// owned sk.
	release(ctx context.Context, sk, token string, o releaseOpts) (bool, error)
	// join puts the caller in its process's line of waiters for sk, to be
	// handed sk by a release (WithReleaseNotify).
	join(ctx context.Context, sk string) (line, error)
	// joinable reports whether join returns without a round trip.
	joinable() bool
}

// attempt is one attempt of an acquisition to own a key.
type attempt struct {
	token string
	ttl   time.Duration
	// grant, when not "", is recorded with the fence when this attempt
	// takes the key afresh, so that a clean-up can give back exactly it.
	grant string
	// from, when not "", is a token the key was handed over with to the
	// caller: the attempt takes the key from it.
	from string
	// line, when not nil, keeps the caller's process in sk's queue if sk is
	// taken, for at least wait: the longest the caller waits before its
	// next attempt.
	line line
	wait time.Duration
}

// releaseOpts qualify a release.
type releaseOpts struct {
	// grant, when not "", releases only a lock that the acquisition with
	// this grant id took afresh and that was granted to nobody since.
	grant string
	// fence is the fence of the hold released.
	fence int64
}

// core implements Locker over a backend. *Lock, *Pool and *Memory embed it.
type core struct {
	b   backend
	eps float64
}

// Lock takes key for value when it is free (SET NX), with expiry ttl; ttl ≤ 0
// makes a permanent lock. It reports whether the lock was taken. A positive
// ttl below one millisecond returns ErrInvalidArgument; a bad key returns
// ErrInvalidKey. One round trip.
func (c *core) Lock(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	if _, err := ttlMillis(ttl); err != nil {
		return false, err
	}
	ok, err := c.b.lock(ctx, key, value, ttl)
	return ok, wrapErr(err, "lock", key)
}

// RLock is the reentrant Lock: it succeeds when key is free or already holds
// value, and then sets value with the new ttl (ttl ≤ 0: no expiry). It fails
// (false, nil) when another value holds key. One round trip.
func (c *core) RLock(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	if _, err := ttlMillis(ttl); err != nil {
		return false, err
	}
	ok, err := c.b.rlock(ctx, key, value, ttl)
	return ok, wrapErr(err, "rlock", key)
}

// Update sets key to value whoever holds it, with expiry ttl (ttl ≤ 0: no
// expiry). One round trip.
func (c *core) Update(ctx context.Context, key, value string, ttl time.Duration) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if _, err := ttlMillis(ttl); err != nil {
		return err
	}
	if err := c.b.update(ctx, key, value, ttl); err != nil {
		return fmt.Errorf("lock: update %q: %w", key, err)
	}
	return nil
}

// Unlock deletes key whoever holds it (the seed's forced unlock) and reports
// whether it was held. Use Held.Release for an owner-checked release.
// Unlike Held.Release it does not notify waiters; they notice at their next
// retry. One round trip.
func (c *core) Unlock(ctx context.Context, key string) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	ok, err := c.b.unlock(ctx, key)
	return ok, wrapErr(err, "unlock", key)
}

// IsLocked reports whether key is held. One round trip.
func (c *core) IsLocked(ctx context.Context, key string) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	ok, err := c.b.exists(ctx, key)
	return ok, wrapErr(err, "is locked", key)
}

// Value returns the value holding key and true, or "" and false when key is
// free. One round trip.
func (c *core) Value(ctx context.Context, key string) (string, bool, error) {
	if err := checkKey(key); err != nil {
		return "", false, err
	}
	v, ok, err := c.b.value(ctx, key)
	if err != nil {
		return "", false, fmt.Errorf("lock: value %q: %w", key, err)
	}
	return v, ok, nil
}

// Status classifies key: Free when nobody holds it, Permanent when it has no
// expiry, Unavailable when its remaining TTL is longer than timeout (the TTL
// a normal holder uses), else Locked. One round trip.
func (c *core) Status(ctx context.Context, key string, timeout time.Duration) (Status, error) {
	if err := checkKey(key); err != nil {
		return Free, err
	}
	d, err := c.b.pttl(ctx, key)
	if err != nil {
		return Free, fmt.Errorf("lock: status %q: %w", key, err)
	}
	switch {
	case d == -2:
		return Free, nil
	case d == -1:
		return Permanent, nil
	case d > timeout:
		return Unavailable, nil
	}
	return Locked, nil
}

// SetIf stores value at key, with expiry ttl (ttl ≤ 0: none), when the key is
// missing or "compare op stored" holds for the number stored there (the
// seed's setgt, setlt, setge, setle, seteq and setne; the seed's default
// value is compare). It reports whether it stored. A stored value that is
// not a number returns ErrNotNumber and changes nothing; NaN, infinities and
// unknown operators return ErrInvalidArgument. One round trip.
func (c *core) SetIf(ctx context.Context, key string, op Op, compare, value float64, ttl time.Duration) (bool, error) {
	if err := c.checkCond(key, op, compare, value); err != nil {
		return false, err
	}
	if _, err := ttlMillis(ttl); err != nil {
		return false, err
	}
	n, err := c.b.cond(ctx, key, op, compare, c.eps, false, formatFloat(value), ttl)
	return condResult(n, err, "set if", key)
}

// DeleteIf deletes key when it is missing or "compare op stored" holds (the
// seed's delgt … delne). It reports whether the condition held. A stored
// value that is not a number returns ErrNotNumber and changes nothing. One
// round trip.
func (c *core) DeleteIf(ctx context.Context, key string, op Op, compare float64) (bool, error) {
	if err := c.checkCond(key, op, compare, 0); err != nil {
		return false, err
	}
	n, err := c.b.cond(ctx, key, op, compare, c.eps, true, "", 0)
	return condResult(n, err, "delete if", key)
}

func (c *core) checkCond(key string, op Op, nums ...float64) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if op < GT || op > NE {
		return fmt.Errorf("%w: unknown operator %v", ErrInvalidArgument, op)
	}
	for _, f := range nums {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%w: number %v", ErrInvalidArgument, f)
		}
	}
	return nil
}

func condResult(n int, err error, what, key string) (bool, error) {
	switch {
	case err != nil:
		return false, fmt.Errorf("lock: %s %q: %w", what, key, err)
	case n < 0:
		return false, fmt.Errorf("%w: %s %q", ErrNotNumber, what, key)
	}
	return n == 1, nil
}

// TryAcquire makes one attempt to own key for ttl (ttl ≤ 0: no expiry) with a
// random owner token, and returns ErrNotObtained when another owner holds it.
// The handle carries a fencing token larger than any issued before for this
// key. One round trip.
func (c *core) TryAcquire(ctx context.Context, key string, ttl time.Duration, opts ...AcquireOption) (*Held, error) {
	return acquire(ctx, c.b, key, ttl, opts, false)
}

// Acquire is TryAcquire that retries, by default with exponential backoff,
// until it succeeds, the strategy gives up (ErrNotObtained) or ctx ends
// (ErrNotObtained joined with ctx.Err()). With WithReleaseNotify it wakes as
// soon as the holder releases the key. A Redis error ends it at once.
func (c *core) Acquire(ctx context.Context, key string, ttl time.Duration, opts ...AcquireOption) (*Held, error) {
	return acquire(ctx, c.b, key, ttl, opts, true)
}

// ReleaseToken releases key if token (Held.Token of an owner handle, or a
// token given WithToken) still owns it, exactly as Held.Release does, for a
// process that kept the token but not the handle — after a restart, or from
// the command line. It returns an error wrapping ErrNotHeld when the token
// does not own the key. One round trip.
func (c *core) ReleaseToken(ctx context.Context, key, token string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if token == "" || len(token) > maxTokenLen {
		return fmt.Errorf("%w: token of %d bytes", ErrInvalidArgument, len(token))
	}
	ok, err := c.b.release(ctx, c.b.storeKey(key), token, releaseOpts{})
	if err != nil {
		return fmt.Errorf("lock: release %q: %w", key, err)
	}
	if !ok {
		return fmt.Errorf("%w: key %q: not owned by the token", ErrNotHeld, key)
	}
	return nil
}

// wrapErr adds the operation and key to a backend error.
func wrapErr(err error, op, key string) error {
	if err != nil {
		return fmt.Errorf("lock: %s %q: %w", op, key, err)
	}
	return nil
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
