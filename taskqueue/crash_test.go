package taskqueue_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// The listener process of TestCrashedListenerTasksComplete is this test
// binary started again with these variables set.
const (
	crashEnv     = "TASKQUEUE_CRASH_LISTENER" // the target: "single" or "cluster"
	crashAddrs   = "TASKQUEUE_CRASH_ADDRS"    // comma-separated addresses
	crashNS      = "TASKQUEUE_CRASH_NAMESPACE"
	crashName    = "TASKQUEUE_CRASH_NAME"    // the task name listened to
	crashWorkers = "TASKQUEUE_CRASH_WORKERS" // Listen's workers
	crashStarted = "TASKQUEUE_CRASH_STARTED" // list the task function pushes the ids it starts to
)

// crashParams are the params of a crash test task; crashResult its result,
// derived from them (Y = 7X+3) and naming the process that ran it.
type crashParams struct{ X int }

type crashResult struct {
	X, Y int
	By   string
}

func crashCompute(p crashParams, by string) crashResult {
	return crashResult{X: p.X, Y: 7*p.X + 3, By: by}
}

// crashHangs reports whether the listener process hangs on task x (until
// it is killed) rather than finishing it: two tasks in three.
func crashHangs(x int) bool { return x%3 != 0 }

// runCrashListener is the body of the listener process. It listens until
// it is killed: its task function records every start (RPUSH of the id),
// then finishes the tasks crashHangs spares after 10 ms and blocks on the
// others until the process dies. The process also exits when its stdin
// reaches EOF (the test process died) and after two minutes, so it never
// outlives the test.
func runCrashListener() int {
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}()
	time.AfterFunc(2*time.Minute, func() { os.Exit(4) })

	addrs := strings.Split(os.Getenv(crashAddrs), ",")
	var c redis.UniversalClient
	opts := []taskqueue.Option{taskqueue.WithBatching(0)} // as the single target
	if os.Getenv(crashEnv) == "cluster" {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, PoolSize: 128})
		opts = nil // the cluster target batches by default
	} else {
		c = redis.NewClient(&redis.Options{Addr: addrs[0], PoolSize: 128})
	}
	defer c.Close()
	workers, err := strconv.Atoi(os.Getenv(crashWorkers))
	if err != nil {
		fmt.Fprintln(os.Stderr, "workers:", err)
		return 2
	}
	started := os.Getenv(crashStarted)
	fn := func(ctx context.Context, t *taskqueue.Task) (any, error) {
		var p crashParams
		if err := t.DecodeParams(&p); err != nil {
			return nil, err
		}
		if err := c.RPush(ctx, started, t.ID).Err(); err != nil {
			return nil, err
		}
		if !crashHangs(p.X) {
			time.Sleep(10 * time.Millisecond)
			return crashCompute(p, "killed"), nil
		}
		<-ctx.Done() // until the process is killed
		return nil, context.Cause(ctx)
	}
	opts = append(opts, taskqueue.WithTaskFunc(fn),
		taskqueue.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	q, err := taskqueue.New(c, os.Getenv(crashNS), opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := q.Listen(context.Background(), []string{os.Getenv(crashName)}, workers); err != nil {
		fmt.Fprintln(os.Stderr, "Listen:", err)
		return 1
	}
	return 0
}

// crashProc is a running listener process.
type crashProc struct {
	cmd    *exec.Cmd
	out    bytes.Buffer // its stdout and stderr; read only after exited
	exited chan struct{}
	err    error // Wait's; set when exited is closed
}

// startCrashListener starts the listener process; it is killed at cleanup
// in any case.
func startCrashListener(t *testing.T, mode string, addrs []string, ns, name, started string, workers int) *crashProc {
	t.Helper()
	p := &crashProc{exited: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(os.Environ(),
		crashEnv+"="+mode, crashAddrs+"="+strings.Join(addrs, ","), crashNS+"="+ns,
		crashName+"="+name, crashWorkers+"="+strconv.Itoa(workers), crashStarted+"="+started,
	)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	// The process exits when this pipe reaches EOF: when this process
	// dies, however it dies.
	if _, err := p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("listener process %d did not exit after SIGKILL", p.cmd.Process.Pid)
		}
	})
	return p
}

// kill SIGKILLs the process and waits for it.
func (p *crashProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("killing the listener process: %v", err)
	}
	<-p.exited
	if code := p.cmd.ProcessState.ExitCode(); code != -1 {
		t.Fatalf("the listener process exited (code %d) before the kill:\n%s", code, p.out.String())
	}
}

// TestCrashedListenerTasksComplete: a listener process SIGKILLed while it
// runs tasks loses none. 1 000 concurrent Remote queries are served first
// by a listener process with 100 workers, which finishes one task in three
// and hangs on the others; once its 100 workers all hang and a heartbeat
// has extended their claims, it is SIGKILLed and a second listener starts
// in this process. Every query returns the
// right result exactly once (and its caller's channel carries exactly one
// completion message), the 100 tasks running at the kill run again on the
// second listener within 13 s of the kill (default 10 s visibility
// timeout) with 2 deliveries, the others run once, and the queue ends
// empty.
func TestCrashedListenerTasksComplete(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns and kills a process, and waits out a visibility timeout")
	}
	forTargets(t, func(t *testing.T, tg target) {
		const (
			n        = 1000
			workers  = 100 // in the killed process
			workers2 = 50  // in the second listener
			callers  = 4   // Queue values the queries are spread over
			name     = "crash"
			bound    = 13 * time.Second
		)
		begin := time.Now()
		e := tg.env(t)
		rc := tg.client(t) // the test's own reads
		addrs := []string{redistest.Addr(t)}
		if tg.name == "cluster" {
			addrs = redistest.ClusterAddrs(t)
		}
		id := func(i int) string { return fmt.Sprintf("c%04d", i) }
		index := map[string]int{}
		for i := range n {
			index[id(i)] = i
		}

		// Count the completion messages on the callers' channels.
		var (
			msgMu sync.Mutex
			msgs  = map[string]int{} // task id → "d" messages
		)
		pctx, pcancel := context.WithCancel(context.Background())
		ps := rc.PSubscribe(pctx, keys.NewTasks(e.ns, taskqueue.DefaultSuffix).Channel("*"))
		if _, err := ps.Receive(pctx); err != nil {
			t.Fatalf("PSUBSCRIBE: %v", err)
		}
		psDone := make(chan struct{})
		go func() {
			defer close(psDone)
			for m := range ps.Channel(redis.WithChannelSize(4 * n)) {
				if tid, ok := finishedID(m.Payload); ok {
					msgMu.Lock()
					msgs[tid]++
					msgMu.Unlock()
				}
			}
		}()
		t.Cleanup(func() {
			pcancel()
			_ = ps.Close()
			<-psDone
		})

		started := e.ns + ":crash-started" // not a key of the queue
		proc := startCrashListener(t, tg.name, addrs, e.ns, name, started, workers)

		qs := make([]*taskqueue.Queue, callers)
		for i := range qs {
			qs[i] = e.queue(t)
		}
		waitFor(t, proc, 20*time.Second, "the listener process to advertise itself", func() (bool, error) {
			st, err := qs[0].Stats(context.Background(), name)
			return err == nil && st[0].Listeners > 0, err
		})

		// The queries.
		type answer struct {
			task *taskqueue.Task
			err  error
			at   time.Time
		}
		var (
			answers = make([]answer, n)
			returns = make([]atomic.Int32, n)
			wg      sync.WaitGroup
		)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		t.Cleanup(func() { cancel(); wg.Wait() }) // before the callers close
		for i := range n {
			wg.Go(func() {
				task, err := qs[i%callers].Query(ctx, id(i), name, crashParams{X: i}, taskqueue.WithPolicy(taskqueue.Remote))
				returns[i].Add(1)
				answers[i] = answer{task: task, err: err, at: time.Now()}
			})
		}

		// Kill the process once every one of its workers hangs on a task.
		hanging := func() ([]string, error) {
			ids, err := rc.LRange(context.Background(), started, 0, -1).Result()
			var out []string
			for _, s := range ids {
				if crashHangs(index[s]) {
					out = append(out, s)
				}
			}
			return out, err
		}
		waitFor(t, proc, 30*time.Second, fmt.Sprintf("%d tasks hanging in the listener process", workers), func() (bool, error) {
			h, err := hanging()
			return len(h) >= workers, err
		})
		// Let a heartbeat of the process extend the claims first, so that
		// the kill is of a worker in its steady state.
		active := keys.NewTasks(e.ns, taskqueue.DefaultSuffix).Name("a", name)
		deadlines := func() (lo, hi time.Time, err error) {
			zs, err := rc.ZRangeWithScores(context.Background(), active, 0, -1).Result()
			for i, z := range zs {
				d := time.UnixMilli(int64(z.Score))
				if i == 0 || d.Before(lo) {
					lo = d
				}
				if i == 0 || d.After(hi) {
					hi = d
				}
			}
			return lo, hi, err
		}
		_, claimedUntil, err := deadlines()
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, proc, 10*time.Second, "a heartbeat of the listener process", func() (bool, error) {
			lo, _, err := deadlines()
			return lo.After(claimedUntil), err
		})
		killAt := time.Now()
		proc.kill(t)
		claimLo, claimHi, err := deadlines()
		if err != nil {
			t.Fatal(err)
		}
		startedIDs, err := rc.LRange(context.Background(), started, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		inFlight := map[string]bool{} // running at the kill
		startedThere := map[string]int{}
		for _, s := range startedIDs {
			startedThere[s]++
			if crashHangs(index[s]) {
				inFlight[s] = true
			}
		}
		if len(inFlight) != workers {
			t.Errorf("%d tasks hanging at the kill, want %d (one per worker)", len(inFlight), workers)
		}
		for s, k := range startedThere {
			if k != 1 {
				t.Errorf("task %s started %d times in the killed process", s, k)
			}
		}
		st, err := qs[0].Stats(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		atKill := st[0]

		// The second listener.
		var (
			runMu  sync.Mutex
			runs   = map[string]int{}
			firstT = map[string]time.Time{}
			delivs = map[string]int{}
		)
		second := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, tk *taskqueue.Task) (any, error) {
			now := time.Now()
			var p crashParams
			if err := tk.DecodeParams(&p); err != nil {
				return nil, err
			}
			runMu.Lock()
			runs[tk.ID]++
			if runs[tk.ID] == 1 {
				firstT[tk.ID], delivs[tk.ID] = now, tk.Deliveries
			}
			runMu.Unlock()
			return crashCompute(p, "second"), nil
		}))
		listen(t, second, []string{name}, workers2)

		wg.Wait()
		allDone := time.Now()

		// Every query returned once, with its task's result.
		var failures int
		fail := func(format string, args ...any) {
			if failures++; failures <= 20 {
				t.Errorf(format, args...)
			}
		}
		by := map[string]int{}
		for i := range n {
			a := answers[i]
			if k := returns[i].Load(); k != 1 {
				fail("query %s returned %d times", id(i), k)
			}
			if a.err != nil {
				fail("query %s: %v (after %v)", id(i), a.err, a.at.Sub(begin))
				continue
			}
			var r crashResult
			if err := a.task.DecodeResult(&r); err != nil || a.task.State != taskqueue.Done || r != crashCompute(crashParams{X: i}, r.By) {
				fail("query %s: state %s, result %s (%v)", id(i), a.task.State, a.task.Result, err)
				continue
			}
			by[r.By]++
			want := "second"
			switch {
			case inFlight[id(i)]:
			case startedThere[id(i)] > 0:
				want = "killed"
			}
			if r.By != want {
				fail("task %s (started in the killed process: %v, hanging: %v) ran to its result in %q, want %q",
					id(i), startedThere[id(i)] > 0, inFlight[id(i)], r.By, want)
			}
			wantDl := 1
			if inFlight[id(i)] {
				wantDl = 2
			}
			if a.task.Deliveries != wantDl {
				fail("task %s: %d deliveries in the query's result, want %d", id(i), a.task.Deliveries, wantDl)
			}
		}

		// The second listener re-ran each task of the killed process once,
		// in time, and ran each task that never started there once.
		runMu.Lock()
		var earliest, latest time.Duration
		secondRuns := 0
		for _, k := range runs {
			secondRuns += k
		}
		for i := range n {
			s := id(i)
			k := runs[s]
			switch {
			case inFlight[s]:
				if k != 1 {
					fail("task %s, running at the kill, ran %d times on the second listener", s, k)
					continue
				}
				d := firstT[s].Sub(killAt)
				if earliest == 0 || d < earliest {
					earliest = d
				}
				latest = max(latest, d)
				if d > bound {
					fail("task %s, running at the kill, ran again %v after it (bound %v)", s, d.Round(time.Millisecond), bound)
				}
				if delivs[s] < 2 {
					fail("task %s ran again with Deliveries %d, want ≥ 2", s, delivs[s])
				}
			case startedThere[s] > 0:
				if k != 0 {
					fail("task %s, finished in the killed process, ran %d times on the second listener", s, k)
				}
			default:
				if k != 1 {
					fail("task %s, never started before the kill, ran %d times on the second listener", s, k)
				}
			}
		}
		runMu.Unlock()

		// Redis agrees.
		rctx := ctxT(t, 20*time.Second)
		for i := range n {
			s := id(i)
			tk, err := second.GetTask(rctx, s)
			if err != nil {
				fail("GetTask %s: %v", s, err)
				continue
			}
			wantDl := 1
			if inFlight[s] {
				wantDl = 2
			}
			if tk.State != taskqueue.Done || tk.Deliveries != wantDl || tk.Attempts != 0 {
				fail("GetTask %s: state %s, deliveries %d (want %d), attempts %d, error %q", s, tk.State, tk.Deliveries, wantDl, tk.Attempts, tk.Error)
			}
		}
		after, err := second.Stats(rctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if s := after[0]; s.Pending != 0 || s.Delayed != 0 || s.Running != 0 || s.Dead != 0 {
			t.Errorf("stats after every query returned: %+v", s)
		}

		// One completion message per task on its caller's channel: none
		// missing, none repeated. The callers have them all already; give
		// the test's subscription a moment to see them and any extra one.
		deadline := time.Now().Add(5 * time.Second)
		for {
			msgMu.Lock()
			got := len(msgs)
			msgMu.Unlock()
			if got >= n || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		msgMu.Lock()
		for i := range n {
			if k := msgs[id(i)]; k != 1 {
				fail("task %s: %d completion messages to its caller, want 1", id(i), k)
			}
		}
		msgMu.Unlock()

		if failures > 20 {
			t.Errorf("… %d failures in all", failures)
		}
		if t.Failed() {
			t.Logf("stats at the kill %+v, after %+v; listener process output:\n%s", atKill, after[0], proc.out.String())
		}
		t.Logf("%s: %d tasks; killed process: %d finished, %d running at the kill (%v after the start); "+
			"claims held until %.1f–%.1f s after the kill; second listener: %d runs, re-runs of the killed tasks %.1f–%.1f s after the kill (bound %v); "+
			"all %d queries returned once with the right result (%d from the killed process, %d from the second), "+
			"%v after the kill; %d completion messages; total %v",
			tg.name, n, len(startedIDs)-len(inFlight), len(inFlight), killAt.Sub(begin).Round(time.Millisecond),
			claimLo.Sub(killAt).Seconds(), claimHi.Sub(killAt).Seconds(), secondRuns, earliest.Seconds(), latest.Seconds(), bound,
			n, by["killed"], by["second"], allDone.Sub(killAt).Round(time.Millisecond), len(msgs), time.Since(begin).Round(time.Millisecond))
	})
}

// waitFor polls cond until it holds, failing t after limit or when the
// listener process exits.
func waitFor(t *testing.T, p *crashProc, limit time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-p.exited:
			t.Fatalf("waiting for %s: the listener process exited: %v\n%s", what, p.err, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = p.cmd.Process.Kill()
			<-p.exited
			t.Fatalf("waiting for %s: gave up after %v (last error %v); listener process output:\n%s", what, limit, lastErr, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// finishedID returns the task id of a "task finished" message to a Queue
// value (see internal/keys): "d <id length> <id>[<record JSON>]".
func finishedID(payload string) (string, bool) {
	rest, ok := strings.CutPrefix(payload, "d ")
	if !ok {
		return "", false
	}
	if ns, after, ok := strings.Cut(rest, " "); ok {
		if n, err := strconv.Atoi(ns); err == nil && n >= 0 && n <= len(after) {
			return after[:n], true
		}
	}
	return "", false
}
