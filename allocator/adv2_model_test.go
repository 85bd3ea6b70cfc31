package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// adv2Names: fewer names than modelNames so that collisions (re-adding a
// leased member, priority changes while leased...) are frequent.
var adv2Names = []string{"a", "b", "c", "d", "e", "f"}

// TestAdv2ModelBudgets runs an extended differential test: budgets 0, 1, 2,
// 16, Extend without TTL on expiring members, SetPriority on leased
// members, MallocN up to the pool size, renewals to permanent and back, GC
// of many sizes, shared malloc with bindings, and many more time steps.
func TestAdv2ModelBudgets(t *testing.T) {
	seeds, steps := 30, 300
	if s, err := strconv.Atoi(os.Getenv("ADV2_SEEDS")); err == nil {
		seeds = s
	}
	for _, budget := range []int{0, 1, 2, 16} {
		for _, tg := range targets[:1] {
			for seed := range seeds {
				t.Run(fmt.Sprintf("%s/b%d/seed%d", tg.name, budget, seed), func(t *testing.T) {
					t.Parallel()
					runModelDiff2(t, tg, uint64(5000+seed), steps, budget)
				})
			}
		}
	}
}

func TestAdv2ModelBudgetsCluster(t *testing.T) {
	for _, budget := range []int{1, 16} {
		for seed := range 4 {
			t.Run(fmt.Sprintf("b%d/seed%d", budget, seed), func(t *testing.T) {
				t.Parallel()
				runModelDiff2(t, targets[1], uint64(7000+seed), 200, budget)
			})
		}
	}
}

func runModelDiff2(t *testing.T, tg target, seed uint64, steps, budget int) {
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

	pick := func() string { return adv2Names[rng.IntN(len(adv2Names))] }
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
			n, ttl := 1+rng.IntN(len(adv2Names)+1), ttls[rng.IntN(len(ttls))]
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
