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
				runModelDiff(t, tg, uint64(seed), steps)
			})
		}
	})
}

// heldLease is a lease the differential test may free or renew.
type heldLease struct {
	l     *allocator.Lease
	token string // the model's token for it
}

func runModelDiff(t *testing.T, tg target, seed uint64, steps int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 99))
	clock := newFakeClock()
	const budget = 3
	a := tg.newAlloc(t, allocator.WithClock(clock.Now), allocator.WithReclaimBudget(budget))
	sh, err := allocator.New(tg.client(t), a.Prefix(), allocator.WithClock(clock.Now), allocator.WithReclaimBudget(budget), allocator.WithShared())
	ok(t, err)
	m := newModel(budget)
	m.now = clock.Now().UnixMilli()
	var held []heldLease
	var fenceBase int64
	var log []string

	pick := func() string { return modelNames[rng.IntN(len(modelNames))] }
	some := func() []string {
		out := make([]string, 1+rng.IntN(3))
		for i := range out {
			out[i] = pick()
		}
		return out
	}
	ttls := []time.Duration{0, 50 * time.Millisecond, 200 * time.Millisecond, time.Second}
	prios := []float64{0, 1, -1, 2.5}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d step %d: %s\nhistory:\n%s", seed, len(log), fmt.Sprintf(format, args...), strings.Join(log, "\n"))
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

	for step := 0; step < steps; step++ {
		op := rng.IntN(20)
		var desc string
		switch op {
		case 0, 1: // Extend / Assign
			ns, ttl, p := some(), ttls[rng.IntN(len(ttls))], prios[rng.IntN(len(prios))]
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
		case 2:
			ns := some()
			desc = fmt.Sprintf("shrink %q", ns)
			if got, want := must[int](t)(a.Shrink(ctx, ns...)), m.shrink(ns); got != want {
				fail("%s: got %d, model %d", desc, got, want)
			}
		case 3:
			if rng.IntN(4) != 0 {
				continue
			}
			desc = "clear"
			if got, want := must[int](t)(a.Clear(ctx)), m.clear(); got != want {
				fail("clear: got %d, model %d", got, want)
			}
		case 4, 5, 6: // malloc, maybe bound
			ttl := ttls[rng.IntN(len(ttls))]
			opts := []allocator.MallocOption{allocator.WithLeaseTTL(ttl)}
			bindName, bindTTL := "", time.Duration(0)
			if rng.IntN(2) == 0 {
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
				checkFences([]*allocator.Lease{l}, wf)
				m.leases[l.Key()].token = l.Token()
				held = append(held, heldLease{l: l})
			}
		case 7: // MallocN
			n, ttl := 1+rng.IntN(3), ttls[rng.IntN(len(ttls))]
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
					m.leases[l.Key()].token = l.Token()
					held = append(held, heldLease{l: l})
				}
				if !slices.Equal(got, wn) {
					fail("%s: got %q, model %q", desc, got, wn)
				}
				checkFences(ls, wf)
			}
		case 8, 9: // Free
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
		case 10: // Renew
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
				continue // locally lost before the call: nothing sent
			}
			want := m.renew(h.l.Key(), h.l.Token(), ttl.Milliseconds())
			if (err == nil) != want {
				fail("%s: err %v, model %v", desc, err, want)
			}
		case 11:
			ns := some()
			desc = fmt.Sprintf("freeKeys %q", ns)
			if got, want := must[int](t)(a.FreeKeys(ctx, ns...)), m.freeKeys(ns); got != want {
				fail("%s: got %d, model %d", desc, got, want)
			}
		case 12, 13:
			ns := some()
			if op == 12 {
				d := ttls[1+rng.IntN(len(ttls)-1)]
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
		case 14:
			ns, p := some(), prios[rng.IntN(len(prios))]
			desc = fmt.Sprintf("priority %v %q", p, ns)
			if got, want := must[int](t)(a.SetPriority(ctx, p, ns...)), m.setPriority(p, ns); got != want {
				fail("%s: got %d, model %d", desc, got, want)
			}
		case 15:
			n := rng.IntN(4)
			desc = fmt.Sprintf("gc %d", n)
			got := must[allocator.GCStats](t)(a.GC(ctx, n))
			w := m.reclaim(n)
			if [4]int{got.Leases, got.Sessions, got.Members, got.Quarantines} != w {
				fail("%s: got %+v, model %v", desc, got, w)
			}
		case 16: // bindings
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
		case 17: // shared-mode malloc on the same pool (no leases involved)
			if rng.IntN(3) != 0 {
				continue
			}
			desc = "shared malloc"
			got, found, err := sh.MallocKey(ctx)
			ok(t, err)
			if want := m.mallocShared("", 0); got != want || found != (want != "") {
				fail("%s: got %q, model %q", desc, got, want)
			}
		default: // time passes
			d := []time.Duration{10 * time.Millisecond, 60 * time.Millisecond, 300 * time.Millisecond}[rng.IntN(3)]
			desc = fmt.Sprintf("advance %v", d)
			clock.Advance(d)
			m.now = clock.Now().UnixMilli()
		}
		log = append(log, desc)
		compareState(t, a, m, fail)
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
