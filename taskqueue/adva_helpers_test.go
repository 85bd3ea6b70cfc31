package taskqueue_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// advaResetDialer breaks the connection that carries the first write
// matching its predicate once armed: the command reaches Redis and runs,
// then the reply is lost (io.EOF), as after a connection reset or a CLIENT
// KILL at the wrong moment. go-redis then resends the command (MaxRetries).
type advaResetDialer struct {
	armed atomic.Bool
	match func([]byte) bool
	fired chan struct{}
	once  sync.Once
}

func newResetDialer(match func([]byte) bool) *advaResetDialer {
	return &advaResetDialer{match: match, fired: make(chan struct{})}
}

func (d *advaResetDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &advaResetConn{Conn: c, d: d}, nil
}

func (d *advaResetDialer) didFire() bool {
	select {
	case <-d.fired:
		return true
	default:
		return false
	}
}

type advaResetConn struct {
	net.Conn
	d     *advaResetDialer
	reset atomic.Bool
}

func (c *advaResetConn) Write(b []byte) (int, error) {
	if c.d.armed.Load() && c.d.match(b) && c.d.armed.CompareAndSwap(true, false) {
		c.reset.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *advaResetConn) Read(b []byte) (int, error) {
	if c.reset.Load() {
		time.Sleep(50 * time.Millisecond) // Redis runs the command meanwhile
		c.d.once.Do(func() { close(c.d.fired) })
		_ = c.Conn.Close()
		return 0, io.EOF
	}
	return c.Conn.Read(b)
}

// hasAll matches a write holding every marker.
func hasAll(markers ...string) func([]byte) bool {
	return func(b []byte) bool {
		for _, m := range markers {
			if !bytes.Contains(b, []byte(m)) {
				return false
			}
		}
		return true
	}
}

// advaDelayHook delays the commands a predicate selects, while armed.
type advaDelayHook struct {
	armed atomic.Bool
	delay time.Duration
	match func(cmd redis.Cmder) bool
	hits  atomic.Int64
}

func (h *advaDelayHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *advaDelayHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.Load() && h.match(cmd) {
			h.hits.Add(1)
			time.Sleep(h.delay)
		}
		return next(ctx, cmd)
	}
}
func (h *advaDelayHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.armed.Load() {
			for _, c := range cmds {
				if h.match(c) {
					h.hits.Add(1)
					time.Sleep(h.delay)
					break
				}
			}
		}
		return next(ctx, cmds)
	}
}

// isScript reports whether cmd runs the named script of the queue.
func isScript(cmd redis.Cmder, name string) bool {
	a := cmd.Args()
	if len(a) < 2 {
		return false
	}
	switch strings.ToLower(fmt.Sprint(a[0])) {
	case "evalsha":
		return a[1] == taskqueue.ScriptHash(name)
	case "eval":
		s, _ := a[1].(string)
		return strings.Contains(s, "-- "+name+":")
	}
	return false
}

// waitFor polls cond every few ms until it holds or d passes.
func advaWaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// registered reports whether the Queue value w is among the waiters told
// about task id (field r).
func advaRegistered(ctx context.Context, q, w *taskqueue.Queue, id string) bool {
	r, _ := q.Raw().HGet(ctx, taskqueue.TaskKey(q, id), "r").Result()
	return strings.Contains(" "+r+" ", " "+taskqueue.ID(w)+" ")
}

// checkScript checks the queue's invariants in one atomic step (so it may
// run while the queue is busy). It returns a list of problems.
//
//   - every task in a ready (q), delayed (d), active (a) or dead (x) set of
//     a name exists (or is merely "gone": its record expired), has that
//     name, and the state its set implies (q, d: pending; a: active with a
//     token and an owner; x: dead);
//   - every task record with a state is in exactly the sets its state
//     implies: pending in exactly one of q|d, active in a, dead in x, other
//     terminal states in none.
var checkScript = redis.NewScript(`
local T = ARGV[1]
local problems = {}
local function bad(s) problems[#problems + 1] = s end
local names = redis.call('SMEMBERS', T .. '|names')
local where = {}  -- id -> list of "kind|name"
for _, name in ipairs(names) do
  for _, kind in ipairs({'q', 'd', 'a', 'x'}) do
    for _, id in ipairs(redis.call('ZRANGE', T .. '|' .. kind .. '|' .. name, 0, -1)) do
      where[id] = where[id] or {}
      table.insert(where[id], kind .. '|' .. name)
      local f = redis.call('HMGET', T .. '|t|' .. id, 's', 'n', 'tk', 'o')
      if f[1] then
        if f[2] ~= name then bad(kind .. '|' .. name .. ' holds ' .. id .. ' named ' .. tostring(f[2])) end
        local want = ({q = 'pending', d = 'pending', a = 'active', x = 'dead'})[kind]
        if f[1] ~= want then bad(kind .. '|' .. name .. ' holds ' .. id .. ' in state ' .. f[1]) end
        if kind == 'a' and (not f[3] or f[3] == '' or not f[4] or f[4] == '') then
          bad('active ' .. id .. ' without token/owner') end
      elseif kind == 'x' or kind == 'a' or kind == 'd' then
        bad(kind .. '|' .. name .. ' holds ' .. id .. ' whose record is gone')
      end
    end
  end
end
local tasks = redis.call('KEYS', T .. '|t|*')
for _, k in ipairs(tasks) do
  local id = string.sub(k, #T + 4)
  local f = redis.call('HMGET', k, 's', 'n')
  local st, name = f[1], f[2]
  local w = where[id] or {}
  local set = {}
  for _, e in ipairs(w) do set[e] = true end
  local function has(kind) return set[kind .. '|' .. tostring(name)] == true end
  if #w ~= (function() local c = 0; for _ in pairs(set) do c = c + 1 end; return c end)() then
    bad(id .. ' listed twice: ' .. table.concat(w, ','))
  end
  if not st then
    bad(id .. ' record without a state')
  elseif st == 'pending' then
    local n = (has('q') and 1 or 0) + (has('d') and 1 or 0)
    if n ~= 1 or has('a') or has('x') or #w ~= 1 then bad('pending ' .. id .. ' in ' .. table.concat(w, ',')) end
  elseif st == 'active' then
    if not has('a') or #w ~= 1 then bad('active ' .. id .. ' in ' .. table.concat(w, ',')) end
  elseif st == 'dead' then
    if not has('x') or #w ~= 1 then bad('dead ' .. id .. ' in ' .. table.concat(w, ',')) end
  else
    if #w ~= 0 then bad(st .. ' ' .. id .. ' in ' .. table.concat(w, ',')) end
  end
end
return problems
`)

// invariants runs checkScript on q's namespace.
func invariants(ctx context.Context, q *taskqueue.Queue) ([]string, error) {
	tag := taskqueue.Tag(q)
	v, err := checkScript.Run(ctx, q.Raw(), []string{tag + "|seq"}, tag).StringSlice()
	sort.Strings(v)
	return v, err
}
