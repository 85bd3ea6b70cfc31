package allocator_test

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// The benchmarks run on the shared redis-server of the test binary, each
// pool in a namespace of its own. A pool is filled once per size (in the
// benchmark level that names the size, which runs once), never inside a
// timed loop. The 1 000 000-member pool takes some seconds to fill and
// about 200 MB of the server's memory; -short skips it. For the comparison
// with the no-op script on the same server, and for Redis CPU per call, see
// bench/allocbench.

// benchPoolSizes are the pool sizes of BenchmarkMallocFree.
var benchPoolSizes = []int{100, 10_000, 1_000_000}

// benchFillChunk is how many members one Extend call adds when a pool is
// filled.
const benchFillChunk = 10_000

// benchPool returns a pool of size members in a fresh namespace of b.
func benchPool(b *testing.B, size int, opts ...allocator.Option) (ns string, a *allocator.Allocator) {
	b.Helper()
	ns = redistest.Namespace(b)
	a = benchAlloc(b, ns, opts...)
	fillPool(b, a, "m", size)
	return ns, a
}

// benchAlloc returns an allocator on namespace ns, closed at cleanup.
func benchAlloc(b *testing.B, ns string, opts ...allocator.Option) *allocator.Allocator {
	b.Helper()
	a, err := allocator.New(redistest.Client(b), ns, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Close() })
	return a
}

// fillPool adds size members named prefix<i> to a, benchFillChunk per call.
func fillPool(b *testing.B, a *allocator.Allocator, prefix string, size int) {
	b.Helper()
	ctx := context.Background()
	chunk := make([]string, 0, benchFillChunk)
	for i := 0; i < size; i += benchFillChunk {
		chunk = chunk[:0]
		for j := i; j < min(i+benchFillChunk, size); j++ {
			chunk = append(chunk, prefix+strconv.Itoa(j))
		}
		if _, err := a.Extend(ctx, chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// runPairs runs op b.N times: in a loop for goroutines == 1, else from
// about goroutines goroutines with b.RunParallel.
func runPairs(b *testing.B, goroutines int, op func() error) {
	b.Helper()
	b.ReportAllocs()
	if goroutines == 1 {
		for b.Loop() {
			if err := op(); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((goroutines + procs - 1) / procs)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMallocFree times one MallocLease plus one Free of the lease (two
// round trips) on pools of 100, 10 000 and 1 000 000 members, with batching
// off (WithBatching(0)) and on (the default), from 1 goroutine and from 50
// (b.RunParallel). The lease cost should not grow with the pool.
func BenchmarkMallocFree(b *testing.B) {
	for _, size := range benchPoolSizes {
		b.Run("pool="+strconv.Itoa(size), func(b *testing.B) {
			if size >= 1_000_000 && testing.Short() {
				b.Skip("1 000 000-member pool skipped in -short mode")
			}
			ns, plain := benchPool(b, size, allocator.WithBatching(0))
			batched := benchAlloc(b, ns)
			for _, v := range []struct {
				name string
				a    *allocator.Allocator
			}{{"batching=off", plain}, {"batching=default", batched}} {
				for _, g := range []int{1, 50} {
					b.Run(v.name+"/goroutines="+strconv.Itoa(g), func(b *testing.B) {
						ctx := b.Context()
						runPairs(b, g, func() error {
							l, err := v.a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))
							if err != nil {
								return err
							}
							return l.Free(ctx)
						})
					})
				}
			}
		})
	}
}

// BenchmarkMallocWaitHandoff passes the only member of a pool from
// goroutine to goroutine: each of waiters+1 goroutines loops MallocWait,
// Free, so that waiters goroutines wait while one holds. One op is one
// acquisition (almost always a hand-off from a Free to the longest waiter,
// announced over pub/sub). wake-us/op is the median time from the call of
// Free to the return of the next MallocWait.
func BenchmarkMallocWaitHandoff(b *testing.B) {
	for _, waiters := range []int{1, 50} {
		b.Run("waiters="+strconv.Itoa(waiters), func(b *testing.B) {
			ns := redistest.Namespace(b)
			a := benchAlloc(b, ns)
			if _, err := a.Extend(context.Background(), []string{"only"}); err != nil {
				b.Fatal(err)
			}
			var (
				taken   atomic.Int64
				lastMu  sync.Mutex
				freeAt  time.Time // when the holder called Free
				wakes   []time.Duration
				wg      sync.WaitGroup
				errOnce sync.Once
				runErr  error
			)
			ctx, cancel := context.WithCancel(b.Context())
			defer cancel()
			b.ResetTimer()
			for range waiters + 1 {
				wg.Go(func() {
					for {
						l, err := a.MallocWait(ctx, allocator.WithLeaseTTL(time.Minute))
						if err != nil {
							if ctx.Err() == nil {
								errOnce.Do(func() { runErr = err })
								cancel()
							}
							return
						}
						now := time.Now()
						last := taken.Add(1) >= int64(b.N)
						lastMu.Lock()
						if !freeAt.IsZero() {
							wakes = append(wakes, now.Sub(freeAt))
						}
						freeAt = time.Now()
						lastMu.Unlock()
						if err := l.Free(context.WithoutCancel(ctx)); err != nil {
							errOnce.Do(func() { runErr = err })
							cancel()
							return
						}
						if last {
							cancel()
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if runErr != nil {
				b.Fatal(runErr)
			}
			if len(wakes) > 0 {
				b.ReportMetric(float64(medianDuration(wakes))/float64(time.Microsecond), "wake-us/op")
			}
		})
	}
}

func medianDuration(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkGC times one GC call that reclaims 100 expired leases on pools
// of 1 000 and 100 000 members, and one that finds nothing to reclaim.
// The leases are taken (MallocN, TTL 1 ms) and left to expire outside the
// timed part; the allocator's reclaim budget is 0, so only GC reclaims.
// The cost should follow what is reclaimed, not the pool's size.
func BenchmarkGC(b *testing.B) {
	const expired = 100
	for _, size := range []int{1_000, 100_000} {
		b.Run("pool="+strconv.Itoa(size), func(b *testing.B) {
			_, a := benchPool(b, size, allocator.WithBatching(0), allocator.WithReclaimBudget(0))
			b.Run("expired="+strconv.Itoa(expired), func(b *testing.B) {
				ctx := b.Context()
				b.ReportAllocs()
				for range b.N {
					b.StopTimer()
					if _, err := a.MallocN(ctx, expired, allocator.WithLeaseTTL(time.Millisecond)); err != nil {
						b.Fatal(err)
					}
					time.Sleep(3 * time.Millisecond)
					b.StartTimer()
					st, err := a.GC(ctx, 10*expired)
					if err != nil {
						b.Fatal(err)
					}
					if st.Leases != expired {
						b.Fatalf("GC reclaimed %+v, want %d leases", st, expired)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*expired), "ns/lease")
			})
			b.Run("expired=0", func(b *testing.B) {
				ctx := b.Context()
				b.ReportAllocs()
				for b.Loop() {
					st, err := a.GC(ctx, 10*expired)
					if err != nil {
						b.Fatal(err)
					}
					if st.Total() != 0 {
						b.Fatalf("GC reclaimed %+v, want nothing", st)
					}
				}
			})
		})
	}
}
