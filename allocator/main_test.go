package allocator_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHammer())
	}
	redistest.Main(m)
}

// target is one Redis deployment the shared suite runs on.
type target struct {
	name   string
	client func(t testing.TB) redis.UniversalClient
	opts   []allocator.Option
}

// targets: the single node without batching, the 3-master cluster with
// the default batching.
var targets = []target{
	{name: "single", client: func(t testing.TB) redis.UniversalClient { return redistest.Client(t) }, opts: []allocator.Option{allocator.WithBatching(0)}},
	{name: "cluster", client: func(t testing.TB) redis.UniversalClient { return redistest.StartCluster(t) }},
}

// forTargets runs f on every target, in parallel subtests.
func forTargets(t *testing.T, f func(t *testing.T, tg target)) {
	t.Helper()
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel()
			f(t, tg)
		})
	}
}

// newAlloc returns an allocator on a fresh namespace of tg.
func (tg target) newAlloc(t testing.TB, opts ...allocator.Option) *allocator.Allocator {
	t.Helper()
	return tg.allocOn(t, redistest.Namespace(t), opts...)
}

// allocOn returns an allocator on namespace ns of tg, closed at cleanup.
func (tg target) allocOn(t testing.TB, ns string, opts ...allocator.Option) *allocator.Allocator {
	t.Helper()
	a, err := allocator.New(tg.client(t), ns, append(append([]allocator.Option{}, tg.opts...), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// fakeClock is a settable test clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return s
}

func must[T any](t testing.TB) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func ok(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkInvariants takes an atomic snapshot of the pool and checks the
// data model's invariants.
func checkInvariants(t testing.TB, a *allocator.Allocator) *allocator.Snapshot {
	t.Helper()
	s, err := a.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Problems(); len(p) > 0 {
		t.Fatalf("pool invariants broken:\n%s", strings.Join(p, "\n"))
	}
	return s
}

// inUse records which resources a test's holders hold, failing a second
// concurrent holder.
type inUse struct {
	mu   sync.Mutex
	held map[string]bool
}

func newInUse() *inUse { return &inUse{held: map[string]bool{}} }

func (u *inUse) take(k string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.held[k] {
		return fmt.Errorf("%q leased twice at once", k)
	}
	u.held[k] = true
	return nil
}

func (u *inUse) put(k string) {
	u.mu.Lock()
	delete(u.held, k)
	u.mu.Unlock()
}

func nan() float64 { return math.NaN() }
