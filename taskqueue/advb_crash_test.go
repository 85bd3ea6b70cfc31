package taskqueue_test

// Adversarial tests (round B) with a listener in a child process that is
// killed (SIGKILL) or stopped (SIGSTOP), as a real crash or stall.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

const (
	advbAddr = "ADVB_HELPER_ADDR"
	advbNS   = "ADVB_HELPER_NS"
	advbVis  = "ADVB_HELPER_VIS"
)

// TestAdvBHelperListener is the child process: a listener of "job" whose
// task function reports its start and blocks (ignoring its context).
func TestAdvBHelperListener(t *testing.T) {
	addr := os.Getenv(advbAddr)
	if addr == "" {
		t.Skip("helper process only")
	}
	vis, _ := time.ParseDuration(os.Getenv(advbVis))
	c := redis.NewClient(&redis.Options{Addr: addr})
	q, err := taskqueue.New(c, os.Getenv(advbNS), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		fmt.Printf("ADVB-STARTED %s\n", task.ID)
		select {}
	}))
	if err != nil {
		fmt.Println("ADVB-ERR", err)
		os.Exit(1)
	}
	go func() {
		for {
			st, err := q.Stats(context.Background(), "job")
			if err == nil && st[0].Listeners > 0 {
				fmt.Println("ADVB-READY")
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	_ = q.Listen(context.Background(), []string{"job"}, 1)
}

// helper is a child listener process.
type helper struct {
	cmd   *exec.Cmd
	lines chan string
}

func startHelper(t *testing.T, ns string, vis time.Duration) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestAdvBHelperListener$", "-test.count=1")
	cmd.Env = append(os.Environ(), advbAddr+"="+redistest.Addr(t), advbNS+"="+ns, advbVis+"="+vis.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, lines: make(chan string, 16)}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if strings.HasPrefix(s.Text(), "ADVB-") {
				h.lines <- s.Text()
			}
		}
		close(h.lines)
	}()
	h.expect(t, "ADVB-READY")
	return h
}

func (h *helper) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case l, ok := <-h.lines:
		if !ok || l != want {
			t.Fatalf("helper said %q (%v), want %q", l, ok, want)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("helper did not say %q", want)
	}
}

// D7c. Auto and a real crash: the only listener claimed the task, then its
// process was killed. Nothing reclaims the claim (only listeners reap), the
// caller — which has a task function — does not fall back: it waits out its
// timeout, and the task stays "active" (counted Running) with nobody
// running it.
func TestAdvBAutoListenerKilledAfterClaim(t *testing.T) {
	e := advSingle(t)
	h := startHelper(t, e.ns, 300*time.Millisecond)
	caller := e.queue(t, taskqueue.WithVisibilityTimeout(300*time.Millisecond), taskqueue.WithTaskFunc(okFn("local")))
	ctx := ctxT(t, 20*time.Second)
	type res struct {
		err  error
		took time.Duration
	}
	done := make(chan res, 1)
	go func() {
		start := time.Now()
		_, err := caller.Query(ctx, "k", "job", nil, taskqueue.WithTimeout(4*time.Second), taskqueue.WithFallbackAfter(300*time.Millisecond))
		done <- res{err, time.Since(start)}
	}()
	h.expect(t, "ADVB-STARTED k")
	time.Sleep(500 * time.Millisecond) // past the fallback point
	_ = h.cmd.Process.Kill()
	r := <-done
	if r.err != nil {
		got, _ := caller.GetTask(ctx, "k")
		st, _ := caller.Stats(ctx, "job")
		t.Fatalf("Auto query whose only listener was killed after claiming: %v after %v; task left %s, stats %+v",
			r.err, r.took.Round(time.Millisecond), stateOf(got), st[0])
	}
}

// Held: a listener killed mid-task; another listener delivers the task
// again about a visibility timeout later, and it completes.
func TestAdvBKilledListenerTaskRedelivered(t *testing.T) {
	e := advSingle(t)
	const vis = 400 * time.Millisecond
	h := startHelper(t, e.ns, vis)
	caller := e.queue(t)
	ctx := ctxT(t, 20*time.Second)
	if _, err := caller.Submit(ctx, "k", "job", nil); err != nil {
		t.Fatal(err)
	}
	h.expect(t, "ADVB-STARTED k")
	b := e.queue(t, taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(okFn("b")))
	listen(t, b, []string{"job"}, 1)
	killed := time.Now()
	_ = h.cmd.Process.Kill()
	task, err := caller.Wait(ctx, "k")
	if err != nil || result(t, task) != "b" || task.Deliveries != 2 {
		t.Fatalf("%v %+v", err, task)
	}
	if d := time.Since(killed); d > vis+2*time.Second {
		t.Fatalf("redelivered %v after the kill", d)
	}
}

// Held: Auto while the only listener is stalled (SIGSTOP) right after it
// advertised itself: the task is queued for it, and the fallback runs it
// locally; the stalled listener, resumed, does not run it.
func TestAdvBAutoListenerStalled(t *testing.T) {
	e := advSingle(t)
	h := startHelper(t, e.ns, 2*time.Second)
	if err := h.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	caller := e.queue(t, taskqueue.WithTaskFunc(okFn("local")))
	ctx := ctxT(t, 20*time.Second)
	if st, _ := caller.Stats(ctx, "job"); st[0].Listeners != 1 {
		t.Fatalf("stats %+v", st)
	}
	task, err := caller.Query(ctx, "s", "job", nil, taskqueue.WithFallbackAfter(300*time.Millisecond))
	if err != nil || result(t, task) != "local" || task.Deliveries > 1 {
		t.Fatalf("%v %+v", err, task)
	}
	_ = h.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case l := <-h.lines:
		t.Fatalf("the resumed listener ran the task taken over: %s", l)
	case <-time.After(500 * time.Millisecond):
	}
}
