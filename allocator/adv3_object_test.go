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

// adv3Obj is an Object with hooks.
type adv3Obj struct {
	allocator.BaseObject
	name    string
	onOpen  func(ctx context.Context, key string) error
	onClose func(ctx context.Context, key string) error
	closes  atomic.Int32
	opens   atomic.Int32
}

func (o *adv3Obj) Name() string { return o.name }
func (o *adv3Obj) Open(ctx context.Context) error {
	o.opens.Add(1)
	if o.onOpen != nil {
		return o.onOpen(ctx, o.Key())
	}
	return nil
}
func (o *adv3Obj) Close(ctx context.Context) error {
	o.closes.Add(1)
	if o.onClose != nil {
		return o.onClose(ctx, o.Key())
	}
	return nil
}

// Release whose ctx ends while the object closes (a slow Close past the
// caller's deadline) marks the allocation released but never frees the
// resource; with a permanent lease it is stranded for good, and Release
// cannot be retried (it returns nil).
func TestAdv3ReleaseCtxEndsDuringCloseStrandsResource(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"r0"})))
		rctx, cancel := context.WithCancel(ctx)
		o := &adv3Obj{onClose: func(context.Context, string) error { cancel(); return nil }}
		al := must[*allocator.Allocation](t)(a.Malloc(ctx, o, allocator.WithLeaseTTL(0)))
		err := al.Release(rctx)
		t.Logf("first Release: %v", err)
		if err2 := al.Release(ctx); err2 != nil {
			t.Fatalf("second Release: %v", err2)
		}
		s := checkInvariants(t, a)
		if _, leased := s.Leases["r0"]; leased {
			t.Fatalf("after Release (closes=%d), r0 is still leased (permanent lease, stranded): leases=%v free=%v", o.closes.Load(), s.Leases, s.Free)
		}
	})
}

// Refresh whose ctx ends after the object opened on the new resource
// keeps the new lease and leaks the old one (its Free uses the ended ctx):
// the object holds two resources, one of them for good.
func TestAdv3RefreshCtxEndsAfterOpenHoldsTwo(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"r0", "r1", "r2"})))
		o := &adv3Obj{}
		al := must[*allocator.Allocation](t)(a.Malloc(ctx, o, allocator.WithLeaseTTL(0)))
		old := al.Key()
		rctx, cancel := context.WithCancel(ctx)
		o.onOpen = func(_ context.Context, key string) error {
			if key != old {
				cancel() // the caller's deadline passes just after the open
			}
			return nil
		}
		err := al.Refresh(rctx)
		t.Logf("Refresh: %v, now on %q (was %q)", err, al.Key(), old)
		s := checkInvariants(t, a)
		if err == nil && len(s.Leases) != 1 {
			t.Fatalf("after a successful Refresh the pool has %d leases (want 1: the object's): %v", len(s.Leases), keysOf(s.Leases))
		}
	})
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return sorted(out)
}

// Release called concurrently closes and frees exactly once.
func TestAdv3ReleaseConcurrentOnce(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{AutoClose: true}))
		ok(t, errOnly(a.Extend(ctx, names("r", 4))))
		for round := 0; round < 20; round++ {
			o := &adv3Obj{name: "n"}
			al := must[*allocator.Allocation](t)(a.Malloc(ctx, o))
			var wg sync.WaitGroup
			var errs atomic.Int32
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := al.Release(ctx); err != nil {
						errs.Add(1)
					}
				}()
			}
			// concurrent AutoClose by a new malloc of the same name
			o2 := &adv3Obj{name: "n"}
			al2 := must[*allocator.Allocation](t)(a.Malloc(ctx, o2))
			wg.Wait()
			if o.closes.Load() != 1 || errs.Load() != 0 {
				t.Fatalf("round %d: closes=%d errs=%d", round, o.closes.Load(), errs.Load())
			}
			ok(t, al2.Release(ctx))
		}
		s := checkInvariants(t, a)
		if len(s.Leases) != 0 || len(s.Free) != 4 {
			t.Fatalf("leases %v free %v", keysOf(s.Leases), s.Free)
		}
	})
}

// A binding key holding a value another client wrote (garbage) must not
// break mallocs for that name.
func TestAdv3GarbageBindingValue(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		c := tg.client(t)
		for _, v := range []string{"garbage 1 r0", "x", "nan 1 r0", "inf 1 r0", "0x10 1 r0", " 0 1 r0"} {
			a := tg.newAlloc(t)
			ok(t, errOnly(a.Extend(ctx, []string{"r0", "r1"})))
			bkey := "{" + a.Prefix() + "|" + a.Suffix() + "}|bind|n"
			ok(t, c.Set(ctx, bkey, v, 0).Err())
			l, err := a.MallocLease(ctx, allocator.WithBind("n", 0))
			if err != nil {
				t.Errorf("binding value %q: MallocLease: %v", v, err)
			} else {
				ok(t, l.Free(ctx))
			}
			if _, _, err := a.GetSoftBind(ctx, "n"); err != nil {
				t.Errorf("binding value %q: GetSoftBind: %v", v, err)
			}
			o := &adv3Obj{name: "n"}
			if al, err := a.Malloc(ctx, o); err != nil {
				t.Errorf("binding value %q: Malloc: %v", v, err)
			} else {
				ok(t, al.Release(ctx))
			}
			checkInvariants(t, a)
		}
	})
}

// A binding key of another type: the library says it tolerates it.
func TestAdv3WrongTypeBindingKey(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		c := tg.client(t)
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"r0", "r1"})))
		bkey := "{" + a.Prefix() + "|" + a.Suffix() + "}|bind|n"
		ok(t, c.HSet(ctx, bkey, "f", "v").Err())
		l, err := a.MallocLease(ctx, allocator.WithBind("n", 0))
		if err != nil {
			t.Errorf("hash binding key: MallocLease: %v", err)
		} else {
			ok(t, l.Free(ctx))
		}
		if _, _, err := a.GetSoftBind(ctx, "n"); err != nil {
			t.Errorf("hash binding key: GetSoftBind: %v", err)
		}
		checkInvariants(t, a)
	})
}

var _ = errors.Is
var _ = time.Second
var _ = redistest.Client
