package allocator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"
)

// ErrUnhealthy is returned by Allocation.RefreshUntilHealthy when the
// object is still unhealthy after its attempts.
var ErrUnhealthy = errors.New("allocator: object unhealthy")

// ErrReleased is returned by the operations of an Allocation after
// Release (or after AutoClose released it).
var ErrReleased = errors.New("allocator: allocation released")

// Object is a client-side object bound to one pool resource at a time,
// such as a connection through a proxy or a client for one API key: the
// Python redis-allocator's RedisAllocatableClass. Malloc leases a resource
// for it, hands it the key with SetConfig and opens it; Release closes it
// and frees the resource; Refresh moves it to another resource.
//
// The allocator calls the methods of one Object from one goroutine at a
// time, but other goroutines may use the object meanwhile: an
// implementation guards its own state. BaseObject provides the methods an
// implementation does not need.
type Object interface {
	// Name returns the object's soft-binding name: Malloc asks for the
	// resource last bound to that name (and binds the name to the resource
	// it gets), so an object of the same name finds the same resource
	// again while it is free. "" means no binding. The name must not
	// change while the object is allocated, and be at most 1 KiB.
	Name() string
	// SetConfig hands the object its resource key and the params given to
	// Malloc (nil for none), before Open. Refresh calls it again with the
	// new key. An error aborts the malloc or refresh.
	SetConfig(key string, params map[string]any) error
	// Open makes the object usable on the key of the last SetConfig: it
	// connects, logs in and so on. An error aborts the malloc or refresh,
	// and the resource is freed.
	Open(ctx context.Context) error
	// Close releases what Open acquired, before the resource is freed or
	// the object moves to another one. It may be called after a failed
	// Open on the same key is given up, never twice in a row.
	Close(ctx context.Context) error
	// Healthy reports whether the object works on its resource
	// (RefreshUntilHealthy).
	Healthy(ctx context.Context) bool
}

// BaseObject implements Object with no name, no-op Open and Close, and
// Healthy true, and records what SetConfig hands it. Embed it (as a
// value) and override what the object needs.
type BaseObject struct {
	mu     sync.Mutex
	key    string
	params map[string]any
}

// Name returns "": no soft binding.
func (*BaseObject) Name() string { return "" }

// SetConfig records key and params.
func (b *BaseObject) SetConfig(key string, params map[string]any) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.key, b.params = key, params
	return nil
}

// Key returns the key of the last SetConfig.
func (b *BaseObject) Key() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.key
}

// Params returns the params of the last SetConfig.
func (b *BaseObject) Params() map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.params
}

// Open does nothing.
func (*BaseObject) Open(context.Context) error { return nil }

// Close does nothing.
func (*BaseObject) Close(context.Context) error { return nil }

// Healthy returns true.
func (*BaseObject) Healthy(context.Context) bool { return true }

var _ Object = (*BaseObject)(nil)

// Allocation is an Object allocated on a resource of the pool: it holds
// the lease and the object, and moves the object between resources. It is
// safe for concurrent use; its operations are serialised.
type Allocation struct {
	a      *Allocator
	obj    Object
	name   string // obj.Name() at malloc
	bind   string // the soft-binding name of the malloc, "" for none
	params map[string]any
	opts   []MallocOption // of the malloc, reused by Refresh

	// op serialises Renew, Release, Refresh and the health calls.
	op sync.Mutex

	mu       sync.Mutex // guards lease and released
	lease    *Lease
	released bool
}

// cleanupTimeout bounds the clean-up after a failure, which runs even when
// the caller's ctx has ended.
const cleanupTimeout = 5 * time.Second

// cleanupCtx returns a context for the clean-up after a failure.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// Malloc allocates a resource for obj, as MallocWithParams with nil params.
func (a *Allocator) Malloc(ctx context.Context, obj Object, opts ...MallocOption) (*Allocation, error) {
	return a.MallocWithParams(ctx, obj, nil, opts...)
}

// MallocWithParams leases a resource for obj (MallocLease with opts, soft
// bound to obj.Name() unless that is ""; a WithBind in opts overrides the
// binding, whose default TTL is none), then calls obj.SetConfig(key,
// params) and obj.Open. When either fails, the lease is freed and the
// error returned. With Policy.AutoClose, the live Allocation this
// Allocator made for an object of the same name is released first.
//
// It returns the errors of MallocLease (ErrNoneAvailable when nothing is
// free), ErrInvalidArgument for a nil obj and ErrInvalidKey for a name
// longer than 1 KiB.
func (a *Allocator) MallocWithParams(ctx context.Context, obj Object, params map[string]any, opts ...MallocOption) (*Allocation, error) {
	if obj == nil {
		return nil, fmt.Errorf("%w: nil object", ErrInvalidArgument)
	}
	name := obj.Name()
	if name != "" {
		if err := checkKey(name); err != nil {
			return nil, fmt.Errorf("object name: %w", err)
		}
		opts = append([]MallocOption{WithBind(name, 0)}, opts...)
	}
	m, err := newMallocConfig(opts)
	if err != nil {
		return nil, err
	}
	auto := a.policy != nil && a.policy.p.AutoClose && name != ""
	// Refuse what MallocLease would refuse before auto-closing anything.
	if a.isClosed() {
		return nil, ErrClosed
	}
	if _, err := a.sessionArg(m); err != nil {
		return nil, err
	}
	if auto {
		if prev := a.policy.tracked(name); prev != nil {
			if err := prev.Release(ctx); err != nil {
				a.log.Warn("allocator: auto-closing the previous allocation failed", "name", name, "key", prev.Key(), "err", err)
			}
		}
	}
	l, err := a.MallocLease(ctx, opts...)
	if err != nil {
		return nil, err
	}
	if err := a.openOn(ctx, obj, l, params); err != nil {
		return nil, err
	}
	al := &Allocation{a: a, obj: obj, name: name, bind: m.bind, params: params, opts: opts, lease: l}
	if auto {
		if displaced := a.policy.track(al); displaced != nil {
			// A concurrent Malloc of the same name registered first.
			if err := displaced.Release(ctx); err != nil {
				a.log.Warn("allocator: auto-closing the previous allocation failed", "name", name, "key", displaced.Key(), "err", err)
			}
		}
	}
	return al, nil
}

// openOn configures and opens obj on the lease l; on failure it frees l.
func (a *Allocator) openOn(ctx context.Context, obj Object, l *Lease, params map[string]any) error {
	err := obj.SetConfig(l.Key(), params)
	if err == nil {
		if err = obj.Open(ctx); err != nil {
			err = fmt.Errorf("allocator: opening the object on %q: %w", l.Key(), err)
		}
	} else {
		err = fmt.Errorf("allocator: configuring the object for %q: %w", l.Key(), err)
	}
	if err != nil {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if ferr := l.Free(cctx); ferr != nil && !errors.Is(ferr, ErrNotHeld) {
			a.log.Warn("allocator: freeing the resource of a failed open; it expires by itself", "key", l.Key(), "err", ferr)
		}
	}
	return err
}

// tracked returns the live Allocation of name, for AutoClose.
func (ps *policyState) tracked(name string) *Allocation {
	ps.objMu.Lock()
	defer ps.objMu.Unlock()
	return ps.objects[name]
}

// track registers al under its name and returns an Allocation it
// displaced, which the caller releases.
func (ps *policyState) track(al *Allocation) *Allocation {
	ps.objMu.Lock()
	defer ps.objMu.Unlock()
	prev := ps.objects[al.name]
	ps.objects[al.name] = al
	if prev == al {
		return nil
	}
	return prev
}

// untrack removes al from the registry if it is there.
func (ps *policyState) untrack(al *Allocation) {
	ps.objMu.Lock()
	defer ps.objMu.Unlock()
	if ps.objects[al.name] == al {
		delete(ps.objects, al.name)
	}
}

// Object returns the allocated object.
func (al *Allocation) Object() Object { return al.obj }

// Params returns the params of the malloc (a copy).
func (al *Allocation) Params() map[string]any { return maps.Clone(al.params) }

// Lease returns the current lease (Refresh replaces it).
func (al *Allocation) Lease() *Lease {
	al.mu.Lock()
	defer al.mu.Unlock()
	return al.lease
}

// Key returns the current resource (Refresh changes it).
func (al *Allocation) Key() string { return al.Lease().Key() }

// Released reports whether Release was called (or AutoClose released the
// allocation).
func (al *Allocation) Released() bool {
	al.mu.Lock()
	defer al.mu.Unlock()
	return al.released
}

// live returns the lease, or ErrReleased. The caller holds op.
func (al *Allocation) live() (*Lease, error) {
	al.mu.Lock()
	defer al.mu.Unlock()
	if al.released {
		return nil, ErrReleased
	}
	return al.lease, nil
}

// Renew renews the lease (Lease.Renew). It returns ErrReleased after
// Release.
func (al *Allocation) Renew(ctx context.Context, ttl time.Duration) error {
	al.op.Lock()
	defer al.op.Unlock()
	l, err := al.live()
	if err != nil {
		return err
	}
	return l.Renew(ctx, ttl)
}

// Release closes the object and frees the resource. Both are attempted;
// the error joins their errors (one wrapping ErrNotHeld when the lease had
// already ended). The Allocation is released even then. Release is
// idempotent: later calls return nil.
func (al *Allocation) Release(ctx context.Context) error {
	al.op.Lock()
	defer al.op.Unlock()
	l, err := al.live()
	if err != nil {
		return nil
	}
	al.mu.Lock()
	al.released = true
	al.mu.Unlock()
	if al.a.policy != nil {
		al.a.policy.untrack(al)
	}
	var cerr error
	if err := al.obj.Close(ctx); err != nil {
		cerr = fmt.Errorf("allocator: closing the object on %q: %w", l.Key(), err)
	}
	// Free even when ctx ended meanwhile: a later Release returns nil, so
	// this is the only chance.
	fctx, cancel := cleanupCtx(ctx)
	defer cancel()
	return errors.Join(cerr, l.Free(fctx))
}

// SetHealthy ends the quarantine of the current resource
// (Unquarantine). It returns ErrReleased after Release.
func (al *Allocation) SetHealthy(ctx context.Context) error {
	al.op.Lock()
	defer al.op.Unlock()
	l, err := al.live()
	if err != nil {
		return err
	}
	_, err = al.a.Unquarantine(ctx, l.Key())
	return err
}

// SetUnhealthy quarantines the current resource for d (Quarantine): it
// keeps its lease, but is not allocated again until d has passed, and its
// soft bindings are dropped. It returns ErrReleased after Release and
// ErrInvalidArgument for d ≤ 0.
func (al *Allocation) SetUnhealthy(ctx context.Context, d time.Duration) error {
	al.op.Lock()
	defer al.op.Unlock()
	l, err := al.live()
	if err != nil {
		return err
	}
	_, err = al.a.Quarantine(ctx, d, l.Key())
	return err
}

// Refresh moves the object to another resource: it leases a new one first
// (with the options of the malloc; the soft binding, if any, moves to the
// new resource), closes the object, configures and opens it on the new
// key, and then frees the old resource. When no other resource is free
// (ErrNoneAvailable) nothing changes. When the object fails to open on the
// new key, the new resource is freed and the object reopened on the old
// one (whose lease it still holds), and the error returned. It returns
// ErrReleased after Release.
func (al *Allocation) Refresh(ctx context.Context) error {
	al.op.Lock()
	defer al.op.Unlock()
	return al.refresh(ctx)
}

func (al *Allocation) refresh(ctx context.Context) error {
	old, err := al.live()
	if err != nil {
		return err
	}
	if al.a.shared && al.bind != "" {
		// A shared resource stays free, so its binding would hand it back.
		if err := al.a.UnbindSoftBind(ctx, al.bind); err != nil {
			return err
		}
	}
	nl, err := al.a.MallocLease(ctx, al.opts...)
	if err != nil {
		return err
	}
	if err := al.obj.Close(ctx); err != nil {
		al.a.log.Warn("allocator: closing the object before a refresh failed", "key", old.Key(), "err", err)
	}
	if err := al.a.openOn(ctx, al.obj, nl, al.params); err != nil {
		// Back to the old resource, which we still hold, and its binding.
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if al.bind != "" && !al.a.shared {
			if berr := al.a.UpdateSoftBind(cctx, al.bind, old.Key(), al.bindTTL()); berr != nil && !errors.Is(berr, ErrNotMember) {
				al.a.log.Warn("allocator: restoring the binding after a failed refresh failed", "name", al.bind, "err", berr)
			}
		}
		if rerr := al.obj.SetConfig(old.Key(), al.params); rerr != nil {
			err = errors.Join(err, fmt.Errorf("allocator: reconfiguring the object for %q: %w", old.Key(), rerr))
		} else if rerr := al.obj.Open(cctx); rerr != nil {
			err = errors.Join(err, fmt.Errorf("allocator: reopening the object on %q: %w", old.Key(), rerr))
		}
		return err
	}
	al.mu.Lock()
	al.lease = nl
	al.mu.Unlock()
	fctx, cancel := cleanupCtx(ctx)
	defer cancel()
	if err := old.Free(fctx); err != nil && !errors.Is(err, ErrNotHeld) {
		al.a.log.Warn("allocator: freeing the old resource of a refresh failed", "key", old.Key(), "err", err)
	}
	return nil
}

// bindTTL returns the TTL of the malloc's soft binding.
func (al *Allocation) bindTTL() time.Duration {
	m, _ := newMallocConfig(al.opts) // validated by the malloc
	return m.bindTTL
}

// RefreshUntilHealthy checks the object (Healthy) and, while it is
// unhealthy, quarantines its resource for the cooldown (WithCooldown,
// default DefaultCooldown) and refreshes it onto another one, up to
// maxAttempts refreshes. It returns nil once the object is healthy, an
// error wrapping ErrUnhealthy when it still is not after maxAttempts, the
// error of a failed Refresh (such as ErrNoneAvailable when no other
// resource is free), ErrReleased after Release, and ErrInvalidArgument for
// maxAttempts < 0 or a bad option.
func (al *Allocation) RefreshUntilHealthy(ctx context.Context, maxAttempts int, opts ...HealthOption) error {
	c, err := newHealthConfig(opts)
	if err != nil {
		return err
	}
	if maxAttempts < 0 {
		return fmt.Errorf("%w: %d attempts", ErrInvalidArgument, maxAttempts)
	}
	al.op.Lock()
	defer al.op.Unlock()
	for attempt := 0; ; attempt++ {
		l, err := al.live()
		if err != nil {
			return err
		}
		if al.obj.Healthy(ctx) {
			return nil
		}
		if attempt == maxAttempts {
			return fmt.Errorf("%w: %q after %d refreshes", ErrUnhealthy, l.Key(), maxAttempts)
		}
		if _, err := al.a.Quarantine(ctx, c.cooldown, l.Key()); err != nil {
			return err
		}
		if err := al.refresh(ctx); err != nil {
			return err
		}
	}
}
