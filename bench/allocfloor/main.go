// Command allocfloor compares the allocator's malloc and free scripts with
// "flat" scripts that run only the Redis commands of their common path (no
// shared prelude, no function calls): the server time a script keeping the
// allocator's data model atomic cannot go below on a given machine. It
// reports commandstats µs per call of each, on one private redis-server,
// on a pool of 10 000 members. See the top-level README, "Allocator".
//
// Usage (from the bench module): go run ./allocfloor [--rounds 3] [--calls 5000]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/bench"
)

// The flat scripts take the pool's keys in the order of internal/keys
// Pool.Scripts and mirror the common paths of allocator/malloc.lua and
// allocator/free.lua: the same commands on the same structures.
const flatPrelude = `
local K_ITEMS, K_FREE, K_TIMERS, K_HOLDERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_SEQ, K_FENCE, K_WAITQ = KEYS[5], KEYS[6], KEYS[8]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

const flatMalloc = flatPrelude + `
local due = redis.call('ZRANGEBYSCORE', K_TIMERS, '(0', NOW, 'LIMIT', 0, 1)
local r = redis.call('ZPOPMIN', K_FREE)
if #r == 0 then return {0} end
local name = string.sub(r[1], 13)
local fence = redis.call('INCR', K_FENCE)
local deadline = NOW + tonumber(ARGV[3])
redis.call('ZADD', K_TIMERS, deadline, 'L' .. name)
redis.call('HSET', K_HOLDERS, name, string.format('%.0f', fence) .. ' ' .. ARGV[4] .. ' - - ' .. string.format('%.0f', deadline))
return {1, deadline, fence, name}
`

const flatFree = flatPrelude + `
local name, token = ARGV[2], ARGV[3]
local h = redis.call('HGET', K_HOLDERS, name)
if not h then return 0 end
local f, tk, sess, waiter, d = string.match(h, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
if tk ~= token then return 0 end
redis.call('HDEL', K_HOLDERS, name)
redis.call('ZREM', K_TIMERS, 'L' .. name)
local v = redis.call('HGET', K_ITEMS, name)
if v then
  local p, s, g, e, q = string.match(v, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  if #redis.call('ZRANGE', K_WAITQ, 0, 0) == 0 then
    local seq = string.format('%012x', redis.call('INCR', K_SEQ))
    redis.call('HSET', K_ITEMS, name, p .. ' ' .. seq .. ' ' .. g .. ' ' .. e .. ' ' .. q)
    redis.call('ZADD', K_FREE, -tonumber(p), seq .. name)
  end
end
return 1
`

func main() {
	rounds := flag.Int("rounds", 3, "rounds of each measurement")
	calls := flag.Int("calls", 5000, "malloc calls (then as many frees) per round")
	flag.Parse()
	if err := run(*rounds, *calls); err != nil {
		fmt.Fprintln(os.Stderr, "allocfloor:", err)
		os.Exit(1)
	}
}

func run(rounds, calls int) error {
	ctx := context.Background()
	srv, err := bench.StartRedisServer(ctx, "redis-server")
	if err != nil {
		return err
	}
	defer srv.Stop()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	a, err := allocator.New(c, "allocfloor", allocator.WithBatching(0))
	if err != nil {
		return err
	}
	defer a.Close()
	names := make([]string, 10000)
	for i := range names {
		names[i] = fmt.Sprintf("resource-%07d", i)
	}
	if _, err := a.Extend(ctx, names); err != nil {
		return err
	}
	var ks []string
	for _, part := range []string{"items", "free", "timers", "holders", "seq", "fence", "sessl", "waitq", "waitd", "granted", "perm", "cancelled"} {
		ks = append(ks, "{allocfloor|allocator}|"+part)
	}
	fm, ff := redis.NewScript(flatMalloc), redis.NewScript(flatFree)
	for _, s := range []*redis.Script{fm, ff} {
		if err := s.Load(ctx, c).Err(); err != nil {
			return err
		}
	}
	fmt.Printf("allocfloor %s: commandstats µs per EVALSHA, pool of 10 000, %d calls per round\n", time.Now().UTC().Format(time.RFC3339), calls)
	fmt.Printf("%-28s %-30s %s\n", "", "malloc (per round)", "free (per round)")
	for round := range rounds {
		_ = round
		// The allocator's own scripts, through the library.
		var m, f []string
		ls := make([]*allocator.Lease, 0, calls)
		reset(ctx, c)
		for range calls {
			l, err := a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))
			if err != nil {
				return err
			}
			ls = append(ls, l)
		}
		m = append(m, usec(ctx, c))
		reset(ctx, c)
		for _, l := range ls {
			if err := l.Free(ctx); err != nil {
				return err
			}
		}
		f = append(f, usec(ctx, c))
		fmt.Printf("%-28s %-30s %s\n", "allocator scripts", strings.Join(m, " "), strings.Join(f, " "))
		// The flat scripts, on the same pool.
		got := make([]string, 0, calls)
		reset(ctx, c)
		for range calls {
			v, err := fm.EvalSha(ctx, c, ks, "", 16, 60000, "flat-token", "-", 1, 0).Slice()
			if err != nil {
				return err
			}
			got = append(got, v[3].(string))
		}
		m = []string{usec(ctx, c)}
		reset(ctx, c)
		for _, k := range got {
			if err := ff.EvalSha(ctx, c, ks, "", k, "flat-token").Err(); err != nil {
				return err
			}
		}
		f = []string{usec(ctx, c)}
		fmt.Printf("%-28s %-30s %s\n", "flat: common-path commands", strings.Join(m, " "), strings.Join(f, " "))
	}
	return nil
}

func reset(ctx context.Context, c *redis.Client) { c.ConfigResetStat(ctx) }

func usec(ctx context.Context, c *redis.Client) string {
	for _, l := range strings.Split(c.Info(ctx, "commandstats").Val(), "\n") {
		if strings.HasPrefix(l, "cmdstat_evalsha:") {
			for _, f := range strings.Split(strings.TrimSpace(l), ",") {
				if v, ok := strings.CutPrefix(f, "usec_per_call="); ok {
					return v
				}
			}
		}
	}
	return "?"
}
