package allocator

import (
	"errors"
	"fmt"

	"github.com/redisallocator/redisallocator/internal/keys"
)

var (
	// ErrNoneAvailable is wrapped by the error of MallocLease, MallocN and
	// Malloc when no member of the pool is free (MallocKey reports it as
	// ok == false instead).
	ErrNoneAvailable = errors.New("allocator: no resource available")

	// ErrNotHeld is returned by Lease.Free and Lease.Renew when the lease
	// no longer holds its resource: it was freed, it expired and was
	// reclaimed (and perhaps granted again), its session lapsed, or an
	// operator forced it free. Nothing changes then. Lease.Err wraps it
	// after a loss.
	ErrNotHeld = errors.New("allocator: lease not held")

	// ErrFreed is wrapped, together with ErrNotHeld, by Lease.Err after the
	// holder freed the lease.
	ErrFreed = errors.New("allocator: lease freed")

	// ErrSessionLost is returned when a lease is asked for in a session that
	// has lapsed or was closed, and wrapped by Session.Err after a loss.
	ErrSessionLost = errors.New("allocator: session lost")

	// ErrInvalidKey reports an empty key, a key longer than 1 KiB, or a
	// namespace that cannot be used. Nothing is sent to Redis.
	ErrInvalidKey = errors.New("allocator: invalid key")

	// ErrInvalidArgument reports a bad argument other than a key: NaN or an
	// infinite priority, a negative count, a lease or session of another
	// allocator, an option that does not apply to the allocator's mode.
	// Nothing is sent to Redis.
	ErrInvalidArgument = errors.New("allocator: invalid argument")

	// ErrNotMember is returned by UpdateSoftBind when the resource is not a
	// member of the pool.
	ErrNotMember = errors.New("allocator: not a member")

	// ErrClosed is returned by the malloc methods, NewSession and the
	// background helpers of an Allocator after Close.
	ErrClosed = errors.New("allocator: closed")
)

// checkKey validates one caller-supplied resource key or name.
func checkKey(key string) error {
	if p := keys.Problem(key); p != "" {
		return fmt.Errorf("%w: %s", ErrInvalidKey, p)
	}
	return nil
}

// checkKeys validates every key of a list.
func checkKeys(ks []string) error {
	for _, k := range ks {
		if err := checkKey(k); err != nil {
			return err
		}
	}
	return nil
}
