package allocator_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// newWorkers returns a worker registry on a fresh namespace of tg, and its
// client.
func (tg target) newWorkers(t *testing.T) (*allocator.Workers, redis.UniversalClient) {
	t.Helper()
	c := tg.client(t)
	w, err := allocator.NewWorkers(c, redistest.Namespace(t))
	if err != nil {
		t.Fatal(err)
	}
	return w, c
}

// eventually polls cond every 10 ms until it holds or d has passed.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

func TestWorkersHeartbeatLiveRemove(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		w, c := tg.newWorkers(t)
		if live := must[[]string](t)(w.Live(ctx)); len(live) != 0 {
			t.Fatalf("Live of an empty registry = %v", live)
		}
		ok(t, w.Heartbeat(ctx, "b", time.Minute))
		ok(t, w.Heartbeat(ctx, "a", time.Minute))
		ok(t, w.Heartbeat(ctx, "a", 2*time.Minute)) // again: still one entry
		if live := must[[]string](t)(w.Live(ctx)); !slices.Equal(live, []string{"a", "b"}) {
			t.Fatalf("Live = %v, want [a b]", live)
		}
		if !must[bool](t)(w.IsLive(ctx, "a")) || must[bool](t)(w.IsLive(ctx, "z")) {
			t.Fatal("IsLive wrong")
		}
		if pttl := c.PTTL(ctx, w.Key()).Val(); pttl < time.Minute || pttl > 2*time.Minute {
			t.Fatalf("registry PTTL = %v, want the last deadline, about 2m", pttl)
		}
		if !must[bool](t)(w.Remove(ctx, "a")) {
			t.Fatal("Remove of a live worker reported false")
		}
		if must[bool](t)(w.Remove(ctx, "a")) {
			t.Fatal("second Remove reported true")
		}
		if live := must[[]string](t)(w.Live(ctx)); !slices.Equal(live, []string{"b"}) {
			t.Fatalf("Live after Remove = %v, want [b]", live)
		}
	})
}

func TestWorkersDeadWorkerDropsOut(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		w, c := tg.newWorkers(t)
		ok(t, w.Heartbeat(ctx, "dead", 60*time.Millisecond))
		ok(t, w.Heartbeat(ctx, "alive", time.Minute))
		time.Sleep(100 * time.Millisecond)
		if live := must[[]string](t)(w.Live(ctx)); !slices.Equal(live, []string{"alive"}) {
			t.Fatalf("Live = %v, want [alive]", live)
		}
		if must[bool](t)(w.IsLive(ctx, "dead")) {
			t.Fatal("a lapsed worker is live")
		}
		// The lapsed entry was pruned, not just hidden.
		if n := c.ZCard(ctx, w.Key()).Val(); n != 1 {
			t.Fatalf("registry holds %d entries, want 1", n)
		}
		// A lapsed worker's heartbeat registers it again.
		ok(t, w.Heartbeat(ctx, "dead", time.Minute))
		if !must[bool](t)(w.IsLive(ctx, "dead")) {
			t.Fatal("heartbeat after lapse did not register")
		}
		// An abandoned registry vanishes with its last deadline.
		ok(t, w.Heartbeat(ctx, "x", 50*time.Millisecond))
		for _, id := range []string{"alive", "dead"} {
			must[bool](t)(w.Remove(ctx, id))
		}
		eventually(t, 2*time.Second, "registry key expiry", func() bool { return c.Exists(ctx, w.Key()).Val() == 0 })
	})
}

func TestWorkersInvalidInput(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		w, c := tg.newWorkers(t)
		long := strings.Repeat("x", 1025)
		tests := []struct {
			name string
			call func() error
			want error
		}{
			{"heartbeat empty id", func() error { return w.Heartbeat(ctx, "", time.Minute) }, allocator.ErrInvalidKey},
			{"heartbeat long id", func() error { return w.Heartbeat(ctx, long, time.Minute) }, allocator.ErrInvalidKey},
			{"heartbeat zero ttl", func() error { return w.Heartbeat(ctx, "a", 0) }, allocator.ErrInvalidArgument},
			{"heartbeat negative ttl", func() error { return w.Heartbeat(ctx, "a", -time.Second) }, allocator.ErrInvalidArgument},
			{"heartbeat sub-ms ttl", func() error { return w.Heartbeat(ctx, "a", time.Microsecond) }, allocator.ErrInvalidArgument},
			{"is live empty", func() error { _, err := w.IsLive(ctx, ""); return err }, allocator.ErrInvalidKey},
			{"remove long", func() error { _, err := w.Remove(ctx, long); return err }, allocator.ErrInvalidKey},
			{"run bad ttl", func() error { return w.Run(ctx, "a", 0) }, allocator.ErrInvalidArgument},
			{"start empty id", func() error { _, err := w.Start(ctx, "", time.Second); return err }, allocator.ErrInvalidKey},
		}
		for _, tt := range tests {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
			}
		}
		if n := c.Exists(ctx, w.Key()).Val(); n != 0 {
			t.Fatal("bad input changed the registry")
		}
		for _, tt := range []struct {
			name   string
			client redis.UniversalClient
			prefix string
			opts   []allocator.WorkersOption
			want   error
		}{
			{"nil client", nil, "p", nil, allocator.ErrInvalidArgument},
			{"empty prefix", c, "", nil, allocator.ErrInvalidKey},
			{"brace prefix", c, "a{b", nil, allocator.ErrInvalidKey},
			{"brace suffix", c, "p", []allocator.WorkersOption{allocator.WithWorkersSuffix("x}")}, allocator.ErrInvalidKey},
		} {
			if _, err := allocator.NewWorkers(tt.client, tt.prefix, tt.opts...); !errors.Is(err, tt.want) {
				t.Errorf("NewWorkers %s: %v, want %v", tt.name, err, tt.want)
			}
		}
	})
}

func TestWorkersRun(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		w, _ := tg.newWorkers(t)
		const ttl = 120 * time.Millisecond
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(rctx, "runner", ttl) }()
		eventually(t, time.Second, "Run registers", func() bool { return must[bool](t)(w.IsLive(ctx, "runner")) })
		time.Sleep(3 * ttl) // heartbeats keep it live past its TTL
		if !must[bool](t)(w.IsLive(ctx, "runner")) {
			t.Fatal("a running worker lapsed")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run returned %v", err)
		}
		if must[bool](t)(w.IsLive(ctx, "runner")) {
			t.Fatal("Run did not remove the worker when its ctx ended")
		}
	})
}

func TestWorkersStart(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		w, _ := tg.newWorkers(t)
		const ttl = 120 * time.Millisecond

		closed := must[*allocator.Worker](t)(w.Start(ctx, "closed", ttl))
		orphan := must[*allocator.Worker](t)(w.Start(ctx, "orphan", ttl))
		cctx, cancel := context.WithCancel(ctx)
		cancelled := must[*allocator.Worker](t)(w.Start(cctx, "cancelled", ttl))
		if cancelled.ID() != "cancelled" {
			t.Fatalf("ID = %q", cancelled.ID())
		}
		time.Sleep(2 * ttl)
		if live := must[[]string](t)(w.Live(ctx)); !slices.Equal(live, []string{"cancelled", "closed", "orphan"}) {
			t.Fatalf("Live = %v", live)
		}

		ok(t, closed.Close(ctx))
		ok(t, closed.Close(ctx)) // idempotent
		<-closed.Done()
		if must[bool](t)(w.IsLive(ctx, "closed")) {
			t.Fatal("Close did not remove the worker")
		}

		cancel()
		<-cancelled.Done()
		eventually(t, time.Second, "removal after ctx end", func() bool { return !must[bool](t)(w.IsLive(ctx, "cancelled")) })

		orphan.Orphan()
		if !must[bool](t)(w.IsLive(ctx, "orphan")) {
			t.Fatal("Orphan removed the worker")
		}
		eventually(t, time.Second, "orphan lapses", func() bool { return !must[bool](t)(w.IsLive(ctx, "orphan")) })
	})
}
