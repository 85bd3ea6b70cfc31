package bench

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// CmdStat is one command's line of INFO commandstats: calls and total
// microseconds spent executing it (not counting network and parsing).
type CmdStat struct {
	Calls int64 `json:"calls"`
	Usec  int64 `json:"usec"`
}

// UsecPerCall is the mean execution time of one call.
func (c CmdStat) UsecPerCall() float64 {
	if c.Calls == 0 {
		return 0
	}
	return float64(c.Usec) / float64(c.Calls)
}

// CmdStats maps a command name (evalsha, set, config|resetstat, ...) to its
// stats.
type CmdStats map[string]CmdStat

// add adds o into c.
func (c CmdStats) add(o CmdStats) {
	for k, v := range o {
		s := c[k]
		s.Calls += v.Calls
		s.Usec += v.Usec
		c[k] = s
	}
}

// adminCommands are sent by the harness or by go-redis when it connects, not
// by the measured operations; the tables leave them out.
var adminCommands = map[string]bool{
	"info": true, "config|resetstat": true, "config|get": true, "ping": true,
	"hello": true, "client|setinfo": true, "client|maint_notifications": true,
	"scan": true, "unlink": true,
}

// usecOf is the execution time of the named commands. Give only commands
// the client sent: a script's EVALSHA time already includes the commands
// the script runs, which commandstats lists as well.
func (c CmdStats) usecOf(names []string) int64 {
	var n int64
	for _, k := range names {
		n += c[k].Usec
	}
	return n
}

// workNames returns the non-admin command names, sorted.
func (c CmdStats) workNames() []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		if !adminCommands[k] {
			out = append(out, k)
		}
	}
	return out
}

// parseCommandStats parses the text of INFO commandstats.
func parseCommandStats(info string) (CmdStats, error) {
	out := CmdStats{}
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		var s CmdStat
		for field := range strings.SplitSeq(rest, ",") {
			k, v, _ := strings.Cut(field, "=")
			var err error
			switch k {
			case "calls":
				s.Calls, err = strconv.ParseInt(v, 10, 64)
			case "usec":
				s.Usec, err = strconv.ParseInt(v, 10, 64)
			}
			if err != nil {
				return nil, fmt.Errorf("commandstats line %q: %w", line, err)
			}
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = s
	}
	return out, nil
}

// infoField returns field of an INFO section's text.
func infoField(info, field string) (string, bool) {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, true
		}
	}
	return "", false
}

// serverCPU returns the CPU seconds (user + system, all threads) that the
// server process has used so far.
func serverCPU(ctx context.Context, c *redis.Client) (float64, error) {
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, ok := infoField(info, f)
		if !ok {
			return 0, fmt.Errorf("INFO cpu has no %s", f)
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, fmt.Errorf("INFO cpu %s: %w", f, err)
		}
		total += x
	}
	return total, nil
}

// statWindow brackets a measured stretch: begin resets the command stats and
// notes the server CPU, end reads both.
type statWindow struct {
	c    *redis.Client
	cpu0 float64
}

func beginStats(ctx context.Context, c *redis.Client) (*statWindow, error) {
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		return nil, fmt.Errorf("CONFIG RESETSTAT: %w", err)
	}
	cpu, err := serverCPU(ctx, c)
	if err != nil {
		return nil, err
	}
	return &statWindow{c: c, cpu0: cpu}, nil
}

// end returns the command stats since begin and the server CPU seconds used.
func (w *statWindow) end(ctx context.Context) (CmdStats, float64, error) {
	cpu, err := serverCPU(ctx, w.c)
	if err != nil {
		return nil, 0, err
	}
	info, err := w.c.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, 0, err
	}
	st, err := parseCommandStats(info)
	if err != nil {
		return nil, 0, err
	}
	return st, cpu - w.cpu0, nil
}
