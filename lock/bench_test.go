package lock_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/lock"
)

// Each benchmark iteration takes and releases one lock on its own key, so
// the figures measure the library and Redis, not contention on one key.
// Goroutines: 1 runs the loop serially; 50 uses b.RunParallel with
// SetParallelism so that 50 goroutines share the client.

func benchLocker(b *testing.B, opts ...lock.Option) *lock.Lock {
	b.Helper()
	c := redistest.Client(b)
	l, err := lock.New(c, redistest.Namespace(b), opts...)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func runBench(b *testing.B, goroutines int, op func(key string) error) {
	b.Helper()
	var seq atomic.Int64
	b.ReportAllocs()
	if goroutines == 1 {
		for i := 0; b.Loop(); i++ {
			if err := op("k" + strconv.Itoa(i%1024)); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism((goroutines + runtimeProcs() - 1) / runtimeProcs())
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// Keys of its own, so that no goroutine finds a key another one
		// holds (a descheduled holder would otherwise meet a sequence that
		// wrapped around).
		prefix := "k" + strconv.FormatInt(seq.Add(1), 10) + "-"
		for i := 0; pb.Next(); i++ {
			if err := op(prefix + strconv.Itoa(i%64)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkLockUnlock(b *testing.B) {
	for _, g := range []int{1, 50} {
		b.Run("goroutines="+strconv.Itoa(g), func(b *testing.B) {
			ctx, l := b.Context(), benchLocker(b)
			runBench(b, g, func(key string) error {
				if _, err := l.Lock(ctx, key, "v", time.Minute); err != nil {
					return err
				}
				_, err := l.Unlock(ctx, key)
				return err
			})
		})
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	benchAcquireRelease(b)
}

// BenchmarkAcquireReleaseUnbatched is BenchmarkAcquireRelease with
// batching off (WithBatching(0)).
func BenchmarkAcquireReleaseUnbatched(b *testing.B) {
	benchAcquireRelease(b, lock.WithBatching(0))
}

func benchAcquireRelease(b *testing.B, opts ...lock.Option) {
	for _, g := range []int{1, 50} {
		b.Run("goroutines="+strconv.Itoa(g), func(b *testing.B) {
			ctx, l := b.Context(), benchLocker(b, opts...)
			runBench(b, g, func(key string) error {
				h, err := l.TryAcquire(ctx, key, time.Minute)
				if err != nil {
					return err
				}
				return h.Release(ctx)
			})
		})
	}
}

func BenchmarkMemoryAcquireRelease(b *testing.B) {
	for _, g := range []int{1, 50} {
		b.Run("goroutines="+strconv.Itoa(g), func(b *testing.B) {
			ctx, l := b.Context(), lock.NewMemory()
			runBench(b, g, func(key string) error {
				h, err := l.TryAcquire(ctx, key, time.Minute)
				if err != nil {
					return err
				}
				return h.Release(ctx)
			})
		})
	}
}

// BenchmarkNoopScript is the floor: one EVALSHA of a script that does
// nothing, over the same client.
func BenchmarkNoopScript(b *testing.B) {
	for _, g := range []int{1, 50} {
		b.Run("goroutines="+strconv.Itoa(g), func(b *testing.B) {
			ctx, c := b.Context(), redistest.Client(b)
			s := redis.NewScript("return 1")
			runBench(b, g, func(key string) error {
				return s.Run(ctx, c, []string{key}).Err()
			})
		})
	}
}
