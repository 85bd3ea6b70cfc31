package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
)

// AllocConfig sets what RunAlloc measures. DefaultAllocConfig returns the
// settings of a full run.
type AllocConfig struct {
	// Malloc + free pairs.
	Duration   time.Duration // time of each run
	Rounds     int           // rounds; the case order alternates each round
	Goroutines []int         // goroutine counts, each at most PoolSize
	PoolSizes  []int         // pool sizes (also of the script passes)
	FillChunk  int           // members per Extend call when a pool is filled

	// ScriptRounds is the number of rounds of the malloc-only and free-only
	// script passes.
	ScriptRounds int
	// ScriptLeases is how many leases one script pass takes and frees (on
	// a smaller pool, it takes them all and repeats).
	ScriptLeases int

	// MallocWait hand-offs on a pool of one member.
	Waiters      []int         // waiter counts; a run has waiters+1 goroutines
	WaitDuration time.Duration // timed part of each run
	WaitWarmup   time.Duration // untimed hand-offs before it
	WaitRounds   int
	Hold         time.Duration // how long each holder keeps the lease

	// GC: pools with expired leases.
	GCPools   []int // pool sizes
	GCExpired []int // expired leases per GC call (each at most the pool size)
	GCRounds  int

	// Memory of idle members.
	MemMembers int // members added
	MemNameLen int // bytes per member name (at least 8)

	Server   string    // description of the server, for the report
	Progress io.Writer // receives a line per step; nil: none
}

// DefaultAllocConfig returns the configuration of allocbench without flags:
// a full run takes two to three minutes on a 2-core machine.
func DefaultAllocConfig() AllocConfig {
	return AllocConfig{
		Duration:     500 * time.Millisecond,
		Rounds:       11,
		Goroutines:   []int{1, 50},
		PoolSizes:    []int{100, 10_000, 1_000_000},
		FillChunk:    10_000,
		ScriptRounds: 5,
		ScriptLeases: 2048,
		Waiters:      []int{1, 50},
		WaitDuration: 2 * time.Second,
		WaitWarmup:   200 * time.Millisecond,
		WaitRounds:   5,
		Hold:         time.Millisecond,
		GCPools:      []int{1_000, 100_000, 1_000_000},
		GCExpired:    []int{10, 100, 1000},
		GCRounds:     7,
		MemMembers:   100_000,
		MemNameLen:   16,
	}
}

// check validates the configuration.
func (c AllocConfig) check() error {
	pos := func(name string, xs []int, hi int) error {
		if len(xs) == 0 {
			return fmt.Errorf("allocbench: %s: none given", name)
		}
		for _, x := range xs {
			if x < 1 || (hi > 0 && x > hi) {
				return fmt.Errorf("allocbench: %s: %d is out of range", name, x)
			}
		}
		return nil
	}
	switch {
	case c.Duration <= 0 || c.WaitDuration <= 0:
		return fmt.Errorf("allocbench: durations must be positive")
	case c.Rounds < 1 || c.ScriptRounds < 1 || c.WaitRounds < 1 || c.GCRounds < 1:
		return fmt.Errorf("allocbench: every round count must be at least 1")
	case c.FillChunk < 1 || c.ScriptLeases < 1 || c.MemMembers < 1:
		return fmt.Errorf("allocbench: fill chunk, script leases and members must be at least 1")
	case c.MemNameLen < 8 || c.MemNameLen > 1024:
		return fmt.Errorf("allocbench: member names of %d bytes: want 8 to 1024", c.MemNameLen)
	case c.Hold < 0 || c.WaitWarmup < 0:
		return fmt.Errorf("allocbench: hold and warm-up must not be negative")
	}
	for _, v := range []struct {
		name string
		xs   []int
		hi   int
	}{
		{"goroutines", c.Goroutines, PoolSize}, {"pool sizes", c.PoolSizes, 0},
		{"waiters", c.Waiters, PoolSize - 2}, {"GC pools", c.GCPools, 0}, {"GC expired", c.GCExpired, 0},
	} {
		if err := pos(v.name, v.xs, v.hi); err != nil {
			return err
		}
	}
	for _, p := range c.GCPools {
		for _, e := range c.GCExpired {
			if e > p {
				return fmt.Errorf("allocbench: %d expired leases do not fit a pool of %d", e, p)
			}
		}
	}
	return nil
}

// AllocReport is the outcome of RunAlloc; it marshals to JSON.
type AllocReport struct {
	Date          string `json:"date"`
	GoVersion     string `json:"go_version"`
	GOMAXPROCS    int    `json:"gomaxprocs"`
	NumCPU        int    `json:"num_cpu"`
	RedisVersion  string `json:"redis_version"`
	Server        string `json:"server"`
	LoadBefore    string `json:"loadavg_before,omitempty"`
	LoadAfter     string `json:"loadavg_after,omitempty"`
	PoolSize      int    `json:"client_pool_size"`
	Batching      int    `json:"default_batching"`
	ReclaimBudget int    `json:"default_reclaim_budget"`
	Elapsed       string `json:"elapsed"`

	Config AllocConfigJSON `json:"config"`

	Memory MemResult  `json:"memory"`
	Fills  []PoolFill `json:"fills"`

	// Pairs holds the floor cases and the malloc+free cases.
	Pairs   []*CaseResult   `json:"pairs"`
	VsFloor []FloorRatio    `json:"vs_floor"`
	Growth  []GrowthRatio   `json:"growth"`
	Scripts []AllocScript   `json:"scripts"`
	Wait    []*WaitCase     `json:"wait"`
	GC      []*GCCase       `json:"gc"`
	GCWarm  []GCWarm        `json:"gc_warm"`
	Checks  []Check         `json:"checks"`
	cases   []allocPairCase // in table order
}

// AllocConfigJSON is the part of AllocConfig the report records.
type AllocConfigJSON struct {
	Duration     string `json:"duration"`
	Rounds       int    `json:"rounds"`
	Goroutines   []int  `json:"goroutines"`
	PoolSizes    []int  `json:"pool_sizes"`
	FillChunk    int    `json:"fill_chunk"`
	ScriptRounds int    `json:"script_rounds"`
	ScriptLeases int    `json:"script_leases"`
	Waiters      []int  `json:"waiters"`
	WaitDuration string `json:"wait_duration"`
	WaitWarmup   string `json:"wait_warmup"`
	WaitRounds   int    `json:"wait_rounds"`
	Hold         string `json:"hold"`
	GCPools      []int  `json:"gc_pools"`
	GCExpired    []int  `json:"gc_expired"`
	GCRounds     int    `json:"gc_rounds"`
	MemMembers   int    `json:"mem_members"`
	MemNameLen   int    `json:"mem_name_len"`
}

// Check is one target with its outcome: Pass is false for a miss. A miss
// is reported, never an error.
type Check struct {
	Target string `json:"target"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// allocLeaseTTL is the TTL of the leases of the malloc+free runs and the
// script passes (they never expire there).
const allocLeaseTTL = time.Minute

// allocEnv is what the parts of a run share.
type allocEnv struct {
	client *redis.Client
	prefix string         // namespace of every key this run touches
	cfg    AllocConfig    //
	pools  map[int]string // pool size → allocator prefix of a filled pool
	fills  []PoolFill
	closes []func() error
}

// poolPrefix returns the allocator prefix of a pool named name; its keys
// ({<run prefix>|<name>|allocator}|...) fall under the run's namespace.
func (e *allocEnv) poolPrefix(name string) string { return e.prefix + "|" + name }

// newAlloc returns an allocator on the pool prefix, closed at the end of
// the run.
func (e *allocEnv) newAlloc(prefix string, opts ...allocator.Option) (*allocator.Allocator, error) {
	a, err := allocator.New(e.client, prefix, opts...)
	if err != nil {
		return nil, err
	}
	e.closes = append(e.closes, a.Close)
	return a, nil
}

func (e *allocEnv) progress(format string, args ...any) {
	if e.cfg.Progress != nil {
		fmt.Fprintf(e.cfg.Progress, format+"\n", args...)
	}
}

// PoolFill describes how a pool was filled.
type PoolFill struct {
	Size    int     `json:"size"`
	Seconds float64 `json:"seconds"`
	// UsecPerMember is the wall time of the Extend calls per member.
	UsecPerMember float64 `json:"usec_per_member"`
	// BytesPerMember is the growth of INFO memory used_memory per member.
	BytesPerMember float64 `json:"bytes_per_member"`
}

// pool returns the prefix of a filled pool of size members, filling one
// on first use. Its members are named m<i>.
func (e *allocEnv) pool(ctx context.Context, size int) (string, error) {
	if p, ok := e.pools[size]; ok {
		return p, nil
	}
	prefix := e.poolPrefix("p" + strconv.Itoa(size))
	a, err := e.newAlloc(prefix, allocator.WithBatching(0))
	if err != nil {
		return "", err
	}
	e.progress("filling a pool of %d members (Extend, %d per call) ...", size, e.cfg.FillChunk)
	mem0, err := usedMemory(ctx, e.client)
	if err != nil {
		return "", err
	}
	start := time.Now()
	if err := fill(ctx, a, size, e.cfg.FillChunk, func(i int) string { return "m" + strconv.Itoa(i) }); err != nil {
		return "", err
	}
	el := time.Since(start)
	mem1, err := usedMemory(ctx, e.client)
	if err != nil {
		return "", err
	}
	e.fills = append(e.fills, PoolFill{
		Size: size, Seconds: el.Seconds(), UsecPerMember: float64(el.Microseconds()) / float64(size),
		BytesPerMember: float64(mem1-mem0) / float64(size),
	})
	e.pools[size] = prefix
	return prefix, nil
}

// fill adds members name(0) to name(size-1) to a, chunk per Extend call.
func fill(ctx context.Context, a *allocator.Allocator, size, chunk int, name func(int) string) error {
	ks := make([]string, 0, chunk)
	for i := 0; i < size; i += chunk {
		ks = ks[:0]
		for j := i; j < min(i+chunk, size); j++ {
			ks = append(ks, name(j))
		}
		n, err := a.Extend(ctx, ks)
		if err != nil {
			return fmt.Errorf("extend: %w", err)
		}
		if n != len(ks) {
			return fmt.Errorf("extend added %d of %d new members", n, len(ks))
		}
	}
	return nil
}

// RunAlloc benchmarks the allocator on client (whose pool must hold at
// least the largest goroutine count; NewClient makes one) and returns the
// report. It deletes the keys it created before it returns.
func RunAlloc(ctx context.Context, client *redis.Client, cfg AllocConfig) (*AllocReport, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	began := time.Now()
	info, err := client.Info(ctx, "server").Result()
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	version, _ := infoField(info, "redis_version")
	e := &allocEnv{client: client, prefix: "allocbench-" + rand.Text()[:8], cfg: cfg, pools: map[int]string{}}
	defer func() {
		for _, c := range e.closes {
			_ = c()
		}
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := deleteNamespace(cctx, client, e.prefix); err != nil {
			fmt.Fprintln(os.Stderr, "allocbench: cleanup:", err)
		}
	}()

	rep := &AllocReport{
		Date:          time.Now().UTC().Format(time.RFC3339),
		GoVersion:     runtime.Version(),
		GOMAXPROCS:    runtime.GOMAXPROCS(0),
		NumCPU:        runtime.NumCPU(),
		RedisVersion:  version,
		Server:        cfg.Server,
		LoadBefore:    loadAvg(),
		PoolSize:      client.Options().PoolSize,
		Batching:      allocator.DefaultBatching,
		ReclaimBudget: allocator.DefaultReclaimBudget,
		Config: AllocConfigJSON{
			Duration: cfg.Duration.String(), Rounds: cfg.Rounds, Goroutines: cfg.Goroutines, PoolSizes: cfg.PoolSizes,
			FillChunk: cfg.FillChunk, ScriptRounds: cfg.ScriptRounds, ScriptLeases: cfg.ScriptLeases,
			Waiters: cfg.Waiters, WaitDuration: cfg.WaitDuration.String(), WaitWarmup: cfg.WaitWarmup.String(),
			WaitRounds: cfg.WaitRounds, Hold: cfg.Hold.String(), GCPools: cfg.GCPools, GCExpired: cfg.GCExpired,
			GCRounds: cfg.GCRounds, MemMembers: cfg.MemMembers, MemNameLen: cfg.MemNameLen,
		},
	}

	// Memory first, on a quiet server.
	if rep.Memory, err = measureMemory(ctx, e); err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	if err := runPairs(ctx, e, rep); err != nil {
		return nil, err
	}
	if rep.Scripts, err = measureAllocScripts(ctx, e); err != nil {
		return nil, fmt.Errorf("script passes: %w", err)
	}
	if rep.GC, rep.GCWarm, err = measureGC(ctx, e); err != nil {
		return nil, fmt.Errorf("GC: %w", err)
	}
	if rep.Wait, err = measureWait(ctx, e); err != nil {
		return nil, fmt.Errorf("MallocWait: %w", err)
	}
	rep.Fills = e.fills
	rep.Checks = rep.checks()
	rep.LoadAfter = loadAvg()
	rep.Elapsed = time.Since(began).Round(time.Second).String()
	return rep, nil
}

// usedMemory returns INFO memory used_memory, in bytes.
func usedMemory(ctx context.Context, c *redis.Client) (int64, error) {
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	v, ok := infoField(info, "used_memory")
	if !ok {
		return 0, fmt.Errorf("INFO memory has no used_memory")
	}
	return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
}

// commandStats returns the cumulative INFO commandstats.
func commandStats(ctx context.Context, c *redis.Client) (CmdStats, error) {
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	return parseCommandStats(info)
}

// minus returns c − o, command by command (commands with no calls in
// between are left out).
func (c CmdStats) minus(o CmdStats) CmdStats {
	out := CmdStats{}
	for k, v := range c {
		d := CmdStat{Calls: v.Calls - o[k].Calls, Usec: v.Usec - o[k].Usec}
		if d.Calls != 0 {
			out[k] = d
		}
	}
	return out
}

// sentUsec is the execution time of the commands a client sends to run
// scripts (EVALSHA, and EVAL after NOSCRIPT); the commands a script runs are
// part of it.
func (c CmdStats) sentUsec() int64 { return c.usecOf(scriptCommands) }

// scriptCalls is the number of script calls in c.
func (c CmdStats) scriptCalls() int64 { return c["evalsha"].Calls + c["eval"].Calls }
