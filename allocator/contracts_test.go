package allocator_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

func TestPriorityOrderAndFIFOAmongEquals(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"low1", "low2"}, allocator.WithPriority(-1))))
		ok(t, errOnly(a.Extend(ctx, []string{"mid1", "mid2", "mid3"})))
		ok(t, errOnly(a.Extend(ctx, []string{"high"}, allocator.WithPriority(10))))
		var got []string
		var ls []*allocator.Lease
		for range 6 {
			l := must[*allocator.Lease](t)(a.MallocLease(ctx))
			got = append(got, l.Key())
			ls = append(ls, l)
		}
		if want := []string{"high", "mid1", "mid2", "mid3", "low1", "low2"}; !slices.Equal(got, want) {
			t.Fatalf("allocation order %v, want %v", got, want)
		}
		// Return the mids in the order 3, 1, 2: they come back in that
		// order (the one returned longest ago first).
		for _, i := range []int{3, 1, 2} {
			ok(t, ls[i].Free(ctx))
		}
		got = got[:0]
		for range 3 {
			got = append(got, must[*allocator.Lease](t)(a.MallocLease(ctx)).Key())
		}
		if want := []string{"mid3", "mid1", "mid2"}; !slices.Equal(got, want) {
			t.Fatalf("FIFO among equals: %v, want %v", got, want)
		}
		// A priority change reorders the free set.
		ok(t, ls[4].Free(ctx))
		ok(t, ls[5].Free(ctx))
		ok(t, errOnly(a.SetPriority(ctx, 5, "low2")))
		if k := must[*allocator.Lease](t)(a.MallocLease(ctx)).Key(); k != "low2" {
			t.Fatalf("after SetPriority got %s, want low2", k)
		}
		checkInvariants(t, a)
	})
}

func TestSharedRotation(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t, allocator.WithShared())
		ok(t, errOnly(a.Extend(ctx, []string{"p1", "p2", "p3"})))
		var got []string
		for range 7 {
			k, found, err := a.MallocKey(ctx)
			ok(t, err)
			if !found {
				t.Fatal("shared pool reported none available")
			}
			got = append(got, k)
		}
		if want := []string{"p1", "p2", "p3", "p1", "p2", "p3", "p1"}; !slices.Equal(got, want) {
			t.Fatalf("rotation %v, want %v", got, want)
		}
		l := must[*allocator.Lease](t)(a.MallocLease(ctx))
		if l.Token() != "" || l.Fence() != 0 {
			t.Fatalf("shared lease has token %q fence %d", l.Token(), l.Fence())
		}
		ok(t, l.Free(ctx))
		// Quarantine takes a member out of the rotation.
		ok(t, errOnly(a.Quarantine(ctx, time.Minute, "p3")))
		got = got[:0]
		for range 4 {
			got = append(got, must[*allocator.Lease](t)(a.MallocLease(ctx)).Key())
		}
		if slices.Contains(got, "p3") {
			t.Fatalf("quarantined p3 handed out: %v", got)
		}
		if _, err := a.MallocN(ctx, 2); !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Fatalf("MallocN in shared mode: %v", err)
		}
		checkInvariants(t, a)
	})
}

func TestSoftBinding(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clock := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clock.Now))
		ok(t, errOnly(a.Extend(ctx, names("r", 4))))
		// A name gets its bound resource back while it is free.
		l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithBind("alice", time.Minute)))
		first := l.Key()
		ok(t, l.Free(ctx))
		for range 3 {
			l = must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithBind("alice", time.Minute)))
			if l.Key() != first {
				t.Fatalf("bound malloc got %s, want %s", l.Key(), first)
			}
			ok(t, l.Free(ctx))
		}
		// While it is leased by someone else, alice gets another one and is
		// re-bound to it.
		other := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithBind("bob", time.Minute)))
		if other.Key() == first {
			// bob took the head of the free set; make sure it is alice's.
			t.Logf("bob took %s", other.Key())
		}
		ok(t, other.Free(ctx))
		hold := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithBind("alice", time.Minute)))
		l2 := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithBind("alice", time.Minute)))
		if l2.Key() == hold.Key() {
			t.Fatal("one resource leased twice through a binding")
		}
		if k, found := mustBind(t, a, "alice"); !found || k != l2.Key() {
			t.Fatalf("alice bound to %q %v, want %q", k, found, l2.Key())
		}
		ok(t, hold.Free(ctx))
		ok(t, l2.Free(ctx))
		// Quarantine drops the binding, also after the quarantine ends.
		ok(t, a.UpdateSoftBind(ctx, "carol", "r2", 0))
		if k, found := mustBind(t, a, "carol"); !found || k != "r2" {
			t.Fatalf("carol bound to %q %v", k, found)
		}
		ok(t, errOnly(a.Quarantine(ctx, time.Second, "r2")))
		if _, found := mustBind(t, a, "carol"); found {
			t.Fatal("binding survived quarantine")
		}
		l = must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithBind("carol", 0)))
		if l.Key() == "r2" {
			t.Fatal("quarantined member handed out through a binding")
		}
		ok(t, l.Free(ctx))
		clock.Advance(2 * time.Second)
		ok(t, errOnly(a.GC(ctx, 10)))
		if k, _ := mustBind(t, a, "carol"); k == "r2" {
			t.Fatal("binding to r2 came back after the quarantine")
		}
		// A permanent binding outlives any time; a timed one expires.
		ok(t, a.UpdateSoftBind(ctx, "dave", "r3", 0))
		ok(t, a.UpdateSoftBind(ctx, "erin", "r3", time.Second))
		clock.Advance(24 * time.Hour)
		if k, found := mustBind(t, a, "dave"); !found || k != "r3" {
			t.Fatalf("permanent binding lost: %q %v", k, found)
		}
		if _, found := mustBind(t, a, "erin"); found {
			t.Fatal("timed binding did not expire")
		}
		l = must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithBind("dave", 0)))
		if l.Key() != "r3" {
			t.Fatalf("permanent binding not honoured: %s", l.Key())
		}
		ok(t, l.Free(ctx))
		// An expired member is never handed out through a binding.
		ok(t, errOnly(a.Extend(ctx, []string{"r3"}, allocator.WithMemberTTL(time.Second))))
		clock.Advance(2 * time.Second)
		if _, found := mustBind(t, a, "dave"); found {
			t.Fatal("binding to an expired member applies")
		}
		ok(t, a.UnbindSoftBind(ctx, "dave"))
		if err := a.UpdateSoftBind(ctx, "x", "not-a-member", 0); !errors.Is(err, allocator.ErrNotMember) {
			t.Fatalf("binding to a non-member: %v", err)
		}
		checkInvariants(t, a)
	})
}

func mustBind(t *testing.T, a *allocator.Allocator, name string) (string, bool) {
	t.Helper()
	k, found, err := a.GetSoftBind(context.Background(), name)
	ok(t, err)
	return k, found
}

func TestMembershipExpiry(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clock := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clock.Now))
		ok(t, errOnly(a.Extend(ctx, []string{"short", "held"}, allocator.WithMemberTTL(time.Second))))
		ok(t, errOnly(a.Extend(ctx, []string{"forever"})))
		l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Hour)))
		for l.Key() != "held" { // take "held" for sure
			l2 := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Hour)))
			ok(t, l.Free(ctx))
			l = l2
		}
		ok(t, errOnly(a.FreeKeys(ctx, "short", "forever")))
		// Free keeps the membership expiry.
		s := checkInvariants(t, a)
		if s.Members["short"].ExpiresAt.IsZero() {
			t.Fatal("Free dropped the membership expiry")
		}
		clock.Advance(1500 * time.Millisecond)
		if got := sorted(must[[]string](t)(a.Keys(ctx))); !slices.Equal(got, []string{"forever"}) {
			t.Fatalf("Keys after expiry %v", got)
		}
		if k := must[*allocator.Lease](t)(a.MallocLease(ctx)).Key(); k != "forever" {
			t.Fatalf("malloc handed out %s, an expired member", k)
		}
		ok(t, errOnly(a.GC(ctx, 100)))
		// GC never deletes the leased member; it goes when its lease ends.
		s = checkInvariants(t, a)
		if _, still := s.Members["held"]; !still {
			t.Fatal("GC deleted a leased member")
		}
		if _, still := s.Members["short"]; still {
			t.Fatal("expired free member not removed")
		}
		ok(t, l.Free(ctx))
		s = checkInvariants(t, a)
		if _, still := s.Members["held"]; still {
			t.Fatal("expired member stayed after its lease ended")
		}
		// Assign refreshes the expiry of the members that stay.
		ok(t, errOnly(a.Extend(ctx, []string{"x", "y"}, allocator.WithMemberTTL(time.Second))))
		clock.Advance(800 * time.Millisecond)
		_, _, err := a.Assign(ctx, []string{"x", "forever"}, allocator.WithMemberTTL(time.Second))
		ok(t, err)
		clock.Advance(800 * time.Millisecond)
		if got := sorted(must[[]string](t)(a.Keys(ctx))); !slices.Equal(got, []string{"forever", "x"}) {
			t.Fatalf("after Assign and 1.6 s: %v, want x refreshed", got)
		}
	})
}

func TestLeaseExpiryReclaimedWithoutGC(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clock := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clock.Now))
		ok(t, errOnly(a.Extend(ctx, names("r", 3))))
		var dead []*allocator.Lease
		for range 3 {
			dead = append(dead, must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Second))))
		}
		if _, err := a.MallocLease(ctx); !errors.Is(err, allocator.ErrNoneAvailable) {
			t.Fatal("pool not exhausted")
		}
		clock.Advance(2 * time.Second)
		// No GC call: the next mallocs reclaim the expired leases.
		got := map[string]bool{}
		for range 3 {
			l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute)))
			got[l.Key()] = true
			if l.Fence() <= dead[2].Fence() {
				t.Fatal("regrant has a smaller fence")
			}
		}
		if len(got) != 3 {
			t.Fatalf("reclaimed %v", got)
		}
		// The dead holders' late Free and Renew change nothing.
		for _, l := range dead {
			if err := l.Free(ctx); !errors.Is(err, allocator.ErrNotHeld) {
				t.Fatalf("late Free: %v", err)
			}
		}
		s := checkInvariants(t, a)
		if len(s.Leases) != 3 || len(s.Free) != 0 {
			t.Fatalf("late Free changed the pool: %d leases, %d free", len(s.Leases), len(s.Free))
		}
		// A permanent lease is never reclaimed.
		ok(t, errOnly(a.Extend(ctx, []string{"perm"})))
		p := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(0)))
		clock.Advance(365 * 24 * time.Hour)
		ok(t, errOnly(a.GC(ctx, 100)))
		ok(t, p.Renew(ctx, 0))
		ok(t, p.Free(ctx))
	})
}

func TestStaleHolderChangesNothing(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clock := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clock.Now))
		ok(t, errOnly(a.Extend(ctx, []string{"only"})))
		old := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Second)))
		clock.Advance(2 * time.Second)
		cur := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute)))
		if cur.Key() != "only" || cur.Fence() <= old.Fence() {
			t.Fatalf("regrant %s fence %d after %d", cur.Key(), cur.Fence(), old.Fence())
		}
		before := checkInvariants(t, a)
		if err := old.Renew(ctx, time.Hour); !errors.Is(err, allocator.ErrNotHeld) {
			t.Fatalf("stale Renew: %v", err)
		}
		if err := old.Free(ctx); !errors.Is(err, allocator.ErrNotHeld) {
			t.Fatalf("stale Free: %v", err)
		}
		after := checkInvariants(t, a)
		if after.Leases["only"] != before.Leases["only"] {
			t.Fatalf("stale holder changed the lease: %+v → %+v", before.Leases["only"], after.Leases["only"])
		}
		ok(t, cur.Renew(ctx, time.Minute))
		ok(t, cur.Free(ctx))
	})
}

func TestRemovedWhileLeased(t *testing.T) {
	removals := []struct {
		name   string
		remove func(ctx context.Context, a *allocator.Allocator, clock *fakeClock) error
	}{
		{"Shrink", func(ctx context.Context, a *allocator.Allocator, _ *fakeClock) error {
			return errOnly(a.Shrink(ctx, "r"))
		}},
		{"Assign", func(ctx context.Context, a *allocator.Allocator, _ *fakeClock) error {
			_, _, err := a.Assign(ctx, []string{"other"})
			return err
		}},
		{"Clear", func(ctx context.Context, a *allocator.Allocator, _ *fakeClock) error {
			return errOnly(a.Clear(ctx))
		}},
		{"expiry", func(ctx context.Context, a *allocator.Allocator, clock *fakeClock) error {
			if _, err := a.Extend(ctx, []string{"r"}, allocator.WithMemberTTL(time.Second)); err != nil {
				return err
			}
			clock.Advance(2 * time.Second)
			return errOnly(a.GC(ctx, 100))
		}},
	}
	forTargets(t, func(t *testing.T, tg target) {
		for _, rm := range removals {
			t.Run(rm.name, func(t *testing.T) {
				ctx := context.Background()
				clock := newFakeClock()
				a := tg.newAlloc(t, allocator.WithClock(clock.Now))
				ok(t, errOnly(a.Extend(ctx, []string{"r"})))
				l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Hour)))
				ok(t, rm.remove(ctx, a, clock))
				// Adding it again keeps the live lease: it is not free.
				ok(t, errOnly(a.Extend(ctx, []string{"r"})))
				s := checkInvariants(t, a)
				if slices.Contains(s.Free, "r") {
					t.Fatal("re-added member is free while leased")
				}
				for {
					x, err := a.MallocLease(ctx)
					if errors.Is(err, allocator.ErrNoneAvailable) {
						break
					}
					ok(t, err)
					if x.Key() == "r" {
						t.Fatal("re-added leased member handed out again")
					}
					ok(t, errOnly(a.Shrink(ctx, x.Key())))
				}
				ok(t, l.Renew(ctx, time.Hour))
				ok(t, l.Free(ctx))
				// Free after the re-add returns it to the pool.
				if k := must[*allocator.Lease](t)(a.MallocLease(ctx)).Key(); k != "r" {
					t.Fatalf("got %s", k)
				}
			})
		}
		t.Run("FreeAfterEviction", func(t *testing.T) {
			ctx := context.Background()
			a := tg.newAlloc(t)
			ok(t, errOnly(a.Extend(ctx, []string{"gone", "kept"})))
			ls := must[[]*allocator.Lease](t)(a.MallocN(ctx, 2))
			_, _, err := a.Assign(ctx, []string{"kept"})
			ok(t, err)
			for _, l := range ls {
				ok(t, l.Free(ctx))
			}
			if got := must[[]string](t)(a.Keys(ctx)); !slices.Equal(got, []string{"kept"}) {
				t.Fatalf("Free put an evicted member back: %v", got)
			}
			s := checkInvariants(t, a)
			if !slices.Equal(s.Free, []string{"kept"}) {
				t.Fatalf("free set %v", s.Free)
			}
		})
	})
}

func TestQuarantineEveryState(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clock := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clock.Now))
		ok(t, errOnly(a.Extend(ctx, []string{"free", "leased"})))
		var l *allocator.Lease
		for {
			x := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Hour)))
			if x.Key() == "leased" {
				l = x
				break
			}
			ok(t, x.Free(ctx))
			ok(t, errOnly(a.SetPriority(ctx, -1, "free")))
		}
		// Quarantine the only free member, a leased one and a non-member.
		if n := must[int](t)(a.Quarantine(ctx, time.Second, "free", "leased", "nobody")); n != 2 {
			t.Fatalf("quarantined %d", n)
		}
		checkInvariants(t, a)
		if _, err := a.MallocLease(ctx); !errors.Is(err, allocator.ErrNoneAvailable) {
			t.Fatalf("quarantined member handed out: %v", err)
		}
		// The lease lives on; back from it, the member stays quarantined.
		ok(t, l.Renew(ctx, time.Hour))
		ok(t, l.Free(ctx))
		s := checkInvariants(t, a)
		if len(s.Free) != 0 {
			t.Fatalf("quarantined member freed into the pool: %v", s.Free)
		}
		clock.Advance(2 * time.Second)
		got := map[string]bool{}
		for range 2 {
			got[must[*allocator.Lease](t)(a.MallocLease(ctx)).Key()] = true
		}
		if !got["free"] || !got["leased"] {
			t.Fatalf("after the quarantine got %v", got)
		}
		checkInvariants(t, a)
		// Unquarantine brings one back at once.
		ok(t, errOnly(a.Extend(ctx, []string{"z"})))
		ok(t, errOnly(a.Quarantine(ctx, time.Hour, "z")))
		ok(t, errOnly(a.Unquarantine(ctx, "z")))
		if k := must[*allocator.Lease](t)(a.MallocLease(ctx)).Key(); k != "z" {
			t.Fatalf("got %s after Unquarantine", k)
		}
	})
}

func TestMallocNAllOrNothing(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, names("r", 5))))
		ls := must[[]*allocator.Lease](t)(a.MallocN(ctx, 3))
		if len(ls) != 3 || ls[0].Key() == ls[1].Key() {
			t.Fatalf("MallocN: %v", ls)
		}
		if _, err := a.MallocN(ctx, 3); !errors.Is(err, allocator.ErrNoneAvailable) {
			t.Fatalf("MallocN of 3 with 2 free: %v", err)
		}
		if s := checkInvariants(t, a); len(s.Free) != 2 {
			t.Fatalf("a failed MallocN took something: %d free", len(s.Free))
		}
		// Under contention: 8 goroutines ask for 3 of 10, repeatedly;
		// every call gets all 3 or none and no resource is leased twice.
		ok(t, errOnly(a.Extend(ctx, names("s", 5))))
		for _, l := range ls {
			ok(t, l.Free(ctx))
		}
		inUse := newInUse()
		errc := make(chan error, 8)
		for range 8 {
			go func() {
				var err error
				for range 30 {
					got, e := a.MallocN(ctx, 3, allocator.WithLeaseTTL(time.Minute))
					if errors.Is(e, allocator.ErrNoneAvailable) {
						continue
					}
					if e != nil {
						err = e
						break
					}
					if len(got) != 3 {
						err = errors.New("partial MallocN")
						break
					}
					for _, l := range got {
						if e := inUse.take(l.Key()); e != nil {
							err = e
						}
					}
					for _, l := range got {
						inUse.put(l.Key())
						if e := l.Free(ctx); e != nil {
							err = e
						}
					}
				}
				errc <- err
			}()
		}
		for range 8 {
			ok(t, <-errc)
		}
		if s := checkInvariants(t, a); len(s.Free) != 10 || len(s.Leases) != 0 {
			t.Fatalf("after the run: %d free, %d leases", len(s.Free), len(s.Leases))
		}
	})
}

func TestBadInputChangesNothing(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"r"})))
		before := checkInvariants(t, a)
		long := strings.Repeat("k", 1025)
		other := tg.newAlloc(t)
		foreign := must[*allocator.Session](t)(other.NewSession(ctx, time.Minute))
		defer func() { _, _ = foreign.Close(ctx) }()
		cases := []struct {
			name string
			err  error
			call func() error
		}{
			{"empty key", allocator.ErrInvalidKey, func() error { return errOnly(a.Extend(ctx, []string{""})) }},
			{"long key", allocator.ErrInvalidKey, func() error { return errOnly(a.Extend(ctx, []string{"ok", long})) }},
			{"NaN priority", allocator.ErrInvalidArgument, func() error {
				return errOnly(a.Extend(ctx, []string{"n"}, allocator.WithPriority(nan())))
			}},
			{"NaN SetPriority", allocator.ErrInvalidArgument, func() error { return errOnly(a.SetPriority(ctx, nan(), "r")) }},
			{"negative GC", allocator.ErrInvalidArgument, func() error { return errOnly(a.GC(ctx, -1)) }},
			{"MallocN 0", allocator.ErrInvalidArgument, func() error { return errOnly(a.MallocN(ctx, 0)) }},
			{"MallocN negative", allocator.ErrInvalidArgument, func() error { return errOnly(a.MallocN(ctx, -3)) }},
			{"empty bind name", allocator.ErrInvalidKey, func() error {
				return errOnly(a.MallocLease(ctx, allocator.WithBind("", time.Minute)))
			}},
			{"long bind name", allocator.ErrInvalidKey, func() error { return errOnly(a.MallocLease(ctx, allocator.WithBind(long, 0))) }},
			{"foreign session", allocator.ErrInvalidArgument, func() error {
				return errOnly(a.MallocLease(ctx, allocator.WithSession(foreign)))
			}},
			{"Shrink empty", allocator.ErrInvalidKey, func() error { return errOnly(a.Shrink(ctx, "")) }},
			{"FreeKeys long", allocator.ErrInvalidKey, func() error { return errOnly(a.FreeKeys(ctx, long)) }},
			{"Quarantine 0", allocator.ErrInvalidArgument, func() error { return errOnly(a.Quarantine(ctx, 0, "r")) }},
			{"Assign empty key", allocator.ErrInvalidKey, func() error {
				_, _, err := a.Assign(ctx, []string{"a", ""})
				return err
			}},
			{"bind to empty", allocator.ErrInvalidKey, func() error { return a.UpdateSoftBind(ctx, "n", "", 0) }},
			{"session TTL", allocator.ErrInvalidArgument, func() error { return errOnly(a.NewSession(ctx, 0)) }},
			{"MallocN with bind", allocator.ErrInvalidArgument, func() error {
				return errOnly(a.MallocN(ctx, 2, allocator.WithBind("x", 0)))
			}},
		}
		for _, c := range cases {
			if err := c.call(); !errors.Is(err, c.err) {
				t.Errorf("%s: %v, want %v", c.name, err, c.err)
			}
		}
		after := checkInvariants(t, a)
		if !slices.Equal(after.Free, before.Free) || len(after.Members) != len(before.Members) || len(after.Leases) != 0 {
			t.Fatalf("bad input changed the pool: %+v → %+v", before, after)
		}
		if _, err := allocator.New(tg.client(t), ""); !errors.Is(err, allocator.ErrInvalidKey) {
			t.Fatalf("empty prefix: %v", err)
		}
		if _, err := allocator.New(tg.client(t), "a{b"); !errors.Is(err, allocator.ErrInvalidKey) {
			t.Fatalf("prefix with a brace: %v", err)
		}
	})
}

func TestAnyKeyRoundTrips(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		weird := []string{
			" ", "a b", "tab\there", "new\nline", "nul\x00byte", "{tag}", "}{", "pipe|x", "colon:x",
			"ünïcödé", "\xff\xfe invalid utf8", strings.Repeat("x", 1024), "-", "0", "1e5", "%s%d",
		}
		ok(t, errOnly(a.Extend(ctx, weird)))
		if got := sorted(must[[]string](t)(a.Keys(ctx))); !slices.Equal(got, sorted(weird)) {
			t.Fatalf("Keys = %q", got)
		}
		got := map[string]bool{}
		var ls []*allocator.Lease
		for range weird {
			l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithBind("b "+"\x00", 0)))
			got[l.Key()] = true
			ls = append(ls, l)
		}
		for _, k := range weird {
			if !got[k] {
				t.Fatalf("%q never leased; got %v", k, got)
			}
		}
		for _, l := range ls {
			ok(t, l.Free(ctx))
		}
		if k, found := mustBind(t, a, "b \x00"); !found || !got[k] {
			t.Fatalf("binding %q %v", k, found)
		}
		checkInvariants(t, a)
	})
}
