package lock

import (
	"errors"
	"fmt"

	"github.com/redisallocator/redisallocator/internal/keys"
)

var (
	// ErrNotObtained is returned by TryAcquire and Acquire when the key is
	// held by another owner and no (more) retries are allowed.
	ErrNotObtained = errors.New("lock: not obtained")

	// ErrNotHeld is returned by Held.Refresh and Held.Release when the
	// handle's token no longer owns the key: it expired, was released,
	// deleted or taken over. Held.Err wraps it after a loss.
	ErrNotHeld = errors.New("lock: not held")

	// ErrInvalidKey reports an empty key, a key longer than 1 KiB, or a
	// namespace that cannot be used. Nothing is sent to Redis.
	ErrInvalidKey = errors.New("lock: invalid key")

	// ErrInvalidArgument reports a bad argument other than a key: a TTL
	// below one millisecond that is not ≤ 0, a negative or inverted retry
	// setting, a safety margin below MinSafetyMargin or not below the TTL,
	// an empty or oversized token, an unknown comparison operator, NaN or an
	// infinity, a negative epsilon. Nothing is sent to Redis.
	ErrInvalidArgument = errors.New("lock: invalid argument")

	// ErrNotNumber is returned by SetIf and DeleteIf when the key holds a
	// value that is not a number. The key is left unchanged.
	ErrNotNumber = errors.New("lock: stored value is not a number")

	// ErrReleased is wrapped, together with ErrNotHeld, by Held.Err after
	// the owner released the lock.
	ErrReleased = errors.New("lock: released")
)

// checkKey validates a caller-supplied key.
func checkKey(key string) error {
	if p := keys.Problem(key); p != "" {
		return fmt.Errorf("%w: %s", ErrInvalidKey, p)
	}
	return nil
}
