package taskqueue_test

// Adversarial tests (round B) of edge inputs that the code under test
// handles: they are expected to PASS (attacks that held).

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// Timeouts from 1 ms to the largest Duration: expiry, record TTL and the
// result's life come out right (no exponent notation or overflow in the
// scripts' arithmetic), for local and remote runs and Submit.
func TestAdvBExtremeTimeouts(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		worker := e.queue(t, taskqueue.WithTaskFunc(okFn("remote")))
		caller := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if d, ok := ctx.Deadline(); !ok || d.After(task.Expiry) || task.Expiry.Before(time.Now().Add(50*365*24*time.Hour)) {
				return nil, errors.New("run deadline after the expiry, or expiry too soon")
			}
			return task.Expiry.UnixMilli(), nil
		}))
		listen(t, worker, []string{"job"}, 2)
		ctx := ctxT(t, 20*time.Second)
		for _, d := range []time.Duration{100 * 365 * 24 * time.Hour, time.Duration(math.MaxInt64)} {
			for _, p := range []taskqueue.Policy{taskqueue.Local, taskqueue.Remote} {
				id := p.String() + "-" + d.String()
				before := time.Now()
				task, err := caller.Query(ctx, id, "job", nil, taskqueue.WithPolicy(p), taskqueue.WithTimeout(d))
				if err != nil {
					t.Fatalf("%s: %v", id, err)
				}
				got, err := caller.GetTask(ctx, id)
				if err != nil {
					t.Fatalf("%s: %v", id, err)
				}
				want := before.Add(d)
				if got.Expiry.Sub(want).Abs() > 5*time.Second {
					t.Errorf("%s: expiry %v, want about %v", id, got.Expiry, want)
				}
				if p == taskqueue.Local {
					var ms int64
					if err := task.DecodeResult(&ms); err != nil || ms != got.Expiry.UnixMilli() {
						t.Errorf("%s: the run saw expiry %d, stored %d (%v)", id, ms, got.Expiry.UnixMilli(), err)
					}
				}
				ttl, err := caller.Raw().PTTL(ctx, taskqueue.TaskKey(caller, id)).Result()
				if err != nil || ttl < d.Truncate(time.Millisecond)-5*time.Second {
					t.Errorf("%s: result TTL %v (%v), want ≈ %v", id, ttl, err, d)
				}
			}
		}
		if ok, err := caller.Submit(ctx, "sub-max", "nobody", nil, taskqueue.WithTimeout(time.Duration(math.MaxInt64)), taskqueue.WithMaxAttempts(math.MaxInt)); !ok || err != nil {
			t.Fatal(ok, err)
		}
		// (raw PTTL: 2×timeout+60 s overflows go-redis's Duration)
		ttlMs, _ := caller.Raw().Do(ctx, "pttl", taskqueue.TaskKey(caller, "sub-max")).Int64()
		if ttlMs < 2*(math.MaxInt64/int64(time.Millisecond)) {
			t.Errorf("pending record TTL %d ms", ttlMs)
		}

		// 1 ms: locally, remotely, submitted; nothing hangs or runs late.
		r := newRuns()
		quick := e.queue(t, taskqueue.WithTaskFunc(r.fn("local")))
		if _, err := quick.Query(ctx, "ms-local", "ok", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(time.Millisecond)); err != nil &&
			!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, taskqueue.ErrTaskFailed) {
			t.Errorf("1ms local: %v", err)
		}
		start := time.Now()
		if _, err := quick.Query(ctx, "ms-remote", "nobody", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithTimeout(time.Millisecond)); !errors.Is(err, taskqueue.ErrTimeout) {
			t.Errorf("1ms remote: %v", err)
		}
		if time.Since(start) > time.Second {
			t.Errorf("1ms remote query took %v", time.Since(start))
		}
		if _, err := quick.Submit(ctx, "ms-sub", "ok", nil, taskqueue.WithTimeout(time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		var logs syncBuffer
		listen(t, e.queue(t, taskqueue.WithTaskFunc(r.fn("remote")), taskqueue.WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))), []string{"ok"}, 1)
		// Expired, its record is kept 1 ms (its timeout): the log line tells.
		waitUntil(t, 5*time.Second, "the 1ms task skipped as expired", func() bool {
			return strings.Contains(logs.String(), "id=ms-sub reason=expired")
		})
		if r.count("ms-sub") != 0 {
			t.Fatalf("an expired task ran")
		}
	})
}

// Params at the limit pass, one byte over is refused with nothing written;
// results: over the limit, not encodable, typed nil, raw JSON (valid and
// not), panics, nil — locally and remotely; the stored record stays JSON.
func TestAdvBPayloadsAndResults(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		const limit = 100 << 10
		type P struct{ A int }
		fn := func(ctx context.Context, task *taskqueue.Task) (any, error) {
			switch task.Name {
			case "big":
				return strings.Repeat("y", limit-2), nil // exactly the limit, over the inline size
			case "huge":
				return strings.Repeat("y", limit-1), nil
			case "chan":
				return make(chan int), nil
			case "typednil":
				var p *P
				return p, nil
			case "raw":
				return json.RawMessage(` {"a": [1, 2]} `), nil
			case "badraw":
				return json.RawMessage(`{`), nil
			case "nilraw":
				return json.RawMessage(nil), nil
			case "panic":
				panic("kaboom")
			case "nil":
				return nil, nil
			}
			return nil, errors.New("unknown")
		}
		worker := e.queue(t, taskqueue.WithMaxPayload(limit), taskqueue.WithTaskFunc(fn))
		caller := e.queue(t, taskqueue.WithMaxPayload(limit), taskqueue.WithTaskFunc(fn))
		names := []string{"big", "huge", "chan", "typednil", "raw", "badraw", "nilraw", "panic", "nil"}
		listen(t, worker, names, 4)
		ctx := ctxT(t, 30*time.Second)

		atLimit := strings.Repeat("p", limit-2)
		if ok, err := caller.Submit(ctx, "p-ok", "nobody", atLimit); !ok || err != nil {
			t.Fatalf("params at the limit: %v %v", ok, err)
		}
		if _, err := caller.Submit(ctx, "p-over", "nobody", atLimit+"p"); !errors.Is(err, taskqueue.ErrPayloadTooLarge) {
			t.Fatalf("params one byte over: %v", err)
		}
		if _, err := caller.Query(ctx, "p-over", "nobody", json.RawMessage(`"`+atLimit+`p"`)); !errors.Is(err, taskqueue.ErrPayloadTooLarge) {
			t.Fatalf("raw params one byte over: %v", err)
		}
		if n, _ := caller.Raw().Exists(ctx, taskqueue.TaskKey(caller, "p-over")).Result(); n != 0 {
			t.Fatal("refused params wrote a task")
		}

		want := map[string]string{"big": `"` + strings.Repeat("y", limit-2) + `"`, "typednil": "null", "raw": `{"a":[1,2]}`, "nilraw": "null", "nil": "null"}
		fails := map[string]string{"huge": "payload too large", "chan": "unsupported type", "badraw": "MarshalJSON", "panic": "panicked: kaboom"}
		for _, p := range []taskqueue.Policy{taskqueue.Local, taskqueue.Remote} {
			for _, n := range names {
				id := p.String() + "-" + n
				task, err := caller.Query(ctx, id, n, nil, taskqueue.WithPolicy(p), taskqueue.WithMaxAttempts(3))
				stored, gerr := caller.GetTask(ctx, id)
				if gerr != nil {
					t.Fatalf("%s: %v", id, gerr)
				}
				if w, ok := want[n]; ok {
					if err != nil || string(task.Result) != w || string(stored.Result) != w {
						t.Errorf("%s: %v, result %.40q stored %.40q, want %.40q", id, err, task.Result, stored.Result, w)
					}
					continue
				}
				var te *taskqueue.TaskError
				if !errors.As(err, &te) || !strings.Contains(te.Message, fails[n]) {
					t.Errorf("%s: %v, want a task error with %q", id, err, fails[n])
				}
				if len(stored.Result) != 0 && !json.Valid(stored.Result) {
					t.Errorf("%s: stored result %q is not JSON", id, stored.Result)
				}
				// A result that cannot be stored is not retried (ErrSkipRetry); a panic is.
				if p == taskqueue.Remote && n != "panic" && stored.Deliveries != 1 {
					t.Errorf("%s: %d deliveries", id, stored.Deliveries)
				}
			}
		}
	})
}

// Progress values at the edges of float64 are saved and delivered as given;
// NaN and infinities are refused.
func TestAdvBProgressEdgeFloats(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		vals := [][2]float64{{math.MaxFloat64, -math.MaxFloat64}, {-5, 0}, {5e-324, -5e-324}, {math.Copysign(0, -1), 1e-300}, {123456789.123456789, 1}}
		step := make(chan struct{})
		errs := make(chan error, 16)
		var worker *taskqueue.Queue
		worker = e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			for _, v := range vals {
				<-step
				errs <- task.Update(ctx, v[0], v[1])
				got, err := worker.GetTask(ctx, task.ID)
				if err != nil || got.Progress.Current != v[0] || got.Progress.Total != v[1] {
					errs <- errors.New("saved progress differs")
				}
			}
			for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
				if err := task.Update(ctx, bad, 1); !errors.Is(err, taskqueue.ErrInvalidArgument) {
					errs <- errors.New("non-finite progress accepted")
				}
			}
			return "ok", nil
		}))
		listen(t, worker, []string{"p"}, 1)
		caller := e.queue(t)
		seen := make(chan taskqueue.Progress, 100)
		done := make(chan error, 1)
		go func() {
			_, err := caller.Query(ctxT(t, 20*time.Second), "prog", "p", nil, taskqueue.WithPolicy(taskqueue.Remote),
				taskqueue.WithProgress(func(p taskqueue.Progress) { seen <- p }))
			done <- err
		}()
		for _, v := range vals {
			step <- struct{}{}
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
			select {
			case p := <-seen:
				if p.Current != v[0] || p.Total != v[1] || math.Signbit(p.Current) != math.Signbit(v[0]) {
					t.Fatalf("caller saw %v/%v, want %v/%v", p.Current, p.Total, v[0], v[1])
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("progress %v not delivered", v)
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
	})
}

// Edge ids and names: exactly at the key limit work end to end; every bad
// input is refused before anything is written.
func TestAdvBKeyLimits(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			return len(task.ID) + len(task.Name), nil
		}))
		id, name := strings.Repeat("i", 1024), strings.Repeat("n", 1024)
		listen(t, worker, []string{name}, 1)
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		task, err := caller.Query(ctx, id, name, nil, taskqueue.WithPolicy(taskqueue.Remote))
		if err != nil || string(task.Result) != "2048" {
			t.Fatalf("ids and names at the limit: %v", err)
		}
		for _, f := range []func() error{
			func() error { _, err := caller.Wait(ctx, ""); return err },
			func() error { _, err := caller.GetTask(ctx, id+"x"); return err },
			func() error { _, err := caller.Cancel(ctx, ""); return err },
			func() error { return caller.Requeue(ctx, "") },
			func() error { _, err := caller.DeadLetters(ctx, name+"x", 1); return err },
			func() error { _, err := caller.Stats(ctx, "ok", ""); return err },
		} {
			if err := f(); !errors.Is(err, taskqueue.ErrInvalidKey) {
				t.Errorf("bad key accepted: %v", err)
			}
		}
		if _, err := caller.DeadLetters(ctx, name, 0); !errors.Is(err, taskqueue.ErrInvalidArgument) {
			t.Errorf("DeadLetters(0): %v", err)
		}
		if _, err := caller.Query(ctx, "x", "n", nil, taskqueue.WithFallbackAfter(-1)); !errors.Is(err, taskqueue.ErrInvalidArgument) {
			t.Errorf("negative fallback: %v", err)
		}
		if _, err := caller.Query(ctx, "x", "n", json.RawMessage(" "), taskqueue.WithTimeout(999*time.Microsecond)); !errors.Is(err, taskqueue.ErrInvalidArgument) {
			t.Errorf("sub-ms timeout: %v", err)
		}
		for _, o := range []taskqueue.Option{taskqueue.WithGracePeriod(-1), taskqueue.WithMaxLost(0), taskqueue.WithDeadLetterTTL(time.Millisecond),
			taskqueue.WithBatching(-1), taskqueue.WithRetryBackoff(nil), taskqueue.WithVisibilityTimeout(99 * time.Millisecond)} {
			if _, err := taskqueue.New(e.tg.client(t), e.ns, o); !errors.Is(err, taskqueue.ErrInvalidArgument) {
				t.Errorf("New accepted a bad option: %v", err)
			}
		}
		if _, err := taskqueue.New(nil, e.ns); err == nil {
			t.Error("New accepted a nil client")
		}
		if n, _ := caller.Raw().Exists(ctx, taskqueue.TaskKey(caller, "x")).Result(); n != 0 {
			t.Fatal("bad input wrote a task")
		}
	})
}

// A huge max attempts keeps retrying; the retries are counted.
func TestAdvBHugeMaxAttempts(t *testing.T) {
	e := advSingle(t)
	var n atomic.Int64
	worker := e.queue(t, taskqueue.WithRetryBackoff(func(int) time.Duration { return 5 * time.Millisecond }),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if n.Add(1) < 5 {
				return nil, errors.New("again")
			}
			return task.Attempts, nil
		}))
	listen(t, worker, []string{"r"}, 1)
	caller := e.queue(t)
	task, err := caller.Query(ctxT(t, 10*time.Second), "r", "r", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithMaxAttempts(math.MaxInt))
	if err != nil || string(task.Result) != "4" || task.Attempts != 4 {
		t.Fatalf("%v %+v", err, task)
	}
}
