package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/keys"
)

// demoPoolSuffix is the namespace suffix of the demo's proxy pool: its
// keys are {<prefix>|demo-pool}|..., apart from any real pool of the
// prefix (whose default suffix is allocator.DefaultSuffix).
const demoPoolSuffix = "demo-pool"

// The demo's proxies: two premium ones (priority 10), then four regular
// ones (priority 0).
var (
	demoPremium = []string{"premium-1", "premium-2"}
	demoRegular = []string{"regular-1", "regular-2", "regular-3", "regular-4"}
	demoProxies = append(slices.Clone(demoPremium), demoRegular...)
)

// Shape of the MallocWait step.
const demoWaiters = 4

// demoAlice is the soft-binding name the demo uses.
const demoAlice = "crawler-alice"

// newDemoPool returns the demo's allocator on the connection of the lock
// demo.
func newDemoPool(cn *conn, prefix string) (*allocator.Allocator, error) {
	return allocator.New(cn.client, prefix, allocator.WithSuffix(demoPoolSuffix))
}

// resetPool deletes what an earlier run left in the demo pool (members,
// leases, waiters, bindings) but the fencing counter, so fences keep
// growing from run to run. It goes through the key layout rather than the
// API because no API call removes the queue entries of a run that was
// killed while its workers waited (they would lapse within 30 s). It
// reports whether there was anything to delete.
func (d *demo) resetPool(ctx context.Context) (bool, error) {
	pk := keys.NewPool(d.a.Prefix(), d.a.Suffix())
	var del []string
	for _, k := range pk.Scripts(pk.Bind(demoAlice)) {
		if k != pk.Part("fence") {
			del = append(del, k)
		}
	}
	n, err := d.cn.client.Exists(ctx, pk.Part("items"), pk.Part("timers"), pk.Part("waitq")).Result()
	if err != nil {
		return false, err
	}
	if err := d.cn.client.Del(ctx, del...).Err(); err != nil {
		return false, err
	}
	return n > 0, nil
}

// poolSetup adds the proxies to the pool: the premium ones with priority
// 10, the regular ones with 0.
func (d *demo) poolSetup(ctx context.Context) error {
	if _, err := d.a.Extend(ctx, demoPremium, allocator.WithPriority(10)); err != nil {
		return err
	}
	if _, err := d.a.Extend(ctx, demoRegular); err != nil {
		return err
	}
	d.p.line("  pool %s: Extend(%s, WithPriority(10)), Extend(%s)",
		keys.Tag(d.a.Prefix(), d.a.Suffix()), strings.Join(demoPremium, ", "), strings.Join(demoRegular, ", "))
	return nil
}

// priorities leases every proxy one by one: the premium ones come first,
// then the regular ones in the order they joined; no proxy is leased
// twice and a seventh malloc finds nothing.
func (d *demo) priorities(ctx context.Context) error {
	if err := d.poolSetup(ctx); err != nil {
		return err
	}
	var leases []*allocator.Lease
	defer func() { freeAll(ctx, leases) }()
	for i := range demoProxies {
		l, err := d.a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))
		if err != nil {
			return fmt.Errorf("malloc %d of %d: %w", i+1, len(demoProxies), err)
		}
		leases = append(leases, l)
		d.p.line("    client-%d MallocLease -> %-9s (priority %2d, fence %d)", i+1, l.Key(), demoPriority(l.Key()), l.Fence())
	}
	_, err := d.a.MallocLease(ctx)
	d.p.line("    client-7 MallocLease -> %s", allocErrName(err))
	if !errors.Is(err, allocator.ErrNoneAvailable) {
		return fmt.Errorf("malloc on an exhausted pool: want ErrNoneAvailable, got %v", err)
	}
	var got []string
	for i, l := range leases {
		got = append(got, l.Key())
		if i > 0 && l.Fence() <= leases[i-1].Fence() {
			return fmt.Errorf("fence %d after %d", l.Fence(), leases[i-1].Fence())
		}
	}
	if !slices.Equal(got, demoProxies) {
		d.p.line("  PRIORITY ORDER BROKEN: got %v, want %v", got, demoProxies)
		return fmt.Errorf("allocation order %v, want %v", got, demoProxies)
	}
	d.p.line("  premium first, then regular in the order they joined; six leases, six proxies:")
	d.p.line("  none leased twice, fences strictly increasing.")
	if err := freeEach(ctx, leases); err != nil {
		return err
	}
	leases = nil
	d.summary = append(d.summary, "priorities: premium proxies leased first, then regular ones first in first out; none twice")
	return nil
}

// binding shows that a named client gets its proxy back though another is
// first in line, and that a binding never reserves its proxy.
func (d *demo) binding(ctx context.Context) error {
	alice := allocator.WithBind(demoAlice, time.Minute)
	ttl := allocator.WithLeaseTTL(time.Minute)
	l, err := d.a.MallocLease(ctx, alice, ttl)
	if err != nil {
		return err
	}
	first := l.Key()
	d.p.line("    %s MallocLease(WithBind(%q)) -> %s (now bound to it); Free", demoAlice, demoAlice, first)
	if err := l.Free(ctx); err != nil {
		return err
	}
	head, err := d.freeHead(ctx)
	if err != nil {
		return err
	}
	l, err = d.a.MallocLease(ctx, alice, ttl)
	if err != nil {
		return err
	}
	d.p.line("    %s MallocLease(WithBind(%q)) -> %s again, though %s was first in line; Free",
		demoAlice, demoAlice, l.Key(), head)
	if l.Key() != first || head == first {
		return fmt.Errorf("soft binding: got %s, want %s (head of the free list %s)", l.Key(), first, head)
	}
	if err := l.Free(ctx); err != nil {
		return err
	}

	// Soft: the bound proxy is free for anybody to take.
	var others []*allocator.Lease
	defer func() { freeAll(ctx, others) }()
	for {
		o, err := d.a.MallocLease(ctx, ttl)
		if err != nil {
			return err
		}
		others = append(others, o)
		if o.Key() == first {
			break
		}
	}
	d.p.line("    crawler-bob MallocLease x%d (no binding) -> ..., %s: a binding reserves nothing", len(others), first)
	l, err = d.a.MallocLease(ctx, alice, ttl)
	if err != nil {
		return err
	}
	others = append(others, l)
	bound, ok, err := d.a.GetSoftBind(ctx, demoAlice)
	if err != nil {
		return err
	}
	d.p.line("    %s MallocLease(WithBind(%q)) -> %s; GetSoftBind -> %s: the binding moved",
		demoAlice, demoAlice, l.Key(), bound)
	if l.Key() == first || !ok || bound != l.Key() {
		return fmt.Errorf("soft binding while %s was leased: got %s, bound to %q (%v)", first, l.Key(), bound, ok)
	}
	if err := freeEach(ctx, others); err != nil {
		return err
	}
	others = nil
	d.summary = append(d.summary, fmt.Sprintf(
		"soft binding: %s got %s back ahead of the line, and another proxy while %s was taken", demoAlice, first, first))
	return nil
}

// deadHolder leases the last free proxy with a short TTL to a holder that
// is then killed: the next malloc after the TTL reclaims the lease
// itself, nobody calling GC, with a larger fence; the dead holder's late
// Free fails and its fenced write is refused.
func (d *demo) deadHolder(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.t.step)
	defer cancel()
	ttl := allocator.WithLeaseTTL(time.Minute)
	var live []*allocator.Lease
	defer func() { freeAll(ctx, live) }()
	for range len(demoProxies) - 1 {
		l, err := d.a.MallocLease(ctx, ttl)
		if err != nil {
			return err
		}
		live = append(live, l)
	}
	dead, err := d.a.MallocLease(ctx, allocator.WithLeaseTTL(d.t.leaseTTL))
	if err != nil {
		return err
	}
	taken := time.Now()
	lost := dead.Lost() // what a holder watches while it works
	d.p.line("  five live clients hold five proxies; holder-X leases the last one, %s", dead.Key())
	d.p.line("  (fence %d, TTL %v) and is killed: it will never Free or Renew.", dead.Fence(), d.t.leaseTTL)
	_, err = d.a.MallocLease(ctx, ttl)
	d.p.line("    client-6 MallocLease -> %s", allocErrName(err))
	if !errors.Is(err, allocator.ErrNoneAvailable) {
		return fmt.Errorf("malloc with every proxy leased: want ErrNoneAvailable, got %v", err)
	}

	// Wait, on the server's clock, until the lease has expired.
	var li allocator.LeaseInfo
	var s *allocator.Snapshot
	for {
		if s, err = d.a.Snapshot(ctx); err != nil {
			return err
		}
		var ok bool
		if li, ok = s.Leases[dead.Key()]; !ok || li.Fence != dead.Fence() {
			return fmt.Errorf("the lease of %s ended before its TTL ran out", dead.Key())
		}
		if li.Expires.Before(s.Now) {
			break
		}
		if err := sleepCtx(ctx, li.Expires.Sub(s.Now)+5*time.Millisecond); err != nil {
			return err
		}
	}
	d.p.line("    %v later: the lease expired %v ago and is still recorded; nobody calls GC.",
		fmtDur(time.Since(taken)), fmtDur(s.Now.Sub(li.Expires)))
	// Lost closed at the TTL less a tenth; allow for a late timer.
	select {
	case <-lost:
		d.p.line("    (were holder-X only paused, its Lease would have told it: Lost() closed after about %v,",
			fmtDur(dead.ValidUntil().Sub(taken)))
		d.p.line("    the TTL less a tenth, and Err() -> %s)", allocErrName(dead.Err()))
	case <-time.After(time.Second):
		return errors.New("Lost() not closed after the lease expired")
	case <-ctx.Done():
		return ctx.Err()
	}

	next, err := d.a.MallocLease(ctx, ttl)
	if err != nil {
		return fmt.Errorf("malloc after the TTL did not reclaim the expired lease: %w", err)
	}
	live = append(live, next)
	d.p.line("    client-6 MallocLease -> %s (fence %d > %d): the malloc reclaimed the lease itself",
		next.Key(), next.Fence(), dead.Fence())
	if next.Key() != dead.Key() || next.Fence() <= dead.Fence() {
		return fmt.Errorf("after the reclaim: got %s fence %d, want %s with a fence above %d",
			next.Key(), next.Fence(), dead.Key(), dead.Fence())
	}

	d.p.line("  holder-X comes back to life and uses its stale Lease:")
	ferr := dead.Free(ctx)
	d.p.line("    Free -> %s: %v", allocErrName(ferr), ferr)
	if !errors.Is(ferr, allocator.ErrNotHeld) {
		return fmt.Errorf("stale Free: want ErrNotHeld, got %v", ferr)
	}
	s, err = d.a.Snapshot(ctx)
	if err != nil {
		return err
	}
	if li := s.Leases[next.Key()]; li.Fence != next.Fence() {
		return fmt.Errorf("the stale Free touched client-6's lease (fence %d)", li.Fence)
	}
	d.p.line("    client-6 still holds %s: the stale Free changed nothing.", next.Key())
	var store fencedStore
	if err := store.write(next.Fence(), "page fetched by client-6"); err != nil {
		return fmt.Errorf("store rejected the current holder: %w", err)
	}
	d.p.line("    client-6 writes with fence %d -> accepted", next.Fence())
	serr := store.write(dead.Fence(), "late page from holder-X")
	if serr == nil {
		return fmt.Errorf("store accepted the stale fence %d", dead.Fence())
	}
	d.p.line("    holder-X writes with fence %d -> rejected: %v", dead.Fence(), serr)
	if err := freeEach(ctx, live); err != nil {
		return err
	}
	live = nil
	d.summary = append(d.summary, fmt.Sprintf(
		"reclaim: a dead holder's %v lease was reclaimed by the next malloc (no GC); its late Free got ErrNotHeld, its fence %d was refused",
		d.t.leaseTTL, dead.Fence()))
	return nil
}

// quarantine has a health check find the proxy crawler-alice is bound to
// failing: it is quarantined, never leased while it is, alice's binding
// moves, and it returns to the pool by itself after the cooldown.
func (d *demo) quarantine(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.t.step)
	defer cancel()
	bad, ok, err := d.a.GetSoftBind(ctx, demoAlice)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s has no binding", demoAlice)
	}
	probe := func(_ context.Context, key string) error {
		if key == bad {
			return errors.New("connect: connection refused")
		}
		return nil
	}
	healthy, unhealthy, err := d.a.HealthCheck(ctx, probe, allocator.WithCooldown(d.t.cooldown),
		allocator.WithCheckReport(func(key string, err error) {
			if err != nil {
				d.p.line("    probe %s -> %v", key, err)
			}
		}))
	if err != nil {
		return err
	}
	d.p.line("    HealthCheck: %d healthy, %d unhealthy, quarantined for %v (WithCooldown)", healthy, unhealthy, d.t.cooldown)
	if unhealthy != 1 || healthy != len(demoProxies)-1 {
		return fmt.Errorf("HealthCheck: %d healthy, %d unhealthy; want %d and 1", healthy, unhealthy, len(demoProxies)-1)
	}
	s, err := d.a.Snapshot(ctx)
	if err != nil {
		return err
	}
	until := s.Members[bad].QuarantinedUntil
	if !until.After(s.Now) || slices.Contains(s.Free, bad) {
		return fmt.Errorf("%s not quarantined: until %v, free list %v", bad, until, s.Free)
	}

	ttl := allocator.WithLeaseTTL(time.Minute)
	var leases []*allocator.Lease
	defer func() { freeAll(ctx, leases) }()
	l, err := d.a.MallocLease(ctx, allocator.WithBind(demoAlice, time.Minute), ttl)
	if err != nil {
		return err
	}
	leases = append(leases, l)
	d.p.line("    %s MallocLease(WithBind(%q)) -> %s: the binding to %s no longer applies", demoAlice, demoAlice, l.Key(), bad)
	for {
		l, err := d.a.MallocLease(ctx, ttl)
		if errors.Is(err, allocator.ErrNoneAvailable) {
			break
		}
		if err != nil {
			return err
		}
		leases = append(leases, l)
	}
	var got []string
	for _, l := range leases {
		got = append(got, l.Key())
	}
	d.p.line("    others MallocLease until ErrNoneAvailable -> %s", strings.Join(got[1:], ", "))
	if slices.Contains(got, bad) || len(got) != len(demoProxies)-1 {
		d.p.line("  QUARANTINE BROKEN: leased %v while %s was quarantined", got, bad)
		return fmt.Errorf("leased %v while %s was quarantined", got, bad)
	}
	d.p.line("  %d proxies leased, never %s.", len(got), bad)
	if err := freeEach(ctx, leases); err != nil {
		return err
	}
	leases = nil

	// Wait, on the server's clock, for the cooldown to end.
	for s.Now.Before(until) {
		if err := sleepCtx(ctx, until.Sub(s.Now)+5*time.Millisecond); err != nil {
			return err
		}
		if s, err = d.a.Snapshot(ctx); err != nil {
			return err
		}
	}
	l, err = d.a.MallocLease(ctx, ttl)
	if err != nil {
		return err
	}
	leases = append(leases, l)
	if s, err = d.a.Snapshot(ctx); err != nil {
		return err
	}
	m := s.Members[bad]
	d.p.line("    after the cooldown, the next MallocLease (it got %s) first put %s back in the pool: free again", l.Key(), bad)
	if !(m.Free || l.Key() == bad) || !m.QuarantinedUntil.IsZero() {
		return fmt.Errorf("%s did not return after its cooldown: %+v", bad, m)
	}
	if err := freeEach(ctx, leases); err != nil {
		return err
	}
	leases = nil
	d.summary = append(d.summary, fmt.Sprintf(
		"quarantine: the failing %s was never leased during its %v cooldown, then came back by itself", bad, d.t.cooldown))
	return nil
}

// waiting exhausts the pool, queues workers in MallocWait one after the
// other and frees the proxies one by one: each goes straight to the
// longest-waiting worker, before any newcomer.
func (d *demo) waiting(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.t.step)
	defer cancel()
	ttl := allocator.WithLeaseTTL(time.Minute)
	var held []*allocator.Lease
	defer func() { freeAll(ctx, held) }()
	for range demoProxies {
		l, err := d.a.MallocLease(ctx, ttl)
		if err != nil {
			return err
		}
		held = append(held, l)
	}
	type got struct {
		l   *allocator.Lease
		at  time.Time // when MallocWait returned
		err error
	}
	results := make([]chan got, demoWaiters)
	var served []*allocator.Lease
	defer func() {
		cancel() // waiters still queued give up
		for _, ch := range results {
			if ch != nil {
				if g := <-ch; g.l != nil {
					served = append(served, g.l)
				}
			}
		}
		freeAll(ctx, served)
	}()
	for i := range demoWaiters {
		ch := make(chan got, 1)
		results[i] = ch
		go func() {
			l, err := d.a.MallocWait(ctx, ttl)
			ch <- got{l, time.Now(), err}
		}()
		// Queue the workers one after the other, so their order is known.
		for {
			s, err := d.a.Snapshot(ctx)
			if err != nil {
				return err
			}
			if len(s.Waiters) == i+1 {
				break
			}
			if err := sleepCtx(ctx, time.Millisecond); err != nil {
				return err
			}
		}
	}
	d.p.line("  six clients hold the six proxies; worker-1 to worker-%d call MallocWait, in that order.", demoWaiters)
	for i := range demoWaiters {
		h := held[len(held)-1-i]
		freed := time.Now()
		if err := h.Free(ctx); err != nil {
			return err
		}
		_, nerr := d.a.MallocLease(ctx)
		g := <-results[i]
		results[i] = nil
		if g.err != nil {
			return fmt.Errorf("worker-%d: %w", i+1, g.err)
		}
		served = append(served, g.l)
		d.p.line("    Free(%s) -> worker-%d got it %v later (fence %d); a newcomer's MallocLease -> %s",
			h.Key(), i+1, fmtDur(g.at.Sub(freed)), g.l.Fence(), allocErrName(nerr))
		if g.l.Key() != h.Key() || !errors.Is(nerr, allocator.ErrNoneAvailable) {
			d.p.line("  HAND-OFF ORDER BROKEN")
			return fmt.Errorf("worker-%d got %s after the Free of %s (newcomer: %v)", i+1, g.l.Key(), h.Key(), nerr)
		}
		if i > 0 && g.l.Fence() <= served[i-1].Fence() {
			return fmt.Errorf("fence %d after %d", g.l.Fence(), served[i-1].Fence())
		}
	}
	d.p.line("  served first come, first served; every freed proxy went straight to the next worker.")
	if err := freeEach(ctx, append(held[:len(held)-demoWaiters], served...)); err != nil {
		return err
	}
	held, served = nil, nil
	d.summary = append(d.summary, fmt.Sprintf(
		"hand-off: %d workers in MallocWait were served in arrival order; newcomers never took a freed proxy", demoWaiters))
	return nil
}

// freeHead returns the proxy a plain malloc would take now.
func (d *demo) freeHead(ctx context.Context) (string, error) {
	s, err := d.a.Snapshot(ctx)
	if err != nil {
		return "", err
	}
	if len(s.Free) == 0 {
		return "", errors.New("no free proxy")
	}
	return s.Free[0], nil
}

func demoPriority(key string) int {
	if slices.Contains(demoPremium, key) {
		return 10
	}
	return 0
}

// freeEach frees the leases and returns the first error.
func freeEach(ctx context.Context, ls []*allocator.Lease) error {
	for _, l := range ls {
		if err := l.Free(ctx); err != nil {
			return fmt.Errorf("free %s: %w", l.Key(), err)
		}
	}
	return nil
}

// freeAll frees the leases with a context that survives the cancellation
// of ctx, ignoring errors: the clean-up of a step that failed.
func freeAll(ctx context.Context, ls []*allocator.Lease) {
	if len(ls) == 0 {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	for _, l := range ls {
		_ = l.Free(fctx)
	}
}

// allocErrName names the allocator sentinel err wraps, for display.
func allocErrName(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, allocator.ErrNoneAvailable):
		return "ErrNoneAvailable"
	case errors.Is(err, allocator.ErrNotHeld):
		return "ErrNotHeld"
	case errors.Is(err, allocator.ErrSessionLost):
		return "ErrSessionLost"
	}
	return "error"
}
