package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/lock"
)

// Keys the demo uses, in the namespace of --prefix.
const (
	demoJobKey       = "demo-job"
	demoCrashKey     = "demo-crash"
	demoKeepAliveKey = "demo-keepalive"
)

// Shape of the contention step.
const (
	demoWorkers = 8
	demoRounds  = 3
)

// demoTimings are the durations of one demo run.
type demoTimings struct {
	work     time.Duration // simulated work inside the critical section
	jobTTL   time.Duration // TTL of the contended lock
	crashTTL time.Duration // TTL of the lock whose holder crashes
	keepTTL  time.Duration // TTL of the kept-alive lock
	hold     time.Duration // how long the kept-alive lock is held
	leaseTTL time.Duration // TTL of the lease whose holder is killed
	cooldown time.Duration // quarantine of the proxy that fails its check
	step     time.Duration // bound on any single wait of a step
	// taskStep is one of the steps of work of a task of part 3, each
	// followed by a progress update; visibility is the task queue's
	// visibility timeout, which bounds the redelivery of a killed
	// listener's task.
	taskStep, visibility time.Duration
}

func demoTimingsFor(quick bool) demoTimings {
	if quick {
		return demoTimings{
			work: 5 * time.Millisecond, jobTTL: 2 * time.Second, crashTTL: 300 * time.Millisecond,
			keepTTL: 240 * time.Millisecond, hold: 800 * time.Millisecond,
			leaseTTL: 200 * time.Millisecond, cooldown: 200 * time.Millisecond, step: 10 * time.Second,
			taskStep: 15 * time.Millisecond, visibility: 300 * time.Millisecond,
		}
	}
	return demoTimings{
		work: 20 * time.Millisecond, jobTTL: 2 * time.Second, crashTTL: 1500 * time.Millisecond,
		keepTTL: 600 * time.Millisecond, hold: 2400 * time.Millisecond,
		leaseTTL: time.Second, cooldown: time.Second, step: 15 * time.Second,
		taskStep: 100 * time.Millisecond, visibility: time.Second,
	}
}

// demoCommand returns the "demo" command.
func demoCommand() *command {
	return &command{
		name:  "demo",
		flags: "[--quick]",
		short: "Show the lock, the allocator and the task queue at work: crashes, fencing, priorities, hand-off, redelivery (~11 s).",
		long: `Part 1 shows the lock: contention, a crashed holder and fencing, keep-alive.
Part 2 shows the allocator on a pool of six proxies: priorities, soft
binding, a killed holder whose lease the next malloc reclaims, a failing
proxy quarantined by HealthCheck, and workers served in order by
MallocWait. Part 3 shows the task queue: listeners on goroutines running
remote tasks whose progress the caller shows while it waits, policy Auto,
and a listener killed mid-task whose task is delivered again.

It runs on the Redis server of --redis-url or --cluster, or on an embedded
miniredis when neither is given, and uses the keys demo-job, demo-crash and
demo-keepalive of the --prefix namespace, the pool {<prefix>|demo-pool}
and the task queue {<prefix>|demo-tasks} (leftovers of an earlier run are
deleted first). Exit status is 1 when a property it demonstrates does not
hold.`,
		example: progName + " demo",
		setup:   setupDemo,
	}
}

func setupDemo(fs *flag.FlagSet) runFunc {
	quick := fs.Bool("quick", false, "shorten the waits (for tests)")
	return func(ctx context.Context, e *env, c *command, _ []string) error {
		l, cn, err := e.newLock(ctx, c)
		if err != nil {
			return err
		}
		defer cn.Close()
		a, err := newDemoPool(cn, e.g.prefix)
		if err != nil {
			return err
		}
		defer a.Close()
		d := &demo{
			l:    l,
			a:    a,
			cn:   cn,
			p:    &printer{w: e.stdout},
			t:    demoTimingsFor(*quick),
			opts: []lock.AcquireOption{lock.WithReleaseNotify()},
		}
		return d.run(ctx, e.g.prefix)
	}
}

// demo holds what the demo steps share.
type demo struct {
	l       *lock.Lock
	a       *allocator.Allocator // the proxy pool of part 2
	cn      *conn
	p       *printer
	t       demoTimings
	opts    []lock.AcquireOption
	summary []string
}

func (d *demo) run(ctx context.Context, prefix string) error {
	start := time.Now()
	d.p.line("redis-allocator demo on %s (key prefix %q)", d.cn.desc, prefix)
	for _, k := range []string{demoJobKey, demoCrashKey, demoKeepAliveKey} {
		existed, err := d.l.Unlock(ctx, k)
		if err != nil {
			return err
		}
		if existed {
			d.p.line("(deleted a leftover %q lock of an earlier run)", k)
		}
	}
	if left, err := d.resetPool(ctx); err != nil {
		return err
	} else if left {
		d.p.line("(deleted the proxy pool an earlier run left)")
	}
	if left, err := d.resetTasks(ctx); err != nil {
		return err
	} else if left {
		d.p.line("(deleted the task queue an earlier run left)")
	}
	steps := []struct {
		part  string // printed before the step when set
		title string
		run   func(context.Context) error
	}{
		{"Part 1: the lock", "Step 1 of 11: eight workers contend for one lock", d.contention},
		{"", "Step 2 of 11: a holder dies; its TTL frees the lock and fencing stops its late write", d.crash},
		{"", "Step 3 of 11: KeepAlive holds a short-TTL lock and reports its loss", d.keepAlive},
		{"Part 2: the allocator, a pool of six proxies", "Step 4 of 11: priorities: premium proxies first, none leased twice", d.priorities},
		{"", "Step 5 of 11: soft binding: a named crawler gets its proxy back", d.binding},
		{"", "Step 6 of 11: a holder is killed; the next malloc reclaims its lease", d.deadHolder},
		{"", "Step 7 of 11: a failing proxy is quarantined by a health check", d.quarantine},
		{"", "Step 8 of 11: workers wait in MallocWait and are served in order", d.waiting},
		{"Part 3: the task queue, listeners on goroutines", "Step 9 of 11: two listeners run remote tasks; the caller shows their progress while it waits", d.remoteTasks},
		{"", "Step 10 of 11: policy Auto: remote while a listener is alive, local when none is", d.autoPolicy},
		{"", "Step 11 of 11: a listener is killed mid-task; its task is delivered again", d.killedListener},
	}
	for _, s := range steps {
		if s.part != "" {
			d.p.line("")
			d.p.line("== %s ==", s.part)
		}
		d.p.line("")
		d.p.line("%s", s.title)
		if err := s.run(ctx); err != nil {
			return fmt.Errorf("%s: %w", strings.SplitN(s.title, ":", 2)[0], err)
		}
	}
	if _, err := d.resetPool(ctx); err != nil {
		return err
	}
	if _, err := d.resetTasks(ctx); err != nil {
		return err
	}
	d.p.line("")
	d.p.line("Summary (%v in all)", time.Since(start).Round(10*time.Millisecond))
	for _, s := range d.summary {
		d.p.line("  ok  %s", s)
	}
	return d.p.err()
}

// contention has demoWorkers goroutines take the same key demoRounds times
// each and increment a counter that only the lock protects, with a gap
// between read and write that would lose increments if two held the lock.
func (d *demo) contention(ctx context.Context) error {
	total := demoWorkers * demoRounds
	d.p.line("  %d workers each take %q %d times (TTL %v, Acquire with WithReleaseNotify and",
		demoWorkers, demoJobKey, demoRounds, d.t.jobTTL)
	d.p.line("  ExponentialBackoff), read a shared counter, work %v, write counter+1, release.", d.t.work)

	var (
		counter  atomic.Int64 // read and written in two steps: only the lock makes it safe
		inside   atomic.Int32 // workers inside the critical section right now
		overlaps atomic.Int32 // times a worker found another one inside
		logMu    sync.Mutex
		fences   []int64 // in acquisition order
	)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ctx, cancelT := context.WithTimeout(ctx, d.t.step)
	defer cancelT()
	opts := append([]lock.AcquireOption{lock.WithRetry(lock.ExponentialBackoff(2*time.Millisecond, 64*time.Millisecond))}, d.opts...)

	work := func(name string) error {
		for range demoRounds {
			h, err := d.l.Acquire(ctx, demoJobKey, d.t.jobTTL, opts...)
			if err != nil {
				return err
			}
			if inside.Add(1) > 1 {
				overlaps.Add(1)
			}
			v := counter.Load()
			logMu.Lock()
			fences = append(fences, h.Fence())
			logMu.Unlock()
			d.p.line("    %s got the lock (fence %d)", name, h.Fence())
			err = sleepCtx(ctx, d.t.work)
			counter.Store(v + 1)
			inside.Add(-1)
			if rerr := release(ctx, h); err == nil {
				err = rerr
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range demoWorkers {
		name := fmt.Sprintf("worker-%d", i+1)
		wg.Go(func() {
			if err := work(name); err != nil {
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	elapsed := time.Since(start)

	increasing := len(fences) == total
	for i := 1; i < len(fences); i++ {
		if fences[i] <= fences[i-1] {
			increasing = false
		}
	}
	got := counter.Load()
	if got != int64(total) || !increasing || overlaps.Load() != 0 {
		d.p.line("  MUTUAL EXCLUSION BROKEN: %d/%d increments, %d overlaps, fences %v", got, total, overlaps.Load(), fences)
		return fmt.Errorf("mutual exclusion broken: %d/%d increments, %d overlaps", got, total, overlaps.Load())
	}
	d.p.line("  mutual exclusion held: %d/%d increments, fences %d..%d strictly increasing",
		got, total, fences[0], fences[len(fences)-1])
	d.p.line("  (never more than one worker inside; %d hand-overs in %v)", total, elapsed.Round(time.Millisecond))
	d.summary = append(d.summary, fmt.Sprintf(
		"mutual exclusion: %d workers, %d acquisitions, no lost increment, fences strictly increasing",
		demoWorkers, total))
	return nil
}

// crash shows a holder that stops without releasing: the next owner gets
// the lock once the TTL has run out, the stale handle learns it lost the
// lock, and a fenced store rejects the stale holder's late write.
func (d *demo) crash(ctx context.Context) error {
	old, err := d.l.TryAcquire(ctx, demoCrashKey, d.t.crashTTL)
	if err != nil {
		return err
	}
	d.p.line("  holder-A took %q (fence %d, TTL %v) and crashed without releasing it.", demoCrashKey, old.Fence(), d.t.crashTTL)
	d.p.line("  worker-B calls Acquire with a %v timeout...", d.t.step)

	actx, cancel := context.WithTimeout(ctx, d.t.step)
	defer cancel()
	start := time.Now()
	h, err := d.l.Acquire(actx, demoCrashKey, d.t.step, d.opts...)
	if err != nil {
		return err
	}
	defer func() { _ = release(ctx, h) }()
	waited := time.Since(start)
	d.p.line("  worker-B got the lock after waiting %v, when holder-A's TTL ran out (fence %d > %d).",
		fmtDur(waited), h.Fence(), old.Fence())
	if h.Fence() <= old.Fence() {
		return fmt.Errorf("fence %d of the new holder is not above %d", h.Fence(), old.Fence())
	}

	d.p.line("  holder-A wakes up (say, after a long GC pause) and uses its stale handle:")
	rerr := old.Refresh(ctx, d.t.crashTTL)
	d.p.line("    Refresh -> %s: %v", errName(rerr), rerr)
	lerr := old.Release(ctx)
	d.p.line("    Release -> %s: %v", errName(lerr), lerr)
	if !errors.Is(rerr, lock.ErrNotHeld) || !errors.Is(lerr, lock.ErrNotHeld) {
		return fmt.Errorf("stale handle: want ErrNotHeld, got %v and %v", rerr, lerr)
	}
	if v, _, err := d.l.Value(ctx, demoCrashKey); err != nil || v != h.Token() {
		return fmt.Errorf("the stale Release touched worker-B's lock (value %q, error %v)", v, err)
	}
	d.p.line("    worker-B still holds the lock: the stale Release did not touch it.")

	d.p.line("  A downstream store accepts a write only with a fence at least as high as any it has seen:")
	var store fencedStore
	if err := store.write(h.Fence(), "report from worker-B"); err != nil {
		return fmt.Errorf("store rejected the current holder: %w", err)
	}
	d.p.line("    worker-B writes with fence %d -> accepted", h.Fence())
	serr := store.write(old.Fence(), "late report from holder-A")
	if serr == nil {
		return fmt.Errorf("store accepted the stale fence %d", old.Fence())
	}
	d.p.line("    holder-A writes with fence %d -> rejected: %v", old.Fence(), serr)
	d.p.line("  the store keeps %q.", store.value)

	d.summary = append(d.summary,
		fmt.Sprintf("expiry: a crashed holder's lock passed to the next worker after its %v TTL (waited %v)",
			d.t.crashTTL, fmtDur(waited)),
		fmt.Sprintf("fencing: the stale handle got ErrNotHeld and its write with fence %d was rejected (store at %d)",
			old.Fence(), h.Fence()))
	return nil
}

// keepAlive holds a short-TTL lock for several TTLs with KeepAlive, then
// deletes the key behind the holder's back and times how soon Lost fires.
func (d *demo) keepAlive(ctx context.Context) error {
	h, err := d.l.TryAcquire(ctx, demoKeepAliveKey, d.t.keepTTL)
	if err != nil {
		return err
	}
	defer func() { _ = release(ctx, h) }()
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := h.KeepAlive(kctx); err != nil {
		return err
	}
	d.p.line("  took %q (fence %d, TTL %v) and called KeepAlive, which renews it every %v.",
		demoKeepAliveKey, h.Fence(), d.t.keepTTL, d.t.keepTTL/3)

	start := time.Now()
	tick := d.t.hold / 4
	for i := 1; i <= 4; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.Lost():
			return fmt.Errorf("lock lost while kept alive: %w", h.Err())
		case <-time.After(time.Until(start.Add(time.Duration(i) * tick))):
		}
		ttl, err := d.cn.client.PTTL(ctx, d.l.Key(demoKeepAliveKey)).Result()
		if err != nil {
			return err
		}
		d.p.line("    %5.2fs: still held (%.1f TTLs so far), Redis TTL %v, Err() = %v",
			time.Since(start).Seconds(), float64(time.Since(start))/float64(d.t.keepTTL), ttl.Round(time.Millisecond), h.Err())
		if h.Err() != nil || ttl <= 0 {
			return fmt.Errorf("lock not held during KeepAlive: ttl %v, err %v", ttl, h.Err())
		}
	}

	d.p.line("  deleting the key behind the holder's back with the forced Unlock...")
	deleted := time.Now()
	if existed, err := d.l.Unlock(ctx, demoKeepAliveKey); err != nil {
		return err
	} else if !existed {
		return errors.New("the kept-alive key was already gone")
	}
	select {
	case <-h.Lost():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d.t.step):
		return fmt.Errorf("Lost() did not fire within %v of the Unlock", d.t.step)
	}
	after := time.Since(deleted)
	d.p.line("  Lost() fired %v after the Unlock, at the next renewal.", fmtDur(after))
	d.p.line("  Err() -> %s: %v", errName(h.Err()), h.Err())
	if !errors.Is(h.Err(), lock.ErrNotHeld) {
		return fmt.Errorf("Err() after loss: want ErrNotHeld, got %v", h.Err())
	}
	d.summary = append(d.summary, fmt.Sprintf(
		"keep-alive: held %v on a %v TTL; the loss was signalled %v after the key was deleted",
		d.t.hold, d.t.keepTTL, fmtDur(after)))
	return nil
}

// fencedStore stands for a downstream system (a database, an object store)
// that remembers the highest fencing token it has seen and rejects writes
// that carry a lower one. That is what makes a lock safe against a holder
// that lost its lock without noticing: its writes carry an older fence.
type fencedStore struct {
	mu      sync.Mutex
	highest int64  // highest fence seen
	value   string // last accepted write
}

// write stores value when fence is at least the highest fence seen.
func (s *fencedStore) write(fence int64, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fence < s.highest {
		return fmt.Errorf("stale fence %d, the store has seen fence %d", fence, s.highest)
	}
	s.highest, s.value = fence, value
	return nil
}

// printer writes lines to w from several goroutines and keeps the first
// write error.
type printer struct {
	mu   sync.Mutex
	w    io.Writer
	werr error
}

func (p *printer) line(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.werr == nil {
		_, p.werr = fmt.Fprintf(p.w, format+"\n", a...)
	}
}

func (p *printer) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.werr
}

// errName names the lock sentinel err wraps, for display.
func errName(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, lock.ErrNotHeld):
		return "ErrNotHeld"
	case errors.Is(err, lock.ErrNotObtained):
		return "ErrNotObtained"
	case errors.Is(err, lock.ErrReleased):
		return "ErrReleased"
	}
	return "error"
}

// release releases h with a context that survives the cancellation of ctx,
// so an interrupted demo still frees its keys, but is bounded.
func release(ctx context.Context, h *lock.Held) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	return h.Release(rctx)
}

// fmtDur formats d to the millisecond: "<1ms", "15ms", "1.003s".
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return "<1ms"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
