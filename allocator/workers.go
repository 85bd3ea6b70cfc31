package allocator

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/script"
)

//go:embed workers.lua
var workersLua string

// workersScript is immutable after package initialisation.
var workersScript = script.New("workers.lua", workersLua)

// DefaultWorkersSuffix is the namespace suffix of a worker registry when
// WithWorkersSuffix is not given.
const DefaultWorkersSuffix = "workers"

// Workers is a registry of live workers, the Python redis-allocator's
// RedisThreadHealthCheckPool: each worker heartbeats its id with a TTL, Live
// lists the workers whose last heartbeat has not lapsed, and a worker that
// stops heartbeating (because its process died) drops out by itself when
// its TTL runs out. Deadlines follow the Redis server's clock, so workers
// with skewed clocks agree.
//
// The registry is one sorted set (id → deadline) under the hash tag
// {<prefix>|<suffix>}; every operation is one round trip, and lapsed
// workers are pruned by each of them. A Workers is safe for concurrent use.
type Workers struct {
	c   redis.UniversalClient
	key string
	log *slog.Logger
}

// WorkersOption configures NewWorkers.
type WorkersOption func(*workersConfig)

type workersConfig struct {
	suffix string
	log    *slog.Logger
}

// WithWorkersSuffix sets the registry's namespace suffix; the default is
// DefaultWorkersSuffix.
func WithWorkersSuffix(suffix string) WorkersOption {
	return func(c *workersConfig) { c.suffix = suffix }
}

// WithWorkersLogger sets the logger of the heartbeat loops (Run, Start);
// the default discards.
func WithWorkersLogger(l *slog.Logger) WorkersOption {
	return func(c *workersConfig) { c.log = l }
}

// NewWorkers returns the worker registry prefix (suffix
// DefaultWorkersSuffix unless WithWorkersSuffix is given) on client. It
// returns ErrInvalidKey for an empty or oversized prefix or a prefix or
// suffix holding a brace, and ErrInvalidArgument for a nil client.
func NewWorkers(client redis.UniversalClient, prefix string, opts ...WorkersOption) (*Workers, error) {
	c := workersConfig{suffix: DefaultWorkersSuffix}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if p := keys.NamespaceProblem(prefix, c.suffix, true); p != "" {
		return nil, fmt.Errorf("%w: %s", ErrInvalidKey, p)
	}
	if client == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalidArgument)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return &Workers{c: client, key: keys.Workers(prefix, c.suffix), log: c.log}, nil
}

// Key returns the Redis key of the registry (for inspection with other
// tools).
func (w *Workers) Key() string { return w.key }

func (w *Workers) run(ctx context.Context, args ...any) (any, error) {
	v, err := workersScript.Run(ctx, w.c, []string{w.key}, args...).Result()
	if err != nil {
		return nil, fmt.Errorf("allocator: workers: %w", err)
	}
	return v, nil
}

func (w *Workers) runInt(ctx context.Context, args ...any) (int64, error) {
	v, err := w.run(ctx, args...)
	if err != nil {
		return 0, err
	}
	return script.Int64(v)
}

// checkWorker validates a worker id and, when beat is true, a heartbeat
// TTL.
func checkWorker(id string, ttl time.Duration, beat bool) error {
	if p := keys.Problem(id); p != "" {
		return fmt.Errorf("%w: worker id: %s", ErrInvalidKey, p)
	}
	if beat && ttl < time.Millisecond {
		return fmt.Errorf("%w: worker TTL %v, want at least 1ms", ErrInvalidArgument, ttl)
	}
	return nil
}

// Heartbeat marks the worker id live for ttl from now (by the server's
// clock), registering it when it is new or had lapsed. It returns
// ErrInvalidKey for an empty id or one longer than 1 KiB and
// ErrInvalidArgument for a TTL below a millisecond; nothing changes then.
func (w *Workers) Heartbeat(ctx context.Context, id string, ttl time.Duration) error {
	if err := checkWorker(id, ttl, true); err != nil {
		return err
	}
	_, err := w.runInt(ctx, "beat", id, millis(ttl))
	return err
}

// Live returns the ids of the live workers, sorted.
func (w *Workers) Live(ctx context.Context) ([]string, error) {
	v, err := w.run(ctx, "live")
	if err != nil {
		return nil, err
	}
	ids, err := script.Strings(v)
	if err != nil {
		return nil, err
	}
	slices.Sort(ids)
	return ids, nil
}

// IsLive reports whether the worker id is live. It returns ErrInvalidKey
// for a bad id.
func (w *Workers) IsLive(ctx context.Context, id string) (bool, error) {
	if err := checkWorker(id, 0, false); err != nil {
		return false, err
	}
	n, err := w.runInt(ctx, "has", id)
	return n == 1, err
}

// Remove deregisters the worker id at once and reports whether it was
// live. It returns ErrInvalidKey for a bad id.
func (w *Workers) Remove(ctx context.Context, id string) (bool, error) {
	if err := checkWorker(id, 0, false); err != nil {
		return false, err
	}
	n, err := w.runInt(ctx, "remove", id)
	return n == 1, err
}

// Run heartbeats the worker id every third of ttl until ctx ends, then
// removes it and returns nil (or the error of the removal). A failed
// heartbeat is logged and retried after a tenth of ttl; only the first
// heartbeat's error is returned (at once), so that a misconfiguration is
// seen. It returns the errors of Heartbeat for a bad id or TTL.
func (w *Workers) Run(ctx context.Context, id string, ttl time.Duration) error {
	if err := w.Heartbeat(ctx, id, ttl); err != nil {
		return err
	}
	w.beat(ctx, id, ttl)
	return w.removeAfter(ctx, id, ttl)
}

// removeAfter removes id after ctx ended, within a bounded time.
func (w *Workers) removeAfter(ctx context.Context, id string, ttl time.Duration) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(max(ttl, time.Second), 5*time.Second))
	defer cancel()
	_, err := w.Remove(rctx, id)
	return err
}

// beat heartbeats id until ctx ends; the first heartbeat has been sent.
func (w *Workers) beat(ctx context.Context, id string, ttl time.Duration) {
	every := max(ttl/3, time.Millisecond)
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, ttl)
		err := w.Heartbeat(hctx, id, ttl)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			w.log.Warn("allocator: worker heartbeat failed", "worker", id, "err", err)
			t.Reset(max(ttl/10, time.Millisecond))
		default:
			t.Reset(every)
		}
	}
}

// Start registers the worker id (one heartbeat, whose error it returns)
// and keeps heartbeating it in the background every third of ttl until
// ctx ends (the id is then removed), Close or Orphan.
func (w *Workers) Start(ctx context.Context, id string, ttl time.Duration) (*Worker, error) {
	if err := w.Heartbeat(ctx, id, ttl); err != nil {
		return nil, err
	}
	bctx, cancel := context.WithCancel(ctx)
	wk := &Worker{w: w, id: id, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(wk.done)
		w.beat(bctx, id, ttl)
		wk.mu.Lock()
		remove := !wk.stopped
		wk.mu.Unlock()
		if remove {
			if err := w.removeAfter(bctx, id, ttl); err != nil {
				w.log.Warn("allocator: removing a worker failed; it lapses by itself", "worker", id, "err", err)
			}
		}
	}()
	return wk, nil
}

// Worker is a worker registered by Workers.Start, heartbeating in the
// background. It is safe for concurrent use.
type Worker struct {
	w      *Workers
	id     string
	cancel context.CancelFunc
	done   chan struct{} // closed when the heartbeat loop has exited

	mu      sync.Mutex
	stopped bool // Close or Orphan: the loop leaves the removal to them
}

// ID returns the worker's id.
func (wk *Worker) ID() string { return wk.id }

// Done returns a channel closed when the worker stopped heartbeating: its
// ctx ended, or Close or Orphan was called.
func (wk *Worker) Done() <-chan struct{} { return wk.done }

// stop ends the heartbeat loop without its removal and waits for it.
func (wk *Worker) stop() {
	wk.mu.Lock()
	wk.stopped = true
	wk.mu.Unlock()
	wk.cancel()
	<-wk.done
}

// Close stops heartbeating and removes the worker from the registry. It
// is idempotent.
func (wk *Worker) Close(ctx context.Context) error {
	wk.stop()
	_, err := wk.w.Remove(ctx, wk.id)
	return err
}

// Orphan stops heartbeating without removing the worker: it lapses when
// its TTL runs out, as if its process had died.
func (wk *Worker) Orphan() { wk.stop() }
