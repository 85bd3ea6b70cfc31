package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// testObj is an Object that records what the allocator does to it.
type testObj struct {
	allocator.BaseObject
	name    string
	setErr  error
	openErr map[string]error // by key
	healthy func(key string) bool

	mu     sync.Mutex
	events []string
}

func (o *testObj) Name() string { return o.name }

func (o *testObj) SetConfig(key string, params map[string]any) error {
	if o.setErr != nil {
		return o.setErr
	}
	return o.BaseObject.SetConfig(key, params)
}

func (o *testObj) Open(context.Context) error {
	if err := o.openErr[o.Key()]; err != nil {
		return err
	}
	o.record("open " + o.Key())
	return nil
}

func (o *testObj) Close(context.Context) error {
	o.record("close " + o.Key())
	return nil
}

func (o *testObj) Healthy(context.Context) bool {
	return o.healthy == nil || o.healthy(o.Key())
}

func (o *testObj) record(e string) {
	o.mu.Lock()
	o.events = append(o.events, e)
	o.mu.Unlock()
}

func (o *testObj) log() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.events)
}

func TestMallocObject(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"a", "b"})))
		o := &testObj{}
		params := map[string]any{"region": "eu"}
		al := must[*allocator.Allocation](t)(a.MallocWithParams(ctx, o, params, allocator.WithLeaseTTL(time.Minute)))
		if al.Key() != "a" || o.Key() != "a" || al.Lease().Key() != "a" || al.Object() != allocator.Object(o) {
			t.Fatalf("allocation on %q, object on %q", al.Key(), o.Key())
		}
		if !maps.Equal(o.Params(), params) || !maps.Equal(al.Params(), params) {
			t.Fatalf("params %v, want %v", o.Params(), params)
		}
		if got := o.log(); !slices.Equal(got, []string{"open a"}) {
			t.Fatalf("events %v", got)
		}
		if _, leased := checkInvariants(t, a).Leases["a"]; !leased {
			t.Fatal("the object's resource is not leased")
		}
		ok(t, al.Renew(ctx, 2*time.Minute))

		ok(t, al.Release(ctx))
		ok(t, al.Release(ctx)) // idempotent
		if got := o.log(); !slices.Equal(got, []string{"open a", "close a"}) {
			t.Fatalf("events %v", got)
		}
		if !al.Released() || !errors.Is(al.Lease().Err(), allocator.ErrFreed) {
			t.Fatalf("after Release: released %v, lease %v", al.Released(), al.Lease().Err())
		}
		if !checkInvariants(t, a).Members["a"].Free {
			t.Fatal("Release did not free the resource")
		}
		for name, f := range map[string]func() error{
			"Renew":        func() error { return al.Renew(ctx, time.Minute) },
			"Refresh":      func() error { return al.Refresh(ctx) },
			"SetHealthy":   func() error { return al.SetHealthy(ctx) },
			"SetUnhealthy": func() error { return al.SetUnhealthy(ctx, time.Minute) },
			"Refresh until healthy": func() error {
				return al.RefreshUntilHealthy(ctx, 3)
			},
		} {
			if err := f(); !errors.Is(err, allocator.ErrReleased) {
				t.Errorf("%s after Release: %v", name, err)
			}
		}
		if got := o.log(); len(got) != 2 {
			t.Fatalf("the object was used after Release: %v", got)
		}

		// Malloc is MallocWithParams with nil params.
		al = must[*allocator.Allocation](t)(a.Malloc(ctx, &allocator.BaseObject{}))
		if obj, okType := al.Object().(*allocator.BaseObject); !okType || obj.Key() != al.Key() || obj.Params() != nil {
			t.Fatalf("Malloc configured %#v", al.Object())
		}
	})
}

func TestMallocObjectFailures(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"a"})))
		errBoom := errors.New("boom")
		for _, tt := range []struct {
			name string
			obj  allocator.Object
			want error
		}{
			{"nil object", nil, allocator.ErrInvalidArgument},
			{"set config fails", &testObj{setErr: errBoom}, errBoom},
			{"open fails", &testObj{openErr: map[string]error{"a": errBoom}}, errBoom},
			{"name too long", &testObj{name: string(make([]byte, 1025))}, allocator.ErrInvalidKey},
		} {
			if _, err := a.Malloc(ctx, tt.obj); !errors.Is(err, tt.want) {
				t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
			}
			s := checkInvariants(t, a)
			if len(s.Leases) != 0 || !s.Members["a"].Free {
				t.Fatalf("%s: the failed malloc left a lease: %v", tt.name, s.Leases)
			}
		}
		// Nothing free: the object is not opened.
		must[*allocator.Lease](t)(a.MallocLease(ctx))
		o := &testObj{}
		if _, err := a.Malloc(ctx, o); !errors.Is(err, allocator.ErrNoneAvailable) {
			t.Fatalf("Malloc on an exhausted pool: %v", err)
		}
		if got := o.log(); len(got) != 0 {
			t.Fatalf("the object was used: %v", got)
		}
	})
}

func TestMallocObjectSoftBinding(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"a", "b", "c"})))
		al := must[*allocator.Allocation](t)(a.Malloc(ctx, &testObj{name: "svc"}))
		if k, found, err := a.GetSoftBind(ctx, "svc"); err != nil || !found || k != al.Key() {
			t.Fatalf("binding of svc: %q %v %v, want %q", k, found, err, al.Key())
		}
		first := al.Key()
		ok(t, al.Release(ctx)) // first goes to the back of the free queue
		al = must[*allocator.Allocation](t)(a.Malloc(ctx, &testObj{name: "svc"}))
		if al.Key() != first {
			t.Fatalf("an object of the same name got %q, want its bound %q", al.Key(), first)
		}
		// A WithBind in the options overrides the name's binding.
		al2 := must[*allocator.Allocation](t)(a.Malloc(ctx, &testObj{name: "svc"}, allocator.WithBind("other", time.Minute)))
		if k, found, _ := a.GetSoftBind(ctx, "other"); !found || k != al2.Key() {
			t.Fatalf("binding of other: %q %v, want %q", k, found, al2.Key())
		}
		checkInvariants(t, a)
	})
}

func TestAllocationRefresh(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"a", "b", "c"})))
		o := &testObj{name: "svc", openErr: map[string]error{"c": errors.New("c refuses")}}
		al := must[*allocator.Allocation](t)(a.Malloc(ctx, o))
		ok(t, al.Refresh(ctx))
		if al.Key() != "b" || o.Key() != "b" {
			t.Fatalf("refreshed to %q (object on %q), want b", al.Key(), o.Key())
		}
		if got := o.log(); !slices.Equal(got, []string{"open a", "close a", "open b"}) {
			t.Fatalf("events %v", got)
		}
		s := checkInvariants(t, a)
		if !s.Members["a"].Free {
			t.Fatal("the old resource was not freed")
		}
		if k, _, _ := a.GetSoftBind(ctx, "svc"); k != "b" {
			t.Fatalf("binding moved to %q, want b", k)
		}

		// The object fails to open on c (next free, before the freed a): it
		// goes back to b, and c is freed.
		err := al.Refresh(ctx)
		if err == nil || al.Key() != "b" || o.Key() != "b" {
			t.Fatalf("Refresh onto a failing resource: %v, on %q", err, al.Key())
		}
		if got := o.log(); !slices.Equal(got[3:], []string{"close b", "open b"}) {
			t.Fatalf("events %v", got)
		}
		s = checkInvariants(t, a)
		if !s.Members["c"].Free {
			t.Fatal("the failed refresh kept c")
		}
		if _, leased := s.Leases["b"]; !leased {
			t.Fatal("the failed refresh lost b")
		}

		// Nothing else free: nothing changes.
		must[[]*allocator.Lease](t)(a.MallocN(ctx, 2)) // takes a and c
		n := len(o.log())
		if err := al.Refresh(ctx); !errors.Is(err, allocator.ErrNoneAvailable) {
			t.Fatalf("Refresh on an exhausted pool: %v", err)
		}
		if al.Key() != "b" || len(o.log()) != n {
			t.Fatalf("a refresh that found nothing changed the allocation: %q %v", al.Key(), o.log())
		}
		ok(t, al.Renew(ctx, time.Minute))
		checkInvariants(t, a)
	})
}

func TestAllocationHealth(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clk := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clk.Now))
		ok(t, errOnly(a.Extend(ctx, []string{"a", "b"})))
		al := must[*allocator.Allocation](t)(a.Malloc(ctx, &testObj{}))
		if err := al.SetUnhealthy(ctx, 0); !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Fatalf("SetUnhealthy(0): %v", err)
		}
		ok(t, al.SetUnhealthy(ctx, time.Minute))
		if q := quarantined(checkInvariants(t, a)); !slices.Equal(q, []string{"a"}) {
			t.Fatalf("quarantined %v", q)
		}
		ok(t, al.Renew(ctx, time.Minute)) // the lease is kept
		ok(t, al.SetHealthy(ctx))
		if q := quarantined(checkInvariants(t, a)); len(q) != 0 {
			t.Fatalf("quarantined after SetHealthy: %v", q)
		}
		// Released while quarantined: back only after the cooldown.
		ok(t, al.SetUnhealthy(ctx, time.Minute))
		ok(t, al.Release(ctx))
		if checkInvariants(t, a).Members["a"].Free {
			t.Fatal("a quarantined resource came back at release")
		}
		clk.Advance(time.Minute)
		ok(t, errOnly(a.GC(ctx, 10)))
		if !checkInvariants(t, a).Members["a"].Free {
			t.Fatal("the resource did not come back after the cooldown")
		}
	})
}

func TestAllocationRefreshUntilHealthy(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clk := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clk.Now))
		ok(t, errOnly(a.Extend(ctx, []string{"a", "b", "c", "d"})))

		o := &testObj{healthy: func(k string) bool { return k == "c" }}
		al := must[*allocator.Allocation](t)(a.Malloc(ctx, o))
		ok(t, al.RefreshUntilHealthy(ctx, 5, allocator.WithCooldown(time.Hour)))
		if al.Key() != "c" {
			t.Fatalf("ended on %q, want the healthy c", al.Key())
		}
		s := checkInvariants(t, a)
		if q := quarantined(s); !slices.Equal(q, []string{"a", "b"}) {
			t.Fatalf("quarantined %v, want the unhealthy a b", q)
		}
		if len(s.Leases) != 1 || s.Members["a"].Free || s.Members["b"].Free {
			t.Fatalf("the unhealthy resources were not freed into quarantine: leases %v", s.Leases)
		}
		ok(t, al.RefreshUntilHealthy(ctx, 0)) // healthy: nothing to do
		ok(t, al.Release(ctx))

		// Never healthy: gives up after maxAttempts refreshes.
		o = &testObj{healthy: func(string) bool { return false }}
		al = must[*allocator.Allocation](t)(a.Malloc(ctx, o))
		if err := al.RefreshUntilHealthy(ctx, 1); !errors.Is(err, allocator.ErrUnhealthy) {
			t.Fatalf("RefreshUntilHealthy of an unhealthy object: %v", err)
		}
		// Then no healthy resource is left to try.
		if err := al.RefreshUntilHealthy(ctx, 5); !errors.Is(err, allocator.ErrNoneAvailable) {
			t.Fatalf("RefreshUntilHealthy on an exhausted pool: %v", err)
		}
		if err := al.RefreshUntilHealthy(ctx, -1); !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Fatalf("RefreshUntilHealthy(-1): %v", err)
		}
		checkInvariants(t, a)
	})
}

func TestMallocObjectAutoClose(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		for _, auto := range []bool{false, true} {
			t.Run(fmt.Sprint("auto=", auto), func(t *testing.T) {
				a := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{AutoClose: auto}))
				ok(t, errOnly(a.Extend(ctx, []string{"a", "b", "c", "d"})))
				o1, o2 := &testObj{name: "svc"}, &testObj{name: "svc"}
				al1 := must[*allocator.Allocation](t)(a.Malloc(ctx, o1))
				al2 := must[*allocator.Allocation](t)(a.Malloc(ctx, o2))
				if al1.Released() != auto {
					t.Fatalf("first allocation released: %v", al1.Released())
				}
				if auto {
					if got := o1.log(); !slices.Equal(got, []string{"open a", "close a"}) {
						t.Fatalf("first object's events %v", got)
					}
					if al2.Key() != "a" {
						t.Fatalf("the new object got %q, want the bound a released for it", al2.Key())
					}
					ok(t, al1.Release(ctx)) // already released: nil
				} else if al2.Key() == al1.Key() {
					t.Fatalf("both allocations on %q", al1.Key())
				}
				// Unnamed objects are not auto-closed.
				u1 := must[*allocator.Allocation](t)(a.Malloc(ctx, &testObj{}))
				u2 := must[*allocator.Allocation](t)(a.Malloc(ctx, &testObj{}))
				if u1.Released() || u2.Released() {
					t.Fatal("an unnamed allocation was auto-closed")
				}
				// A released allocation is no longer tracked: the next
				// malloc of the name does not touch it.
				ok(t, al2.Release(ctx))
				al3 := must[*allocator.Allocation](t)(a.Malloc(ctx, &testObj{name: "svc"}))
				if got := o2.log(); len(got) != 2 || al3.Released() {
					t.Fatalf("events of a released object %v", got)
				}
				checkInvariants(t, a)
			})
		}
	})
}

func TestMallocObjectSharedMode(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t, allocator.WithShared())
		ok(t, errOnly(a.Extend(ctx, []string{"a", "b"})))
		o := &testObj{name: "svc"}
		al := must[*allocator.Allocation](t)(a.Malloc(ctx, o))
		al2 := must[*allocator.Allocation](t)(a.Malloc(ctx, &testObj{name: "svc"}))
		if al2.Key() != al.Key() {
			t.Fatalf("shared objects of one name on %q and %q", al.Key(), al2.Key())
		}
		first := al.Key()
		ok(t, al.Refresh(ctx))
		if al.Key() == first || o.Key() != al.Key() {
			t.Fatalf("shared refresh stayed on %q", first)
		}
		ok(t, al.Release(ctx))
		if got := o.log(); !slices.Equal(got, []string{"open " + first, "close " + first, "open " + al.Key(), "close " + al.Key()}) {
			t.Fatalf("events %v", got)
		}
		checkInvariants(t, a)
	})
}
