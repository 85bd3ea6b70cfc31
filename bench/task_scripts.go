package bench

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ScriptTime is one script's Redis time in the SLOWLOG pass: the
// EVALSHA/EVAL calls of one SHA1 on one kind of key with one argument
// count.
type ScriptTime struct {
	System string `json:"system"`
	// Script names it: the SHA1's first 8 hex digits, KEYS[1] with task ids
	// replaced by <id>, and the command's length in words.
	Script      string  `json:"script"`
	Calls       int64   `json:"calls"`
	CallsPerOp  float64 `json:"calls_per_task"`
	UsecPerCall float64 `json:"usec_per_call"`
	UsecPerTask float64 `json:"usec_per_task"`
}

// slowlogTasks caps the tasks of a SLOWLOG pass: every command, those run
// by scripts included, takes an entry of the server's log.
const slowlogTasks = 4000

// taskIDSuffix matches the task ids of the benchmark at the end of a key.
var taskIDSuffix = regexp.MustCompile(`[ctw][0-9]+$`)

// scriptTimes runs one throughput run per system (at most slowlogTasks
// tasks) with every command logged in SLOWLOG (slowlog-log-slower-than 0)
// and sums the logged duration of each script. The log costs Redis time
// itself, so these runs are not timed; the server's settings are restored.
func (b *taskBench) scriptTimes(ctx context.Context) ([]ScriptTime, error) {
	cfg := b.cfg
	cfg.Tasks = min(cfg.Tasks, slowlogTasks)
	prev, err := b.admin.ConfigGet(ctx, "slowlog-*").Result()
	if err != nil {
		return nil, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, k := range []string{"slowlog-log-slower-than", "slowlog-max-len"} {
			if v, ok := prev[k]; ok {
				_ = b.admin.ConfigSet(rctx, k, v).Err()
			}
		}
		_ = b.admin.Do(rctx, "slowlog", "reset").Err()
	}()
	// Each task runs about 30 commands; the warm-up tasks are logged too.
	maxLen := strconv.Itoa(40 * (cfg.Tasks + cfg.WarmupTasks))
	if err := b.admin.ConfigSet(ctx, "slowlog-max-len", maxLen).Err(); err != nil {
		return nil, err
	}
	sub := &taskBench{cfg: cfg, admin: b.admin}
	var out []ScriptTime
	for _, sys := range b.throughputSystems() {
		b.progress("scripts: %s, %d tasks with every command in SLOWLOG ...", sys.id(), cfg.Tasks)
		for _, c := range [][]any{{"config", "set", "slowlog-log-slower-than", "0"}, {"slowlog", "reset"}} {
			if err := b.admin.Do(ctx, c...).Err(); err != nil {
				return nil, err
			}
		}
		sub.onWindow = func(ctx context.Context) error { return b.admin.Do(ctx, "slowlog", "reset").Err() }
		if _, err := sub.throughputRun(ctx, sys); err != nil {
			return nil, fmt.Errorf("scripts %s: %w", sys.id(), err)
		}
		if err := b.admin.ConfigSet(ctx, "slowlog-log-slower-than", "-1").Err(); err != nil {
			return nil, err
		}
		logs, err := b.admin.SlowLogGet(ctx, -1).Result()
		if err != nil {
			return nil, err
		}
		byScript := map[string]*ScriptTime{}
		for _, l := range logs {
			if len(l.Args) < 4 || !strings.EqualFold(l.Args[0], "evalsha") && !strings.EqualFold(l.Args[0], "eval") {
				continue
			}
			id := l.Args[1]
			if strings.EqualFold(l.Args[0], "evalsha") && len(id) > 8 {
				id = id[:8]
			} else if !strings.EqualFold(l.Args[0], "evalsha") {
				id = "EVAL"
			}
			key := taskIDSuffix.ReplaceAllString(l.Args[3], "<id>")
			name := fmt.Sprintf("%s %s, %d words", id, key, len(l.Args))
			s := byScript[name]
			if s == nil {
				s = &ScriptTime{System: sys.id(), Script: name}
				byScript[name] = s
			}
			s.Calls++
			s.UsecPerTask += float64(l.Duration.Microseconds())
		}
		var these []ScriptTime
		for _, s := range byScript {
			s.UsecPerCall = s.UsecPerTask / float64(s.Calls)
			s.CallsPerOp = float64(s.Calls) / float64(cfg.Tasks)
			s.UsecPerTask /= float64(cfg.Tasks)
			if s.CallsPerOp >= 0.01 {
				these = append(these, *s)
			}
		}
		slices.SortFunc(these, func(a, b ScriptTime) int { return strings.Compare(a.Script, b.Script) })
		out = append(out, these...)
	}
	return out, nil
}
