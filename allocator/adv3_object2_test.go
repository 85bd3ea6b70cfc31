package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// A Refresh whose Open fails on the new key leaves the object on the old
// one — and nothing else changed: the soft binding still names the old
// resource.
func TestAdv3RefreshOpenFailKeepsBinding(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"r0", "r1"})))
		o := &adv3Obj{name: "n"}
		al := must[*allocator.Allocation](t)(a.Malloc(ctx, o))
		if al.Key() != "r0" {
			t.Fatalf("on %q", al.Key())
		}
		o.onOpen = func(_ context.Context, key string) error {
			if key == "r1" {
				return errors.New("cannot open r1")
			}
			return nil
		}
		if err := al.Refresh(ctx); err == nil {
			t.Fatal("refresh succeeded")
		}
		if al.Key() != "r0" || o.Key() != "r0" {
			t.Fatalf("object on %q / %q", al.Key(), o.Key())
		}
		b, okb := must2(t)(a.GetSoftBind(ctx, "n"))
		ok(t, al.Release(ctx))
		checkInvariants(t, a)
		if !okb || b != "r0" {
			t.Fatalf("after a failed Refresh the binding of %q names %q (bound %v), want r0: the next Malloc of the name gets the resource the object could not open", "n", b, okb)
		}
	})
}

func must2(t *testing.T) func(a string, b bool, err error) (string, bool) {
	return func(a string, b bool, err error) (string, bool) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
}

// Model: several objects with odd names, AutoClose, concurrent Malloc,
// Refresh, RefreshUntilHealthy, SetUnhealthy, Release on two allocators of
// one pool. Each object holds exactly one resource while allocated, none
// after; AutoClose never touches the other allocator's allocations.
func TestAdv3ObjectHammer(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		ns := redistest.Namespace(t)
		pol := allocator.WithPolicy(allocator.Policy{AutoClose: true, GCCount: 3})
		a1 := tg.allocOn(t, ns, pol)
		a2 := tg.allocOn(t, ns, pol)
		ok(t, errOnly(a1.Extend(ctx, names("r", 24))))
		objNames := []string{"a b", "\x00", "|bind|x", "}{", strings.Repeat("n", 1024), "é"}
		use := newInUse()
		var mu sync.Mutex
		live := map[*allocator.Allocation]*adv3Obj{}
		var wg sync.WaitGroup
		deadline := time.Now().Add(3 * time.Second)
		for g := 0; g < 12; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := a1
				if g%2 == 1 {
					a = a2
				}
				name := objNames[g%len(objNames)]
				for i := 0; time.Now().Before(deadline); i++ {
					o := &adv3Obj{name: name}
					o.onOpen = func(_ context.Context, key string) error {
						if err := use.take(key); err != nil {
							return fmt.Errorf("open: %w", err)
						}
						return nil
					}
					o.onClose = func(_ context.Context, key string) error { use.put(key); return nil }
					al, err := a.Malloc(ctx, o, allocator.WithLeaseTTL(time.Minute))
					if errors.Is(err, allocator.ErrNoneAvailable) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					live[al] = o
					mu.Unlock()
					switch i % 4 {
					case 0:
						if err := al.Refresh(ctx); err != nil && !errors.Is(err, allocator.ErrNoneAvailable) && !errors.Is(err, allocator.ErrReleased) {
							t.Error("refresh:", err)
						}
					case 1:
						if err := al.RefreshUntilHealthy(ctx, 2, allocator.WithCooldown(20*time.Millisecond)); err != nil && !errors.Is(err, allocator.ErrNoneAvailable) && !errors.Is(err, allocator.ErrReleased) {
							t.Error("refresh until healthy:", err)
						}
					case 2:
						if err := al.SetUnhealthy(ctx, 10*time.Millisecond); err != nil && !errors.Is(err, allocator.ErrReleased) {
							t.Error(err)
						}
					}
					if i%3 == 0 {
						if err := al.Release(ctx); err != nil {
							t.Error("release:", err)
						}
					}
				}
			}()
		}
		wg.Wait()
		// Opens and closes match; at most one live allocation per
		// allocator and name (counted below).
		for al, o := range live {
			if !al.Released() {
				if o.opens.Load()-o.closes.Load() != 1 {
					t.Errorf("live object %q: opens %d closes %d", o.name, o.opens.Load(), o.closes.Load())
				}
			} else if o.opens.Load() != o.closes.Load() {
				t.Errorf("released object %q: opens %d closes %d", o.name, o.opens.Load(), o.closes.Load())
			}
		}
		nlive := 0
		for al := range live {
			if !al.Released() {
				nlive++
			}
		}
		if nlive > 2*len(objNames) {
			t.Errorf("%d live allocations for %d names on 2 allocators (AutoClose)", nlive, len(objNames))
		}
		s := checkInvariants(t, a1)
		if len(s.Leases) != nlive {
			t.Errorf("%d leases for %d live allocations: %v", len(s.Leases), nlive, keysOf(s.Leases))
		}
		for al := range live {
			ok(t, al.Release(ctx))
		}
		time.Sleep(30 * time.Millisecond)
		ok(t, errOnly(a1.GC(ctx, 1000)))
		s = checkInvariants(t, a1)
		if len(s.Leases) != 0 || len(s.Free) != 24 {
			t.Fatalf("after releasing all: leases %v, free %d", keysOf(s.Leases), len(s.Free))
		}
	})
}

// A garbage binding while housekeeping is due: the failing malloc must not
// leave partial state.
func TestAdv3GarbageBindingPartialState(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clk := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clk.Now))
		ok(t, errOnly(a.Extend(ctx, names("r", 6), allocator.WithMemberTTL(time.Minute))))
		ok(t, errOnly(a.Extend(ctx, []string{"p"})))
		for range 3 {
			must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Second)))
		}
		ok(t, errOnly(a.Quarantine(ctx, time.Second, "r5")))
		clk.Advance(2 * time.Second)
		c := tg.client(t)
		ok(t, c.Set(ctx, "{"+a.Prefix()+"|"+a.Suffix()+"}|bind|n", "bogus 1 p", 0).Err())
		_, err := a.MallocLease(ctx, allocator.WithBind("n", 0))
		t.Logf("malloc: %v", err)
		checkInvariants(t, a)
		s := checkInvariants(t, a)
		if len(s.Free)+len(s.Leases) != 7 {
			t.Fatalf("free %v leases %v", s.Free, keysOf(s.Leases))
		}
	})
}
