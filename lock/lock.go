package lock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	b, err := newRedisBackend(client, c, keys.Namespace(prefix, c.suffix), func(k string) string { return keys.Lock(prefix, c.suffix, k) }, keys.Fence)
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
	grace time.Duration // the fencing counter outlives a grant's TTL by this much
	d     *dispatcher   // grants to this value's waiters
}

// newRedisBackend returns the backend of the namespace whose keys start
// with namespace on client, batching concurrent commands when c.batch > 0.
func newRedisBackend(client redis.UniversalClient, c config, namespace string, key, fence func(string) string) (*redisBackend, error) {
	b := &redisBackend{c: client, p: client, key: key, fence: fence, grace: c.grace, d: newDispatcher(client, namespace)}
	b.d.passOn = func(ctx context.Context, sk, token, drop string) {
		if _, err := b.runRelease(ctx, sk, token, "", drop); err != nil && drop != "" {
			b.d.dropFailed(sk)
		}
	}
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

func (r *redisBackend) acquire(ctx context.Context, sk string, a *attempt) (int64, time.Duration, bool, error) {
	ms, _ := ttlMillis(a.ttl)
	life := (max(a.ttl, 0) + r.grace).Milliseconds()
	l, _ := a.line.(*redisLine)
	// Keys and arguments beyond the first ones only when used: each costs
	// the server time (see acquire.lua).
	ks := []string{sk, r.fence(sk), keys.Grant(sk)}
	args := []any{a.token, ms, life, a.grant, a.from}
	sent := time.Now()
	var wait int64
	switch {
	case l != nil:
		// The entry lasts at least as long as this caller waits, and as
		// long as it surely lasted already (other callers may rely on it).
		wait = max(waitMillis(a.wait), l.lasts(sent).Milliseconds())
		grantTTL := a.ttl
		if grantTTL <= 0 {
			grantTTL = provisionalTTL
		}
		at := r.d.announcing(l, sent)
		data := strconv.FormatInt(grantTTL.Milliseconds(), 10) + " " + strconv.FormatInt(at, 10) + " " + r.d.channel
		ks = append(ks, keys.Queue(sk), keys.Queued(sk))
		args = append(args, l.wl.id, wait, data)
	case a.from != "":
	case a.grant != "":
		args = args[:4]
	default:
		ks, args = ks[:2], args[:3]
	}
	v, err := acquireScript.Run(ctx, r.p, ks, args...).Result()
	if err != nil && l != nil && !notSent(err) {
		r.d.unknownWrite(l)
	}
	var n int64
	if s, ok := v.(string); ok && err == nil && l != nil {
		// The key was handed to this process, whose message may be lost:
		// "<fence> <pttl + 2>", with the entry kept as for any wait.
		fs, rest, _ := strings.Cut(s, " ")
		fence, err1 := strconv.ParseInt(fs, 10, 64)
		held, err2 := strconv.ParseInt(rest, 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, false, fmt.Errorf("%w: acquire returned %q", script.ErrReply, s)
		}
		r.d.discovered(l, fence)
		n = -held
	} else if err == nil {
		n, err = script.Int64(v)
	}
	switch {
	case err != nil:
		return 0, 0, false, err
	case n > 0:
		return n, 0, true, nil
	case n == 0:
		return 0, 0, false, fmt.Errorf("%w: acquire returned %d", script.ErrReply, n)
	}
	remaining := time.Duration(-1) // -1: held without expiry
	if n < -1 {
		remaining = time.Duration(-n-2) * time.Millisecond
	}
	if l != nil {
		r.d.announced(l, sent, time.Duration(wait)*time.Millisecond, remaining)
	}
	return 0, remaining, false, nil
}

func (r *redisBackend) refresh(ctx context.Context, sk, token string, ttl time.Duration) (bool, error) {
	ms, _ := ttlMillis(ttl)
	n, err := runInt(ctx, r.p, refreshScript, []string{sk}, token, ms)
	return n == 1, err
}

func (r *redisBackend) release(ctx context.Context, sk, token string, o releaseOpts) (bool, error) {
	drop := r.d.dropWith(sk)
	sent := time.Now()
	ok, err := r.runRelease(ctx, sk, token, o.grant, drop)
	if ok {
		r.d.released(sk, o.fence, sent)
	}
	if err != nil && drop != "" {
		r.d.dropFailed(sk)
	}
	if err != nil || !ok {
		r.d.releaseFailed(sk)
	}
	return ok, err
}

// runRelease runs release.lua (see there) and hands a key it granted to
// this process's own waiters.
func (r *redisBackend) runRelease(ctx context.Context, sk, token, grantID, drop string) (bool, error) {
	ks := []string{sk, keys.Queue(sk), keys.Queued(sk), r.fence(sk)}
	args := []any{token, r.grace.Milliseconds(), r.d.ownChannel(), drop, grantID}
	switch { // arguments beyond the first ones only when used
	case grantID != "":
		ks = append(ks, keys.Grant(sk))
	case drop != "":
		args = args[:4]
	case args[2] != "":
		args = args[:3]
	default:
		args = args[:2]
	}
	v, err := releaseScript.Run(ctx, r.p, ks, args...).Result()
	if err != nil {
		return false, err
	}
	if msg, ok := v.(string); ok { // handed to our own process
		return true, r.d.deliverMessage(msg)
	}
	n, err := script.Int64(v)
	return n == 1, err
}

func (r *redisBackend) join(ctx context.Context, sk string) (line, error) { return r.d.join(ctx, sk) }

func (r *redisBackend) joinable() bool { return r.d.live.Load() }

// waitSlack is added to the wait a caller announces in the queue: the
// caller starts its timer only when the reply arrives, after the entry's
// deadline started, and a grant in the gap must still find the entry.
const waitSlack = 250 * time.Millisecond

// waitMillis returns how long a queue entry of a caller that waits at most
// d lasts, in whole milliseconds; 0 for d ≤ 0 (no entry).
func waitMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return (min(d, maxWait) + waitSlack + time.Millisecond - 1).Milliseconds()
}

// maxWait caps the announced wait, so that a retry delay near the largest
// Duration (waiting only for the grant) cannot overflow.
const maxWait = 365 * 24 * time.Hour

// runInt runs s and decodes an integer reply.
func runInt(ctx context.Context, c script.Processor, s *script.Script, keys []string, args ...any) (int64, error) {
	v, err := s.Run(ctx, c, keys, args...).Result()
	if err != nil {
		return 0, err
	}
	return script.Int64(v)
}
