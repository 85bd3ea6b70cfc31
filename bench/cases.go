package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/bsm/redislock"
	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/lock"
)

// Parameters shared by every case.
const (
	numKeys  = 4096        // keys cycled through: op i uses key i mod numKeys
	lockTTL  = time.Minute // TTL of every lock taken
	PoolSize = 64          // go-redis pool size: more than the largest goroutine count
)

// floorScript is the no-op script of the floor case.
var floorScript = redis.NewScript("return 1")

// env is what the cases share: one client, one server, one key set.
type env struct {
	client *redis.Client
	prefix string // namespace of every key this run touches
	ours   *lock.Lock
	plain  *lock.Lock // ours with batching off (WithBatching(0)), same keys
	bsm    *redislock.Client
	keys   []string // caller keys given to redisallocator
	rkeys  []string // the Redis keys they map to, given to the floor and bsm/redislock
	value  string   // value of the plain Lock case, as long as a TryAcquire token
}

// newEnv builds the shared state on client. The namespace is random, so runs
// against a shared server do not collide.
func newEnv(client *redis.Client) (*env, error) {
	prefix := "lockbench-" + rand.Text()[:8]
	ours, err := lock.New(client, prefix)
	if err != nil {
		return nil, err
	}
	plain, err := lock.New(client, prefix, lock.WithBatching(0))
	if err != nil {
		return nil, err
	}
	e := &env{
		client: client,
		prefix: prefix,
		ours:   ours,
		plain:  plain,
		bsm:    redislock.New(client),
		keys:   make([]string, numKeys),
		rkeys:  make([]string, numKeys),
		value:  rand.Text(),
	}
	for i := range numKeys {
		e.keys[i] = "k" + strconv.Itoa(i)
		e.rkeys[i] = ours.Key(e.keys[i])
	}
	return e, nil
}

// cleanup deletes every key of the run's namespace (lock keys and fencing
// counters), which matters only on a server given with --redis-url.
func (e *env) cleanup(ctx context.Context) error {
	return deleteNamespace(ctx, e.client, e.prefix)
}

// deleteNamespace deletes every key of the lock namespace prefix: the lock
// keys (<prefix>|...) and their hash-tagged siblings such as fencing
// counters and waiters keys ({<prefix>|...}...).
func deleteNamespace(ctx context.Context, client *redis.Client, prefix string) error {
	for _, pattern := range []string{prefix + "|*", "{" + prefix + "|*"} {
		iter := client.Scan(ctx, 0, pattern, 1000).Iterator()
		var batch []string
		for iter.Next(ctx) {
			batch = append(batch, iter.Val())
			if len(batch) == 1000 {
				if err := client.Unlink(ctx, batch...).Err(); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		if len(batch) > 0 {
			if err := client.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// opFunc runs one operation on key index i. busy reports a lock found taken
// (possible only when a goroutine stalls for numKeys operations); it is
// counted, not treated as an error.
type opFunc func(ctx context.Context, i int) (busy bool, err error)

// impl is one compared case.
type impl struct {
	id   string // short name, used in benchmark names and JSON
	name string // what the tables print
	op   func(e *env) opFunc
	// sent are the commands the case sends itself. Commands that a script
	// runs also show in INFO commandstats, but their time is already part
	// of the EVALSHA's, so only these count towards the Redis time per op.
	sent []string
}

// scriptCommands are what go-redis sends to run a script: EVALSHA, and EVAL
// after a NOSCRIPT reply.
var scriptCommands = []string{"evalsha", "eval"}

// impls are the compared cases, in their forward order.
var impls = []impl{
	{id: "floor", name: "floor: EVALSHA return 1", op: floorOp, sent: scriptCommands},
	{id: "redisallocator", name: "redisallocator TryAcquire+Release", op: oursOp, sent: scriptCommands},
	{id: "bsm-redislock", name: "bsm/redislock Obtain+Release", op: bsmOp, sent: scriptCommands},
	{id: "redisallocator-unbatched", name: "redisallocator, WithBatching(0) TryAcquire+Release", op: unbatchedOp, sent: scriptCommands},
	{id: "redisallocator-lockunlock", name: "redisallocator Lock+Unlock", op: lockUnlockOp, sent: []string{"set", "del"}},
}

func implByID(id string) impl {
	for _, im := range impls {
		if im.id == id {
			return im
		}
	}
	panic("unknown case " + id)
}

func floorOp(e *env) opFunc {
	return func(ctx context.Context, i int) (bool, error) {
		n, err := floorScript.Run(ctx, e.client, e.rkeys[i:i+1]).Int64()
		if err == nil && n != 1 {
			err = fmt.Errorf("floor script returned %d", n)
		}
		return false, err
	}
}

func oursOp(e *env) opFunc { return acquireReleaseOp(e.ours, e.keys) }

func unbatchedOp(e *env) opFunc { return acquireReleaseOp(e.plain, e.keys) }

func acquireReleaseOp(l *lock.Lock, keys []string) opFunc {
	return func(ctx context.Context, i int) (bool, error) {
		h, err := l.TryAcquire(ctx, keys[i], lockTTL)
		if errors.Is(err, lock.ErrNotObtained) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return false, h.Release(ctx)
	}
}

func bsmOp(e *env) opFunc {
	return func(ctx context.Context, i int) (bool, error) {
		l, err := e.bsm.Obtain(ctx, e.rkeys[i], lockTTL, nil)
		if errors.Is(err, redislock.ErrNotObtained) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return false, l.Release(ctx)
	}
}

func lockUnlockOp(e *env) opFunc {
	return func(ctx context.Context, i int) (bool, error) {
		ok, err := e.ours.Lock(ctx, e.keys[i], e.value, lockTTL)
		if err != nil {
			return false, err
		}
		if !ok {
			return true, nil
		}
		ok, err = e.ours.Unlock(ctx, e.keys[i])
		if err == nil && !ok {
			err = fmt.Errorf("unlock %q: key was not held", e.keys[i])
		}
		return false, err
	}
}

// NewClient returns the one client that every case shares: the server at url
// (redis://host:port/db) with a pool of at least PoolSize connections.
func NewClient(url string) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis URL: %w", err)
	}
	opt.PoolSize = max(opt.PoolSize, PoolSize)
	return redis.NewClient(opt), nil
}
