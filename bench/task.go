package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// TaskConfig sets what RunTask measures. DefaultTaskConfig returns the
// settings of a full run, QuickTaskConfig those of a short one.
type TaskConfig struct {
	// URL is the Redis every client of the run connects to. RunTask
	// deletes every key there (FLUSHALL) before each run, so it refuses
	// unless FlushAllowed is set.
	URL          string
	FlushAllowed bool
	Server       string // description of the server, for the report

	// 1. Round-trip latency of a no-op task.
	Callers []int // concurrent callers, each in a closed loop
	// Calls and Warmup are the timed and untimed calls of the floor and
	// taskqueue latency cases (over all callers).
	Calls, Warmup int
	// AsynqCalls is the timed calls of asynq's RPC with TaskCheckInterval
	// FastInterval; AsynqSlowCalls those with its default interval (1 s),
	// run with the fewest callers only.
	AsynqCalls, AsynqSlowCalls int
	FastInterval               time.Duration
	// Poll is how often asynq's RPC reads the task's state (GetTaskInfo).
	Poll time.Duration

	// 2. and 3. Throughput of Tasks no-op tasks.
	Tasks       int
	WarmupTasks int // untimed tasks through the same consumer first
	Producers   int // goroutines submitting
	Workers     int // listener workers, asynq Concurrency (also in part 1)
	Rounds      int // rounds; the case order alternates each round
	// Retries is how many rounds in all may be run again because other
	// work took more than busyOthers of a core during one of their runs.
	Retries int

	// SkipLatency and SkipThroughput leave part 1, or parts 2 and 3, out;
	// SkipScripts the SLOWLOG pass that times each script.
	SkipLatency, SkipThroughput, SkipScripts bool

	Progress io.Writer // receives a line per step; nil: none
}

// DefaultTaskConfig returns the configuration of taskbench without flags:
// about two minutes on a 2-core machine.
func DefaultTaskConfig() TaskConfig {
	return TaskConfig{
		Callers:        []int{1, 10},
		Calls:          5000,
		Warmup:         200,
		AsynqCalls:     500,
		AsynqSlowCalls: 15,
		FastInterval:   10 * time.Millisecond,
		Poll:           time.Millisecond,
		Tasks:          20_000,
		WarmupTasks:    500,
		Producers:      16,
		Workers:        50,
		Rounds:         5,
		Retries:        5,
	}
}

// QuickTaskConfig returns a configuration that runs every part in about
// 15 seconds, for a look at the figures, not for conclusions.
func QuickTaskConfig() TaskConfig {
	c := DefaultTaskConfig()
	c.Calls, c.Warmup = 1000, 50
	c.AsynqCalls, c.AsynqSlowCalls = 100, 3
	c.Tasks, c.WarmupTasks = 4000, 100
	c.Rounds = 1
	return c
}

func (c TaskConfig) check() error {
	switch {
	case c.URL == "":
		return errors.New("taskbench: no Redis URL")
	case !c.FlushAllowed:
		return errors.New("taskbench: every run starts with FLUSHALL, which this configuration does not allow")
	case len(c.Callers) == 0:
		return errors.New("taskbench: no caller counts")
	case c.Calls < 1 || c.AsynqCalls < 1 || c.AsynqSlowCalls < 1 || c.Tasks < 1 || c.Rounds < 1:
		return errors.New("taskbench: calls, tasks and rounds must be at least 1")
	case c.Warmup < 0 || c.WarmupTasks < 0 || c.Retries < 0:
		return errors.New("taskbench: warm-up counts must not be negative")
	case c.Producers < 1 || c.Workers < 1:
		return errors.New("taskbench: producers and workers must be at least 1")
	case c.Poll <= 0 || c.FastInterval <= 0:
		return errors.New("taskbench: poll and fast interval must be positive")
	case c.Producers > PoolSize || c.Workers > PoolSize:
		return fmt.Errorf("taskbench: at most %d producers and workers (the clients' pool size)", PoolSize)
	}
	for _, n := range c.Callers {
		if n < 1 || n > PoolSize {
			return fmt.Errorf("taskbench: %d callers: want 1 to %d", n, PoolSize)
		}
	}
	return nil
}

// TaskReport is the outcome of RunTask; it marshals to JSON.
type TaskReport struct {
	Date         string `json:"date"`
	GoVersion    string `json:"go_version"`
	GOMAXPROCS   int    `json:"gomaxprocs"`
	NumCPU       int    `json:"num_cpu"`
	RedisVersion string `json:"redis_version"`
	Server       string `json:"server"`
	Asynq        string `json:"asynq_version"`
	LoadBefore   string `json:"loadavg_before,omitempty"`
	LoadAfter    string `json:"loadavg_after,omitempty"`
	Elapsed      string `json:"elapsed"`

	Config TaskConfigJSON `json:"config"`

	Latency []*LatencyCase `json:"latency"`
	// Floor is the no-op EVALSHA throughput at Producers goroutines, Tasks
	// calls at the start of each round of part 2: the round-trip capacity
	// of the server and client on this machine. FloorPerSec is the median
	// over the rounds.
	Floor       []RunResult       `json:"throughput_floor"`
	FloorPerSec float64           `json:"throughput_floor_per_sec"`
	Throughput  []*ThroughputCase `json:"throughput"`
	Ratios      []TaskRatio       `json:"ratios"`
	// Repeated lists the rounds of part 2 run again because other work
	// took more than busyOthers of a core during them.
	Repeated []string `json:"repeated_rounds,omitempty"`
	// Scripts is the SLOWLOG pass: each script's Redis time per task.
	Scripts []ScriptTime `json:"scripts,omitempty"`
	Checks  []Check      `json:"checks"`
}

// TaskConfigJSON is the part of TaskConfig the report records.
type TaskConfigJSON struct {
	Callers        []int  `json:"callers"`
	Calls          int    `json:"calls"`
	Warmup         int    `json:"warmup"`
	AsynqCalls     int    `json:"asynq_calls"`
	AsynqSlowCalls int    `json:"asynq_slow_calls"`
	FastInterval   string `json:"fast_interval"`
	Poll           string `json:"poll"`
	Tasks          int    `json:"tasks"`
	WarmupTasks    int    `json:"warmup_tasks"`
	Producers      int    `json:"producers"`
	Workers        int    `json:"workers"`
	Rounds         int    `json:"rounds"`
	Retries        int    `json:"retries"`
}

// TaskRedis is what a measured window cost, per operation (an RPC in part
// 1, a task in parts 2 and 3).
type TaskRedis struct {
	// Sent is the commands the benchmark's clients sent (go-redis hooks,
	// pipelined ones included), RoundTrips the single commands and
	// pipelines among them, Scripts the EVALSHA and EVAL calls.
	Sent       float64 `json:"sent"`
	RoundTrips float64 `json:"round_trips"`
	Scripts    float64 `json:"scripts"`
	// Run is every command Redis ran: Sent plus those run by scripts
	// (INFO commandstats calls).
	Run float64 `json:"run"`
	// ExecUsec is the commandstats execution time of the commands the
	// clients sent (a script's time includes the commands it ran);
	// AllLinesUsec sums every commandstats line, which counts the commands
	// run by scripts twice.
	ExecUsec     float64 `json:"exec_usec"`
	AllLinesUsec float64 `json:"all_lines_usec"`
	// CPUUsec is the Redis process's user+sys CPU (INFO cpu), network
	// I/O included; ClientCPUUsec this benchmark process's, which holds
	// both the callers and the workers.
	CPUUsec       float64 `json:"redis_cpu_usec"`
	ClientCPUUsec float64 `json:"client_cpu_usec"`
	// Cores in use during the window (CPU seconds per second): the Redis
	// process, this process, and the whole machine (/proc/stat: other
	// processes and the kernel's network work not charged to a process
	// included).
	RedisCores   float64 `json:"redis_cores"`
	ClientCores  float64 `json:"client_cores"`
	MachineCores float64 `json:"machine_cores"`
}

// OtherCores is the cores busy with anything but Redis and this process
// during the window (0 where the machine's CPU is not known).
func (x TaskRedis) OtherCores() float64 {
	if x.MachineCores == 0 {
		return 0
	}
	return max(0, x.MachineCores-x.RedisCores-x.ClientCores)
}

// busyOthers is the share of a core that other work may take during a
// window before the report warns about it.
const busyOthers = 0.25

// TaskWindowStats holds a window's raw stats.
type TaskWindowStats struct {
	Commands CmdStats         `json:"commands"`
	Sent     map[string]int64 `json:"sent"` // commands the clients sent, by commandstats name
}

// LatencyStats summarises durations.
type LatencyStats struct {
	N    int           `json:"n"`
	Mean time.Duration `json:"mean_ns"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	Max  time.Duration `json:"max_ns"`
}

func latencyStats(ds []time.Duration) LatencyStats {
	if len(ds) == 0 {
		return LatencyStats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return LatencyStats{N: len(s), Mean: sum / time.Duration(len(s)), P50: percentile(s, 0.5), P99: percentile(s, 0.99), Max: s[len(s)-1]}
}

// LatencyCase is one case of part 1 at one caller count.
type LatencyCase struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Callers  int    `json:"callers"`
	Interval string `json:"task_check_interval,omitempty"` // asynq only
	// RPC is the call's latency in the caller and the calls per second.
	RPC RunResult `json:"rpc"`
	// Start is from the call to the start of the task function.
	Start LatencyStats    `json:"handler_start"`
	Redis TaskRedis       `json:"per_call"`
	Stats TaskWindowStats `json:"stats"`
}

// ThroughputRun is one timed run of a part-2 case.
type ThroughputRun struct {
	Round int   `json:"round"`
	Tasks int64 `json:"tasks"`
	// Elapsed is from the first submission until the task function has
	// been called Tasks times.
	Elapsed     time.Duration `json:"elapsed_ns"`
	TasksPerSec float64       `json:"tasks_per_sec"`
	// Submitted is when the producers had submitted every task,
	// FirstStart when the first task function started (both from the first
	// submission); Steady is Tasks per second from FirstStart to the end.
	Submitted  time.Duration   `json:"submitted_ns"`
	FirstStart time.Duration   `json:"first_start_ns"`
	Steady     float64         `json:"steady_tasks_per_sec"`
	Redis      TaskRedis       `json:"per_task"`
	Stats      TaskWindowStats `json:"stats"`
}

// ThroughputCase is one system of part 2 with its runs; the figures are
// medians over the runs.
type ThroughputCase struct {
	ID          string           `json:"id"`
	Name        string           `json:"name"`
	Interval    string           `json:"task_check_interval,omitempty"`
	Runs        []ThroughputRun  `json:"runs"`
	TasksPerSec float64          `json:"tasks_per_sec"`
	Elapsed     time.Duration    `json:"elapsed_ns"`
	Submitted   time.Duration    `json:"submitted_ns"`
	FirstStart  time.Duration    `json:"first_start_ns"`
	Steady      float64          `json:"steady_tasks_per_sec"`
	Redis       TaskRedis        `json:"per_task"` // medians of the runs' figures
	Commands    CmdStats         `json:"commands"` // summed over the runs
	Sent        map[string]int64 `json:"sent"`     // summed over the runs
	Tasks       int64            `json:"tasks"`    // summed over the runs
}

// TaskRatio is taskqueue's tasks/s ÷ a baseline's, median and quartiles of
// the per-round ratios.
type TaskRatio struct {
	Baseline  string     `json:"baseline"`
	Median    float64    `json:"median"`
	Quartiles [2]float64 `json:"quartiles"`
}

// RunTask runs the three parts on the server at cfg.URL.
func RunTask(ctx context.Context, cfg TaskConfig) (*TaskReport, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	began := time.Now()
	admin, err := NewClient(cfg.URL)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	info, err := admin.Info(ctx, "server").Result()
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	version, _ := infoField(info, "redis_version")
	rep := &TaskReport{
		Date:         time.Now().UTC().Format(time.RFC3339),
		GoVersion:    runtime.Version(),
		GOMAXPROCS:   runtime.GOMAXPROCS(0),
		NumCPU:       runtime.NumCPU(),
		RedisVersion: version,
		Server:       cfg.Server,
		Asynq:        moduleVersion("github.com/hibiken/asynq"),
		LoadBefore:   loadAvg(),
		Config: TaskConfigJSON{
			Callers: cfg.Callers, Calls: cfg.Calls, Warmup: cfg.Warmup, AsynqCalls: cfg.AsynqCalls,
			AsynqSlowCalls: cfg.AsynqSlowCalls, FastInterval: cfg.FastInterval.String(), Poll: cfg.Poll.String(),
			Tasks: cfg.Tasks, WarmupTasks: cfg.WarmupTasks, Producers: cfg.Producers, Workers: cfg.Workers, Rounds: cfg.Rounds, Retries: cfg.Retries,
		},
	}
	b := &taskBench{cfg: cfg, admin: admin}
	if !cfg.SkipLatency {
		if rep.Latency, err = b.latency(ctx); err != nil {
			return nil, err
		}
	}
	if !cfg.SkipThroughput {
		if rep.Throughput, rep.Floor, err = b.throughput(ctx); err != nil {
			return nil, err
		}
		rep.Repeated = b.repeated
		var fs []float64
		for _, f := range rep.Floor {
			fs = append(fs, f.OpsPerSec)
		}
		rep.FloorPerSec = median(fs)
	}
	if !cfg.SkipScripts {
		if rep.Scripts, err = b.scriptTimes(ctx); err != nil {
			return nil, err
		}
	}
	if err := admin.FlushAll(ctx).Err(); err != nil {
		return nil, fmt.Errorf("FLUSHALL: %w", err)
	}
	rep.ratios()
	rep.Checks = rep.checks()
	rep.LoadAfter = loadAvg()
	rep.Elapsed = time.Since(began).Round(time.Second).String()
	return rep, nil
}

// taskBench is what the parts of a run share.
type taskBench struct {
	cfg      TaskConfig
	admin    *redis.Client // the harness's own client: stats, FLUSHALL, checks
	repeated []string      // rounds of part 2 run again, and why
	// onWindow, when set, runs when a throughput run opens its window.
	onWindow func(context.Context) error
}

func (b *taskBench) progress(format string, args ...any) {
	if b.cfg.Progress != nil {
		fmt.Fprintf(b.cfg.Progress, format+"\n", args...)
	}
}

// moduleVersion returns the version of module path in this binary's
// build information, or "unknown".
func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				if d.Replace != nil {
					return d.Version + " => " + d.Replace.Path + " " + d.Replace.Version
				}
				return d.Version
			}
		}
	}
	return "unknown"
}
