package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/redisallocator/redisallocator/lock"
)

// lockGroup describes the lock noun.
func lockGroup() group {
	return group{name: "lock", short: "take, inspect and release distributed locks (package lock)"}
}

// lockCommands returns the lock subcommands.
func lockCommands() []*command {
	return []*command{
		{
			name:  "lock acquire",
			args:  []string{"KEY"},
			flags: "[--ttl 30s] [--wait 10s]",
			short: "Take KEY with a random owner token; print the token and the fencing token.",
			long: `With --wait 0 it makes one attempt (TryAcquire) and fails at once when
another owner holds KEY. Otherwise it retries (Acquire, woken early by the
holder's release) until the lock is taken or --wait has passed. Exit status
is 1 when the lock was not obtained.

The lock is not renewed: it expires after --ttl unless released first with
"lock release KEY TOKEN". --ttl 0 makes a lock without expiry. Against the
embedded miniredis the lock vanishes when the command exits; use
--redis-url to lock on a real server.`,
			example: progName + " --redis-url redis://localhost:6379 lock acquire nightly-report --ttl 5m --wait 30s",
			setup:   setupLockAcquire,
		},
		{
			name:  "lock release",
			args:  []string{"KEY", "TOKEN"},
			short: "Release KEY if TOKEN (printed by lock acquire) still owns it.",
			long: `The check and the delete are one atomic step (Lock.ReleaseToken), which
also wakes clients waiting for KEY. It fails with exit status 1 when
another owner holds KEY, and reports success when KEY is already free.`,
			example: progName + " --redis-url redis://localhost:6379 lock release nightly-report 3ZK7Q2M4X5ABCDEF",
			setup:   setupLockRelease,
		},
		{
			name:  "lock status",
			args:  []string{"KEY"},
			flags: "[--timeout 2m]",
			short: "Print whether KEY is free, locked, unavailable or permanent, with its value and TTL.",
			long: `A held key is "locked" when its remaining TTL is at most --timeout (the
TTL a normal holder uses), "unavailable" when it is longer (locked for
longer than normal use), and "permanent" when it has no expiry. The
status, value and TTL are read in separate round trips.`,
			example: progName + " --redis-url redis://localhost:6379 lock status nightly-report",
			setup:   setupLockStatus,
		},
		{
			name:  "lock set",
			args:  []string{"KEY", "VALUE"},
			flags: "[--ttl 30s]",
			short: "Take KEY for VALUE when it is free (SET NX, the Python-compatible API).",
			long: `It prints "taken" and exits 0, or prints the value that holds KEY and
exits 1. --ttl 0 makes a lock without expiry. Free such a lock with
"lock unlock KEY".`,
			example: progName + " --redis-url redis://localhost:6379 lock set gpu-3 job-1234 --ttl 10m",
			setup:   setupLockSet,
		},
		{
			name:    "lock unlock",
			args:    []string{"KEY"},
			short:   "Delete KEY whoever holds it (forced unlock).",
			long:    `It does not check the owner and does not wake clients waiting to acquire KEY; they notice at their next retry. Exit status is 0 whether or not KEY was held.`,
			example: progName + " --redis-url redis://localhost:6379 lock unlock gpu-3",
			setup:   setupLockUnlock,
		},
	}
}

func setupLockAcquire(fs *flag.FlagSet) runFunc {
	ttl := fs.Duration("ttl", 30*time.Second, "lock TTL; 0 means no expiry")
	wait := fs.Duration("wait", 10*time.Second, "how long to keep trying; 0 makes a single attempt")
	return func(ctx context.Context, e *env, c *command, args []string) error {
		key := args[0]
		switch {
		case *ttl < 0:
			return usageErrorf(c, "--ttl must not be negative")
		case *wait < 0:
			return usageErrorf(c, "--wait must not be negative")
		}
		l, cn, err := e.newLock(ctx, c)
		if err != nil {
			return err
		}
		defer cn.Close()

		var h *lock.Held
		start := time.Now()
		if *wait == 0 {
			h, err = l.TryAcquire(ctx, key, *ttl)
		} else {
			wctx, cancel := context.WithTimeout(ctx, *wait)
			h, err = l.Acquire(wctx, key, *ttl, lock.WithReleaseNotify())
			cancel()
		}
		if err != nil {
			if errors.Is(err, lock.ErrNotObtained) {
				if v, ok, verr := l.Value(ctx, key); verr == nil && ok {
					return fmt.Errorf("%w (held by token %q)", err, v)
				}
			}
			return err
		}
		expiry := "no expiry"
		if *ttl > 0 {
			expiry = "ttl " + ttl.String()
		}
		fmt.Fprintf(e.stdout, "acquired %q (%s) after %v\n", key, expiry, fmtDur(time.Since(start)))
		fmt.Fprintf(e.stdout, "token: %s\n", h.Token())
		fmt.Fprintf(e.stdout, "fence: %d\n", h.Fence())
		return nil
	}
}

func setupLockRelease(*flag.FlagSet) runFunc {
	return func(ctx context.Context, e *env, c *command, args []string) error {
		key, token := args[0], args[1]
		if token == "" {
			return usageErrorf(c, "TOKEN must not be empty")
		}
		l, cn, err := e.newLock(ctx, c)
		if err != nil {
			return err
		}
		defer cn.Close()

		v, held, err := l.Value(ctx, key)
		switch {
		case err != nil:
			return err
		case !held:
			fmt.Fprintf(e.stdout, "%q is already free: nothing to release\n", key)
			return nil
		case v != token:
			return fmt.Errorf("%w: %q is held by another owner (token %q)", lock.ErrNotHeld, key, v)
		}
		if err := l.ReleaseToken(ctx, key, token); err != nil {
			if errors.Is(err, lock.ErrNotHeld) {
				return fmt.Errorf("%w: %q was released or taken by another owner meanwhile", lock.ErrNotHeld, key)
			}
			return err
		}
		fmt.Fprintf(e.stdout, "released %q\n", key)
		return nil
	}
}

func setupLockStatus(fs *flag.FlagSet) runFunc {
	timeout := fs.Duration("timeout", 2*time.Minute, "the TTL a normal holder uses; a longer remaining TTL is reported as unavailable")
	return func(ctx context.Context, e *env, c *command, args []string) error {
		key := args[0]
		if *timeout < 0 {
			return usageErrorf(c, "--timeout must not be negative")
		}
		l, cn, err := e.newLock(ctx, c)
		if err != nil {
			return err
		}
		defer cn.Close()

		st, err := l.Status(ctx, key, *timeout)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "key:    %s (Redis key %s)\n", key, l.Key(key))
		fmt.Fprintf(e.stdout, "status: %s\n", st)
		if st == lock.Free {
			return nil
		}
		v, ok, err := l.Value(ctx, key)
		if err != nil {
			return err
		}
		if !ok { // expired between the two reads
			fmt.Fprintln(e.stdout, "value:  (expired just now)")
			return nil
		}
		fmt.Fprintf(e.stdout, "value:  %s\n", v)
		if st == lock.Permanent {
			fmt.Fprintln(e.stdout, "ttl:    none (no expiry)")
			return nil
		}
		d, err := cn.client.PTTL(ctx, l.Key(key)).Result()
		if err != nil {
			return fmt.Errorf("read TTL of %q: %w", key, err)
		}
		if d >= 0 {
			fmt.Fprintf(e.stdout, "ttl:    %v\n", d.Round(time.Millisecond))
		}
		return nil
	}
}

func setupLockSet(fs *flag.FlagSet) runFunc {
	ttl := fs.Duration("ttl", 30*time.Second, "lock TTL; 0 means no expiry")
	return func(ctx context.Context, e *env, c *command, args []string) error {
		key, value := args[0], args[1]
		if *ttl < 0 {
			return usageErrorf(c, "--ttl must not be negative")
		}
		l, cn, err := e.newLock(ctx, c)
		if err != nil {
			return err
		}
		defer cn.Close()

		ok, err := l.Lock(ctx, key, value, *ttl)
		if err != nil {
			return err
		}
		if ok {
			fmt.Fprintf(e.stdout, "taken: %q now holds %q\n", value, key)
			return nil
		}
		v, held, err := l.Value(ctx, key)
		switch {
		case err != nil:
			return err
		case held:
			fmt.Fprintf(e.stdout, "held by other: %q holds %q\n", v, key)
		default:
			fmt.Fprintf(e.stdout, "held by other: %q was held (it has expired since)\n", key)
		}
		return fmt.Errorf("%q not taken", key)
	}
}

func setupLockUnlock(*flag.FlagSet) runFunc {
	return func(ctx context.Context, e *env, c *command, args []string) error {
		key := args[0]
		l, cn, err := e.newLock(ctx, c)
		if err != nil {
			return err
		}
		defer cn.Close()

		existed, err := l.Unlock(ctx, key)
		if err != nil {
			return err
		}
		if existed {
			fmt.Fprintf(e.stdout, "unlocked %q\n", key)
		} else {
			fmt.Fprintf(e.stdout, "%q was not locked\n", key)
		}
		return nil
	}
}
