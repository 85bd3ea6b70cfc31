package allocator_test

import (
	"context"
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

func adv3Workers(t *testing.T, tg target) (*allocator.Workers, context.Context) {
	w, err := allocator.NewWorkers(tg.client(t), redistest.Namespace(t))
	if err != nil {
		t.Fatal(err)
	}
	return w, context.Background()
}

// Bad input changes nothing; odd ids and huge TTLs work; entries lapse.
func TestAdv3WorkersInput(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		w, ctx := adv3Workers(t, tg)
		c := tg.client(t)
		ok(t, w.Heartbeat(ctx, "base", time.Hour))
		snap := func() map[string]float64 {
			zs := must[[]redis.Z](t)(c.ZRangeWithScores(ctx, w.Key(), 0, -1).Result())
			m := map[string]float64{}
			for _, z := range zs {
				m[z.Member.(string)] = z.Score
			}
			return m
		}
		before := snap()
		for _, tc := range []struct {
			id  string
			ttl time.Duration
		}{{"", time.Second}, {strings.Repeat("x", 1025), time.Second}, {"ok", 0}, {"ok", -time.Second}, {"ok", 999 * time.Microsecond}, {"ok", math.MinInt64}} {
			if err := w.Heartbeat(ctx, tc.id, tc.ttl); err == nil {
				t.Errorf("Heartbeat(%q,%v) accepted", tc.id[:min(len(tc.id), 5)], tc.ttl)
			}
		}
		for _, id := range []string{"", strings.Repeat("y", 1025)} {
			if _, err := w.IsLive(ctx, id); !errors.Is(err, allocator.ErrInvalidKey) {
				t.Errorf("IsLive: %v", err)
			}
			if _, err := w.Remove(ctx, id); !errors.Is(err, allocator.ErrInvalidKey) {
				t.Errorf("Remove: %v", err)
			}
		}
		if _, err := w.Start(ctx, "", time.Second); err == nil {
			t.Error("Start with empty id")
		}
		if err := w.Run(ctx, "x", 0); err == nil {
			t.Error("Run with 0 TTL")
		}
		after := snap()
		if len(after) != len(before) || after["base"] != before["base"] {
			t.Fatalf("bad input changed the registry: %v → %v", before, after)
		}
		// odd ids, huge TTL
		odd := []string{"a b", "\x00", "|", "}{", "é", strings.Repeat("z", 1024), "-inf", "+inf", "[x", "(x"}
		for _, id := range odd {
			ok(t, w.Heartbeat(ctx, id, time.Duration(math.MaxInt64)))
			if !must[bool](t)(w.IsLive(ctx, id)) {
				t.Fatalf("%q not live", id)
			}
		}
		live := must[[]string](t)(w.Live(ctx))
		if len(live) != len(odd)+1 {
			t.Fatalf("live %d, want %d", len(live), len(odd)+1)
		}
		pttl := must[time.Duration](t)(c.PTTL(ctx, w.Key()).Result())
		if pttl < 100*365*24*time.Hour {
			t.Fatalf("registry PTTL %v with a 292-year heartbeat", pttl)
		}
		for _, id := range odd {
			if !must[bool](t)(w.Remove(ctx, id)) {
				t.Fatalf("remove %q", id)
			}
		}
		// lapse: short TTL
		ok(t, w.Heartbeat(ctx, "short", 30*time.Millisecond))
		ok(t, errOnly(w.Remove(ctx, "base")))
		time.Sleep(80 * time.Millisecond)
		if must[bool](t)(w.IsLive(ctx, "short")) {
			t.Fatal("lapsed worker live")
		}
		if n := must[int64](t)(c.Exists(ctx, w.Key()).Result()); n != 0 {
			t.Fatalf("registry key survives its last deadline")
		}
	})
}

// Start/Close/Orphan: Close removes at once, Orphan lapses, ctx end
// removes; no goroutine left.
func TestAdv3WorkersLifecycle(t *testing.T) {
	tg := targets[0]
	w, ctx := adv3Workers(t, tg)
	base := runtime.NumGoroutine()
	for i := 0; i < 10; i++ {
		a := must[*allocator.Worker](t)(w.Start(ctx, "a", 60*time.Millisecond))
		b := must[*allocator.Worker](t)(w.Start(ctx, "b", 60*time.Millisecond))
		cctx, cancel := context.WithCancel(ctx)
		c := must[*allocator.Worker](t)(w.Start(cctx, "c", 60*time.Millisecond))
		time.Sleep(100 * time.Millisecond)
		live := must[[]string](t)(w.Live(ctx))
		if len(live) != 3 {
			t.Fatalf("live %v", live)
		}
		ok(t, a.Close(ctx))
		ok(t, a.Close(ctx))
		b.Orphan()
		b.Orphan()
		cancel()
		<-c.Done()
		if must[bool](t)(w.IsLive(ctx, "a")) || must[bool](t)(w.IsLive(ctx, "c")) {
			t.Fatal("closed/ended worker live")
		}
		if !must[bool](t)(w.IsLive(ctx, "b")) {
			t.Fatal("orphan gone at once")
		}
		time.Sleep(70 * time.Millisecond)
		if must[bool](t)(w.IsLive(ctx, "b")) {
			t.Fatal("orphan did not lapse")
		}
		ok(t, c.Close(ctx))
	}
	for range 100 {
		if runtime.NumGoroutine() <= base+2 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("goroutines %d → %d", base, runtime.NumGoroutine())
}
