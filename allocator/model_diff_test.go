package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// modelNames are the resources of the differential test, with characters
// that would break a naive encoding.
var modelNames = []string{"a", "b", "c", "d", "with space", "x\x00y", "{tag}|pipe", "ünï\ncode", "e", "f"}

// TestModelMatchesRedis applies random operation sequences to Redis (with a
// test clock) and to the reference model, comparing every result and the
// whole pool state after each step.
func TestModelMatchesRedis(t *testing.T) {
	seeds := 6
	steps := 250
	if testing.Short() {
		seeds, steps = 2, 120
	}
	forTargets(t, func(t *testing.T, tg target) {
		for seed := range seeds {
			t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
				runModelDiff(t, tg, uint64(seed), steps, 3, modelNames)
			})
		}
	})
}

// heldLease is a lease the differential test may free or renew.
type heldLease struct {
	l *allocator.Lease
}

// runModelDiff applies steps random operations to Redis and the model with
// the given reclaim budget, over names, comparing after each.
func runModelDiff(t *testing.T, tg target, seed uint64, steps, budget int, names []string) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, uint64(budget)))
	clock := newFakeClock()
	a := tg.newAlloc(t, allocator.WithClock(clock.Now), allocator.WithReclaimBudget(budget))
	sh, err := allocator.New(tg.client(t), a.Prefix(), allocator.WithClock(clock.Now), allocator.WithReclaimBudget(budget), allocator.WithShared())
	ok(t, err)
	m := newModel(budget)
	m.now = clock.Now().UnixMilli()
	var held []heldLease
	var fenceBase int64
	var log []string

	pick := func() string { return names[rng.IntN(len(names))] }
	some := func() []string {
		out := make([]string, 1+rng.IntN(4))
		for i := range out {
			out[i] = pick()
		}
		return out
	}
	// Long real-time TTLs keep the handles valid locally; the fake clock
	// makes them expire on the server.
	ttls := []time.Duration{0, 50 * time.Millisecond, 200 * time.Millisecond, time.Second, time.Hour}
	prios := []float64{0, 1, -1, 2.5}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d budget %d step %d: %s\nhistory:\n%s", seed, budget, len(log), fmt.Sprintf(format, args...), strings.Join(log, "\n"))
	}
	checkFences := func(ls []*allocator.Lease, fences []int64) {
		t.Helper()
		for i, l := range ls {
			if fenceBase == 0 {
				fenceBase = l.Fence() - fences[i]
			}
			if l.Fence()-fenceBase != fences[i] {
				fail("fence %d of %s, model's index %d (base %d)", l.Fence(), l.Key(), fences[i], fenceBase)
			}
		}
	}
	// keys on the server vs model, for the read paths.
	for step := 0; step < steps; step++ {
		op := rng.IntN(26)
		var desc string
		switch op {
		case 0, 1, 2: // Extend / Assign, TTL or none on existing members
			ns, ttl, p := some(), ttls[rng.IntN(len(ttls))], prios[rng.IntN(len(prios))]
			if rng.IntN(3) == 0 {
				ttl = 0
			}
			assign := op == 1 && rng.IntN(3) == 0
			desc = fmt.Sprintf("extend assign=%v %q ttl=%v prio=%v", assign, ns, ttl, p)
			var got [2]int
			if assign {
				got[0], got[1], err = a.Assign(ctx, ns, allocator.WithMemberTTL(ttl), allocator.WithPriority(p))
			} else {
				got[0], err = a.Extend(ctx, ns, allocator.WithMemberTTL(ttl), allocator.WithPriority(p))
			}
			ok(t, err)
			wa, wr := m.extend(ttl.Milliseconds(), p, assign, ns)
			if got != [2]int{wa, wr} {
				fail("%s: got %v, model %v", desc, got, [2]int{wa, wr})
			}
		case 3:
			ns := some()
			desc = fmt.Sprintf("shrink %q", ns)
			if got, want := must[int](t)(a.Shrink(ctx, ns...)), m.shrink(ns); got != want {
				fail("%s: got %d, model %d", desc, got, want)
			}
		case 4:
			if rng.IntN(6) != 0 {
				continue
			}
			desc = "clear"
			if got, want := must[int](t)(a.Clear(ctx)), m.clear(); got != want {
				fail("clear: got %d, model %d", got, want)
			}
		case 5, 6, 7, 8: // malloc, maybe bound
			ttl := ttls[rng.IntN(len(ttls))]
			opts := []allocator.MallocOption{allocator.WithLeaseTTL(ttl)}
			bindName, bindTTL := "", time.Duration(0)
			if rng.IntN(3) == 0 {
				bindName, bindTTL = fmt.Sprint("client", rng.IntN(3)), ttls[rng.IntN(len(ttls))]
				opts = append(opts, allocator.WithBind(bindName, bindTTL))
			}
			desc = fmt.Sprintf("malloc ttl=%v bind=%q/%v", ttl, bindName, bindTTL)
			l, err := a.MallocLease(ctx, opts...)
			token := fmt.Sprint("t", step)
			wn, wf := m.malloc(1, ttl.Milliseconds(), token, bindName, bindTTL.Milliseconds())
			switch {
			case errors.Is(err, allocator.ErrNoneAvailable):
				if wn != nil {
					fail("%s: none available, model leased %q", desc, wn)
				}
			case err != nil:
				t.Fatal(err)
			case wn == nil:
				fail("%s: leased %q, model none", desc, l.Key())
			case l.Key() != wn[0]:
				fail("%s: leased %q, model %q", desc, l.Key(), wn[0])
			default:
				desc += " → " + l.Key()
				checkFences([]*allocator.Lease{l}, wf)
				m.leases[l.Key()].token = l.Token()
				held = append(held, heldLease{l: l})
			}
		case 9: // MallocN, n up to the pool size and beyond
			n, ttl := 1+rng.IntN(len(names)+1), ttls[rng.IntN(len(ttls))]
			desc = fmt.Sprintf("mallocN %d ttl=%v", n, ttl)
			ls, err := a.MallocN(ctx, n, allocator.WithLeaseTTL(ttl))
			wn, wf := m.malloc(n, ttl.Milliseconds(), "", "", 0)
			switch {
			case errors.Is(err, allocator.ErrNoneAvailable):
				if wn != nil {
					fail("%s: none, model %q", desc, wn)
				}
			case err != nil:
				t.Fatal(err)
			default:
				var got []string
				for _, l := range ls {
					got = append(got, l.Key())
					if m.leases[l.Key()] == nil {
						fail("%s: got %q, model %q", desc, got, wn)
					}
					m.leases[l.Key()].token = l.Token()
					held = append(held, heldLease{l: l})
				}
				if !slices.Equal(got, wn) {
					fail("%s: got %q, model %q", desc, got, wn)
				}
				desc += fmt.Sprintf(" → %q", got)
				checkFences(ls, wf)
			}
		case 10, 11: // Free
			if len(held) == 0 {
				continue
			}
			i := rng.IntN(len(held))
			h := held[i]
			held = slices.Delete(held, i, i+1)
			desc = fmt.Sprintf("free %q fence %d", h.l.Key(), h.l.Fence())
			err := h.l.Free(ctx)
			want := m.free(h.l.Key(), h.l.Token())
			if (err == nil) != (want == 1) || (err != nil && !errors.Is(err, allocator.ErrNotHeld)) {
				fail("%s: err %v, model code %d", desc, err, want)
			}
		case 12, 13: // Renew, to permanent and back
			if len(held) == 0 {
				continue
			}
			h := held[rng.IntN(len(held))]
			ttl := ttls[rng.IntN(len(ttls))]
			desc = fmt.Sprintf("renew %q fence %d ttl=%v", h.l.Key(), h.l.Fence(), ttl)
			err := h.l.Renew(ctx, ttl)
			if h.l.Err() != nil && err == nil {
				fail("%s: renew of a lost handle succeeded", desc)
			}
			if h.l.Err() != nil && !errors.Is(err, allocator.ErrNotHeld) {
				continue
			}
			if err != nil && !errors.Is(err, allocator.ErrNotHeld) {
				t.Fatal(err)
			}
			if err != nil && !strings.Contains(err.Error(), "ended on the server") {
				desc += " (locally lost: " + err.Error() + ")"
				break // lost locally, nothing sent
			}
			want := m.renew(h.l.Key(), h.l.Token(), ttl.Milliseconds())
			if (err == nil) != want {
				fail("%s: err %v, model %v", desc, err, want)
			}
		case 14:
			ns := some()
			desc = fmt.Sprintf("freeKeys %q", ns)
			if got, want := must[int](t)(a.FreeKeys(ctx, ns...)), m.freeKeys(ns); got != want {
				fail("%s: got %d, model %d", desc, got, want)
			}
		case 15, 16:
			ns := some()
			if op == 15 {
				d := ttls[1+rng.IntN(len(ttls)-2)]
				desc = fmt.Sprintf("quarantine %q %v", ns, d)
				if got, want := must[int](t)(a.Quarantine(ctx, d, ns...)), m.quarantine(d.Milliseconds(), ns); got != want {
					fail("%s: got %d, model %d", desc, got, want)
				}
			} else {
				desc = fmt.Sprintf("unquarantine %q", ns)
				if got, want := must[int](t)(a.Unquarantine(ctx, ns...)), m.quarantine(0, ns); got != want {
					fail("%s: got %d, model %d", desc, got, want)
				}
			}
		case 17: // priority, preferably of leased members
			ns, p := some(), prios[rng.IntN(len(prios))]
			for k := range m.leases {
				if rng.IntN(2) == 0 {
					ns = append(ns, k)
				}
			}
			desc = fmt.Sprintf("priority %v %q", p, ns)
			if got, want := must[int](t)(a.SetPriority(ctx, p, ns...)), m.setPriority(p, ns); got != want {
				fail("%s: got %d, model %d", desc, got, want)
			}
		case 18:
			n := []int{0, 1, 2, 5, 100}[rng.IntN(5)]
			desc = fmt.Sprintf("gc %d", n)
			got := must[allocator.GCStats](t)(a.GC(ctx, n))
			w := m.reclaim(n)
			if [4]int{got.Leases, got.Sessions, got.Members, got.Quarantines} != w {
				fail("%s: got %+v, model %v", desc, got, w)
			}
		case 19: // bindings
			bn := fmt.Sprint("client", rng.IntN(3))
			switch rng.IntN(3) {
			case 0:
				k, ttl := pick(), ttls[rng.IntN(len(ttls))]
				desc = fmt.Sprintf("bind %q → %q %v", bn, k, ttl)
				err := a.UpdateSoftBind(ctx, bn, k, ttl)
				if want := m.bindSet(bn, k, ttl.Milliseconds()); want != (err == nil) {
					fail("%s: err %v, model %v", desc, err, want)
				}
			case 1:
				desc = fmt.Sprintf("getbind %q", bn)
				got, found, err := a.GetSoftBind(ctx, bn)
				ok(t, err)
				want := m.boundMember(bn, false)
				if got != want || found != (want != "") {
					fail("%s: got %q %v, model %q", desc, got, found, want)
				}
				if want == "" {
					delete(m.binds, bn)
				}
			default:
				desc = fmt.Sprintf("unbind %q", bn)
				ok(t, a.UnbindSoftBind(ctx, bn))
				delete(m.binds, bn)
			}
		case 20: // shared-mode malloc on the same pool, maybe bound
			bindName, bindTTL := "", time.Duration(0)
			var opts []allocator.MallocOption
			if rng.IntN(2) == 0 {
				bindName, bindTTL = fmt.Sprint("client", rng.IntN(3)), ttls[rng.IntN(len(ttls))]
				opts = append(opts, allocator.WithBind(bindName, bindTTL))
			}
			desc = fmt.Sprintf("shared malloc bind=%q/%v", bindName, bindTTL)
			got, found, err := sh.MallocKey(ctx, opts...)
			ok(t, err)
			if want := m.mallocShared(bindName, bindTTL.Milliseconds()); got != want || found != (want != "") {
				fail("%s: got %q, model %q", desc, got, want)
			}
			desc += " → " + got
		case 21: // reads
			desc = "keys/len/contains"
			ks := sorted(must[[]string](t)(a.Keys(ctx)))
			if want := m.keys(); !slices.Equal(ks, want) && !(len(ks) == 0 && len(want) == 0) {
				fail("keys %q, model %q", ks, want)
			}
			if n := must[int](t)(a.Len(ctx)); n != len(m.keys()) {
				fail("len %d, model %d", n, len(m.keys()))
			}
			k := pick()
			_, in := m.items[k]
			in = in && !m.expired(k)
			if got := must[bool](t)(a.Contains(ctx, k)); got != in {
				fail("contains %q: %v, model %v", k, got, in)
			}
		default: // time passes, sometimes exactly onto a deadline
			d := []time.Duration{1 * time.Millisecond, 10 * time.Millisecond, 49 * time.Millisecond, 50 * time.Millisecond, 60 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 2 * time.Second}[rng.IntN(8)]
			desc = fmt.Sprintf("advance %v", d)
			clock.Advance(d)
			m.now = clock.Now().UnixMilli()
		}
		log = append(log, desc)
		compareState(t, a, m, fail)
		// Safety: the model and Redis agree on the leases; make sure no
		// resource is both free and leased (Problems does) and that every
		// free member is unexpired after a malloc found nothing due.
	}
}

// compareState compares an atomic snapshot of the pool with the model.
func compareState(t *testing.T, a *allocator.Allocator, m *model, fail func(string, ...any)) {
	t.Helper()
	s := checkInvariants(t, a)
	if got, want := s.Free, m.freeOrder(); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		fail("free order %q, model %q", got, want)
	}
	if len(s.Members) != len(m.items) {
		fail("%d members, model %d", len(s.Members), len(m.items))
	}
	for k, it := range m.items {
		got, found := s.Members[k]
		if !found {
			fail("member %q missing", k)
		}
		if got.Priority != it.prio {
			fail("priority of %q: %v, model %v", k, got.Priority, it.prio)
		}
		if msOf(got.QuarantinedUntil) != it.quar {
			fail("quarantine of %q: %d, model %d", k, msOf(got.QuarantinedUntil), it.quar)
		}
		if msOf(got.ExpiresAt) != it.exp {
			fail("expiry of %q: %d, model %d", k, msOf(got.ExpiresAt), it.exp)
		}
	}
	if len(s.Leases) != len(m.leases) {
		fail("%d leases, model %d", len(s.Leases), len(m.leases))
	}
	for k, l := range m.leases {
		got, found := s.Leases[k]
		if !found {
			fail("lease on %q missing", k)
		}
		if want := l.deadline; (want < 0) != got.Expires.IsZero() || (want >= 0 && got.Expires.UnixMilli() != want) {
			fail("deadline of %q: %v, model %d", k, got.Expires, want)
		}
	}
}

func msOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
