package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/batch"
	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/script"
)

// Lock is a namespace of lock keys on Redis. A key k lives at
// <prefix>|<suffix>:k and holds the caller's value, as in the Python
// redis-allocator, so both can lock the same keys.
//
// Every operation is one round trip. A Lock is safe for concurrent use.
type Lock struct {
	core
	prefix, suffix string
}

var _ Locker = (*Lock)(nil)

// New returns the lock namespace prefix (suffix DefaultSuffix unless
// WithSuffix is given) on client, which may be a plain, failover or cluster
// client. It returns ErrInvalidKey for an empty or oversized prefix.
func New(client redis.UniversalClient, prefix string, opts ...Option) (*Lock, error) {
	c, err := newConfig(DefaultSuffix, opts)
	if err != nil {
		return nil, err
	}
	if p := keys.NamespaceProblem(prefix, c.suffix, false); p != "" {
		return nil, fmt.Errorf("%w: %s", ErrInvalidKey, p)
	}
	b, err := newRedisBackend(client, c, func(k string) string { return keys.Lock(prefix, c.suffix, k) }, keys.Fence)
	if err != nil {
		return nil, err
	}
	return &Lock{core: core{b: b, eps: c.eps}, prefix: prefix, suffix: c.suffix}, nil
}

// Key returns the Redis key that holds the lock key (for inspection with
// other tools).
func (l *Lock) Key(key string) string { return keys.Lock(l.prefix, l.suffix, key) }

// redisBackend implements backend on Redis. key maps a caller's key to its
// Redis key, fence a Redis key to its fencing counter.
type redisBackend struct {
	c     redis.UniversalClient
	p     script.Processor // sends the commands of operations: c, or a batcher in front of it
	key   func(string) string
	fence func(string) string
}

// newRedisBackend returns the backend of a namespace on client, batching
// concurrent commands when c.batch > 0.
func newRedisBackend(client redis.UniversalClient, c config, key, fence func(string) string) (*redisBackend, error) {
	b := &redisBackend{c: client, p: client, key: key, fence: fence}
	if c.batch > 0 {
		bt, err := batch.New(client, c.batch)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
		b.p = bt
	}
	return b, nil
}

// set builds SET key value [PX ttl] [NX]. ttl ≤ 0 sets no expiry; a
// positive ttl has been checked to be at least a millisecond.
func set(key, value string, ttl time.Duration, nx bool) []any {
	a := []any{"set", key, value}
	if ttl > 0 {
		a = append(a, "px", max(ttl.Milliseconds(), 1))
	}
	if nx {
		a = append(a, "nx")
	}
	return a
}

func (r *redisBackend) lock(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	cmd := redis.NewBoolCmd(ctx, set(r.key(key), value, ttl, true)...)
	err := r.p.Process(ctx, cmd)
	return cmd.Val(), err
}

func (r *redisBackend) rlock(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	ms, _ := ttlMillis(ttl)
	n, err := runInt(ctx, r.p, rlockScript, []string{r.key(key)}, value, ms)
	return n == 1, err
}

func (r *redisBackend) update(ctx context.Context, key, value string, ttl time.Duration) error {
	return r.p.Process(ctx, redis.NewStatusCmd(ctx, set(r.key(key), value, ttl, false)...))
}

func (r *redisBackend) unlock(ctx context.Context, key string) (bool, error) {
	cmd := redis.NewIntCmd(ctx, "del", r.key(key))
	err := r.p.Process(ctx, cmd)
	return cmd.Val() > 0, err
}

func (r *redisBackend) exists(ctx context.Context, key string) (bool, error) {
	cmd := redis.NewIntCmd(ctx, "exists", r.key(key))
	err := r.p.Process(ctx, cmd)
	return cmd.Val() > 0, err
}

func (r *redisBackend) value(ctx context.Context, key string) (string, bool, error) {
	cmd := redis.NewStringCmd(ctx, "get", r.key(key))
	err := r.p.Process(ctx, cmd)
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	return cmd.Val(), err == nil, err
}

func (r *redisBackend) pttl(ctx context.Context, key string) (time.Duration, error) {
	cmd := redis.NewDurationCmd(ctx, time.Millisecond, "pttl", r.key(key))
	err := r.p.Process(ctx, cmd)
	return cmd.Val(), err
}

func (r *redisBackend) cond(ctx context.Context, key string, op Op, compare, eps float64, del bool, value string, ttl time.Duration) (int, error) {
	mode := "set"
	if del {
		mode = "del"
	}
	ms, _ := ttlMillis(ttl)
	n, err := runInt(ctx, r.p, condScript, []string{r.key(key)}, op.String(), formatFloat(compare), formatFloat(eps), mode, value, ms)
	return int(n), err
}

func (r *redisBackend) storeKey(key string) string { return r.key(key) }

func (r *redisBackend) acquire(ctx context.Context, sk, token string, ttl, await time.Duration) (int64, time.Duration, bool, error) {
	ms, _ := ttlMillis(ttl)
	var n int64
	var err error
	if await > 0 {
		n, err = runInt(ctx, r.p, acquireScript, []string{sk, r.fence(sk), keys.Waiters(sk)}, token, ms, awaitMillis(await))
	} else {
		n, err = runInt(ctx, r.p, acquireScript, []string{sk, r.fence(sk)}, token, ms)
	}
	switch {
	case err != nil:
		return 0, 0, false, err
	case n > 0:
		return n, 0, true, nil
	case n == -1:
		return 0, -1, false, nil // held without expiry
	case n < -1:
		return 0, time.Duration(-n-2) * time.Millisecond, false, nil
	}
	return 0, 0, false, fmt.Errorf("%w: acquire returned %d", script.ErrReply, n)
}

func (r *redisBackend) refresh(ctx context.Context, sk, token string, ttl time.Duration) (bool, error) {
	ms, _ := ttlMillis(ttl)
	n, err := runInt(ctx, r.p, refreshScript, []string{sk}, token, ms)
	return n == 1, err
}

func (r *redisBackend) release(ctx context.Context, sk, token string) (bool, error) {
	n, err := runInt(ctx, r.p, releaseScript, []string{sk, keys.Waiters(sk)}, token, keys.Released(sk))
	return n == 1, err
}

func (r *redisBackend) subscribe(ctx context.Context, sk string) (waiter, error) {
	ps := r.c.Subscribe(ctx, keys.Released(sk))
	if _, err := ps.Receive(ctx); err != nil { // wait for the confirmation
		_ = ps.Close()
		return nil, err
	}
	return &redisWaiter{ps: ps, ch: ps.Channel()}, nil
}

// awaitSlack is added to the wait a client announces with the waiters key:
// the client starts its timer only when the reply arrives, after the key's
// TTL started, and a release in the gap would otherwise go unannounced.
const awaitSlack = 250 * time.Millisecond

// awaitMillis returns the TTL of the waiters key for a client that waits at
// most d, in whole milliseconds.
func awaitMillis(d time.Duration) int64 {
	return (min(d, maxAwait) + awaitSlack + time.Millisecond - 1).Milliseconds()
}

// maxAwait caps the announced wait, so that a retry delay near the largest
// Duration (waiting only for the notification) cannot overflow.
const maxAwait = 365 * 24 * time.Hour

// redisWaiter waits for messages on a release channel.
type redisWaiter struct {
	ps *redis.PubSub
	ch <-chan *redis.Message
}

func (w *redisWaiter) wait(ctx context.Context, d time.Duration) error {
	_, err := waitOn(ctx, d, w.ch)
	return err
}

func (w *redisWaiter) close() error { return w.ps.Close() }

// runInt runs s and decodes an integer reply.
func runInt(ctx context.Context, c script.Processor, s *script.Script, keys []string, args ...any) (int64, error) {
	v, err := s.Run(ctx, c, keys, args...).Result()
	if err != nil {
		return 0, err
	}
	return script.Int64(v)
}
