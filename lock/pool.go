package lock

import (
	"context"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/script"
)

// Pool is a named set of lock keys (the seed's RedisLockPool and
// ThreadLockPool): a namespace whose members can be listed, counted and
// checked together, plus every Locker method on those keys.
//
// On Redis, every key of a pool — the member set and each member's lock key
// {<prefix>|<suffix>}:<key> — shares one hash tag, so each operation,
// including the status of all members, is one round trip that also works on
// Redis Cluster. The hash tag makes the pool's lock keys differ from the
// Python RedisLockPool's (<prefix>|<suffix>:<key>). Because the keys share
// a slot, a pool has one fencing counter: fences grow across all its members,
// not only per key.
//
// A Pool is safe for concurrent use.
type Pool struct {
	core
	p poolBackend
}

var _ Locker = (*Pool)(nil)

// MemberStatus is the lock state of one pool member.
type MemberStatus struct {
	Key    string
	Locked bool
}

// poolBackend is the membership part of a pool store. Keys are validated.
type poolBackend interface {
	extend(ctx context.Context, ks []string) error
	shrink(ctx context.Context, ks []string) error
	assign(ctx context.Context, ks []string) error
	clear(ctx context.Context) error
	members(ctx context.Context) ([]string, error)
	contains(ctx context.Context, key string) (bool, error)
	size(ctx context.Context) (int, error)
	statuses(ctx context.Context) ([]MemberStatus, error)
	health(ctx context.Context) (locked, free int, err error)
}

// NewPool returns the lock pool prefix on client (suffix DefaultPoolSuffix
// unless WithSuffix is given). Prefix and suffix may not contain braces,
// since they form the pool's hash tag.
func NewPool(client redis.UniversalClient, prefix string, opts ...Option) (*Pool, error) {
	c, err := newConfig(DefaultPoolSuffix, opts)
	if err != nil {
		return nil, err
	}
	if p := keys.NamespaceProblem(prefix, c.suffix, true); p != "" {
		return nil, fmt.Errorf("%w: %s", ErrInvalidKey, p)
	}
	lockPrefix := keys.PoolLock(prefix, c.suffix, "")
	poolFence := keys.PoolFence(prefix, c.suffix)
	b, err := newRedisBackend(client, c, keys.Tag(prefix, c.suffix),
		func(k string) string { return lockPrefix + k },
		func(string) string { return poolFence })
	if err != nil {
		return nil, err
	}
	p := &redisPool{c: client, set: keys.PoolSet(prefix, c.suffix), lockPrefix: lockPrefix}
	return &Pool{core: core{b: b, eps: c.eps}, p: p}, nil
}

// Extend adds keys to the pool. One round trip.
func (p *Pool) Extend(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	if err := checkKeys(keys); err != nil {
		return err
	}
	return wrapErr(p.p.extend(ctx, keys), "pool extend", keys[0])
}

// Shrink removes keys from the pool; their locks are left as they are. One
// round trip.
func (p *Pool) Shrink(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	if err := checkKeys(keys); err != nil {
		return err
	}
	return wrapErr(p.p.shrink(ctx, keys), "pool shrink", keys[0])
}

// Assign replaces the members of the pool with keys, atomically; no keys
// empties it. One round trip.
func (p *Pool) Assign(ctx context.Context, keys ...string) error {
	if err := checkKeys(keys); err != nil {
		return err
	}
	if err := p.p.assign(ctx, keys); err != nil {
		return fmt.Errorf("lock: pool assign: %w", err)
	}
	return nil
}

// Clear empties the pool; the members' locks are left as they are. One round
// trip.
func (p *Pool) Clear(ctx context.Context) error {
	if err := p.p.clear(ctx); err != nil {
		return fmt.Errorf("lock: pool clear: %w", err)
	}
	return nil
}

// Keys returns the members of the pool, sorted. One round trip.
func (p *Pool) Keys(ctx context.Context) ([]string, error) {
	ks, err := p.p.members(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock: pool keys: %w", err)
	}
	slices.Sort(ks)
	return ks, nil
}

// Contains reports whether key is a member. One round trip.
func (p *Pool) Contains(ctx context.Context, key string) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	ok, err := p.p.contains(ctx, key)
	return ok, wrapErr(err, "pool contains", key)
}

// Len returns the number of members. One round trip.
func (p *Pool) Len(ctx context.Context) (int, error) {
	n, err := p.p.size(ctx)
	if err != nil {
		return 0, fmt.Errorf("lock: pool len: %w", err)
	}
	return n, nil
}

// Statuses returns every member with whether it is locked, sorted by key,
// from one atomic snapshot in one round trip.
func (p *Pool) Statuses(ctx context.Context) ([]MemberStatus, error) {
	st, err := p.p.statuses(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock: pool statuses: %w", err)
	}
	slices.SortFunc(st, func(a, b MemberStatus) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	return st, nil
}

// HealthCheck returns how many members are locked and how many are free,
// from one atomic snapshot in one round trip.
func (p *Pool) HealthCheck(ctx context.Context) (locked, free int, err error) {
	locked, free, err = p.p.health(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("lock: pool health check: %w", err)
	}
	return locked, free, nil
}

func checkKeys(ks []string) error {
	for _, k := range ks {
		if err := checkKey(k); err != nil {
			return err
		}
	}
	return nil
}

// redisPool keeps the members in a set sharing the pool's hash tag.
type redisPool struct {
	c          redis.UniversalClient
	set        string
	lockPrefix string
}

func toArgs(ks []string) []any {
	args := make([]any, len(ks))
	for i, k := range ks {
		args[i] = k
	}
	return args
}

func (r *redisPool) extend(ctx context.Context, ks []string) error {
	return r.c.SAdd(ctx, r.set, toArgs(ks)...).Err()
}

func (r *redisPool) shrink(ctx context.Context, ks []string) error {
	return r.c.SRem(ctx, r.set, toArgs(ks)...).Err()
}

func (r *redisPool) assign(ctx context.Context, ks []string) error {
	return poolAssignScript.Run(ctx, r.c, []string{r.set}, toArgs(ks)...).Err()
}

func (r *redisPool) clear(ctx context.Context) error { return r.c.Del(ctx, r.set).Err() }

func (r *redisPool) members(ctx context.Context) ([]string, error) {
	return r.c.SMembers(ctx, r.set).Result()
}

func (r *redisPool) contains(ctx context.Context, key string) (bool, error) {
	return r.c.SIsMember(ctx, r.set, key).Result()
}

func (r *redisPool) size(ctx context.Context) (int, error) {
	n, err := r.c.SCard(ctx, r.set).Result()
	return int(n), err
}

func (r *redisPool) statuses(ctx context.Context) ([]MemberStatus, error) {
	v, err := poolStatusScript.Run(ctx, r.c, []string{r.set}, r.lockPrefix, "list").Result()
	if err != nil {
		return nil, err
	}
	arr, ok := v.([]any)
	if !ok || len(arr)%2 != 0 {
		return nil, fmt.Errorf("%w: pool status reply %T", script.ErrReply, v)
	}
	out := make([]MemberStatus, 0, len(arr)/2)
	for i := 0; i < len(arr); i += 2 {
		k, ok := arr[i].(string)
		if !ok {
			return nil, fmt.Errorf("%w: pool member %T", script.ErrReply, arr[i])
		}
		flag, err := script.Int64(arr[i+1])
		if err != nil {
			return nil, err
		}
		out = append(out, MemberStatus{Key: k, Locked: flag == 1})
	}
	return out, nil
}

func (r *redisPool) health(ctx context.Context) (int, int, error) {
	v, err := poolStatusScript.Run(ctx, r.c, []string{r.set}, r.lockPrefix, "counts").Result()
	if err != nil {
		return 0, 0, err
	}
	n, err := script.Ints(v, 2)
	if err != nil {
		return 0, 0, err
	}
	return int(n[0]), int(n[1]), nil
}
