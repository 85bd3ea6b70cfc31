package allocator_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// A Malloc that is refused (closed allocator, bad session) must not
// auto-close the live allocation of the name as a side effect.
func TestAdv3AutoCloseOnRefusedMalloc(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{AutoClose: true}))
		other := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"r0", "r1"})))
		ok(t, errOnly(other.Extend(ctx, []string{"x"})))
		sess := must[*allocator.Session](t)(other.NewSession(ctx, time.Minute))
		defer sess.Close(ctx)
		al := must[*allocator.Allocation](t)(a.Malloc(ctx, &adv3Obj{name: "n"}))
		_, err := a.Malloc(ctx, &adv3Obj{name: "n"}, allocator.WithSession(sess))
		if !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Fatalf("session of another pool: %v", err)
		}
		if al.Released() {
			t.Errorf("a Malloc refused for ErrInvalidArgument released the live allocation of its name")
		}
		al2 := al
		if al.Released() {
			al2 = must[*allocator.Allocation](t)(a.Malloc(ctx, &adv3Obj{name: "n"}))
		}
		ok(t, a.Close())
		_, err = a.Malloc(ctx, &adv3Obj{name: "n"})
		if !errors.Is(err, allocator.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
		if al2.Released() {
			t.Errorf("a Malloc refused with ErrClosed released the live allocation of its name")
		}
	})
}

// RefreshIfDue raced by many callers on several allocators: exactly one
// refreshes.
func TestAdv3RefreshIfDueRace(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		ns := redistest.Namespace(t)
		var fetches atomic.Int32
		u := &adv3Updater{n: 1, f: func(ctx context.Context, call int32, _ int) ([]string, error) {
			fetches.Add(1)
			return []string{"r0", "", "r1", "r1"}, nil
		}}
		var as []*allocator.Allocator
		for range 3 {
			as = append(as, tg.allocOn(t, ns, allocator.WithPolicy(allocator.Policy{Updater: u, RefreshInterval: time.Minute})))
		}
		var did atomic.Int32
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, err := as[i%3].RefreshIfDue(ctx)
				if err != nil {
					t.Error(err)
				}
				if d {
					did.Add(1)
				}
			}()
		}
		wg.Wait()
		if did.Load() != 1 || fetches.Load() != 1 {
			t.Fatalf("did %d fetches %d", did.Load(), fetches.Load())
		}
		if ks := sorted(must[[]string](t)(as[0].Keys(ctx))); len(ks) != 2 {
			t.Fatalf("keys %q", ks)
		}
		// Refresh forces; a malloc then does not refresh again
		ok(t, as[1].Refresh(ctx))
		must[*allocator.Lease](t)(as[2].MallocLease(ctx))
		time.Sleep(50 * time.Millisecond)
		if fetches.Load() != 2 {
			t.Fatalf("fetches %d, want 2", fetches.Load())
		}
	})
}
