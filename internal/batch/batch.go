// Package batch sends the commands that many goroutines issue at the same
// time in shared pipelines.
//
// A Batcher lets up to maxInFlight commands go to Redis on their own, each
// in its own round trip as go-redis would send it. A command that finds that
// many already in flight is queued. When an in-flight command completes, the
// whole queue leaves in one pipeline, sent by the first queued caller, so
// under load each round trip carries many commands: Redis and the client
// make one read and one write system call per batch instead of per command.
// A lone caller never waits for anyone, and never pays a goroutine switch.
//
// Every command still travels in exactly one round trip. Commands in one
// batch may come from unrelated callers; Redis runs each of them atomically
// as usual, and no ordering between callers is promised.
package batch

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Batcher sends commands like a go-redis client's Process method, batching
// concurrent ones; see the package documentation. It is safe for concurrent use and needs no closing.
type Batcher struct {
	c   redis.UniversalClient
	max int

	mu       sync.Mutex
	inflight int     // sends (single commands or batches) under way
	queue    []*call // commands waiting for the next batch
}

// call is a queued command.
type call struct {
	cmd  redis.Cmder
	done chan struct{} // closed when cmd has its reply, or when it must lead
	// taken is set (under Batcher.mu) when the call left the queue for a
	// batch; from then on it is sent and the caller must wait for it.
	taken bool
	// batch is set for the call that sends its batch (the first of it).
	batch []*call
}

// New returns a Batcher sending through c that lets maxInFlight sends run
// at once before it queues commands. maxInFlight must be ≥ 1.
func New(c redis.UniversalClient, maxInFlight int) (*Batcher, error) {
	if maxInFlight < 1 {
		return nil, fmt.Errorf("batch: maxInFlight %d, must be ≥ 1", maxInFlight)
	}
	return &Batcher{c: c, max: maxInFlight}, nil
}

// Process sends cmd, directly or in the next batch, and returns cmd.Err().
//
// When ctx ends while cmd waits in the queue, cmd is dropped unsent and
// ctx's error returned. Once cmd has left the queue it is on its way, and
// Process waits for its reply, which the client's read and write timeouts
// bound: a caller that gives up on a sent command could not know whether
// Redis ran it.
func (b *Batcher) Process(ctx context.Context, cmd redis.Cmder) error {
	if err := ctx.Err(); err != nil {
		cmd.SetErr(err)
		return err
	}
	b.mu.Lock()
	if b.inflight < b.max {
		b.inflight++
		b.mu.Unlock()
		defer b.next() // even when a hook panics, so the slot is not lost
		return b.c.Process(ctx, cmd)
	}
	cl := &call{cmd: cmd, done: make(chan struct{})}
	b.queue = append(b.queue, cl)
	b.mu.Unlock()

	select {
	case <-cl.done:
	case <-ctx.Done():
		b.mu.Lock()
		if !cl.taken {
			b.drop(cl)
			b.mu.Unlock()
			cmd.SetErr(ctx.Err())
			return ctx.Err()
		}
		b.mu.Unlock()
		<-cl.done
	}
	if cl.batch != nil {
		b.send(context.WithoutCancel(ctx), cl.batch)
	}
	return cmd.Err()
}

// drop removes cl from the queue. b.mu must be held.
func (b *Batcher) drop(cl *call) {
	for i, q := range b.queue {
		if q == cl {
			b.queue = append(b.queue[:i], b.queue[i+1:]...)
			return
		}
	}
}

// next runs when a send completes: it hands the queue, as one batch, to the
// first queued caller, which takes over the finished send's slot, or frees
// the slot when nobody waits.
func (b *Batcher) next() {
	b.mu.Lock()
	q := b.queue
	if len(q) == 0 {
		b.inflight--
		b.mu.Unlock()
		return
	}
	b.queue = nil
	for _, cl := range q {
		cl.taken = true
	}
	q[0].batch = q
	b.mu.Unlock()
	close(q[0].done)
}

// send sends a batch in one pipeline, wakes its callers and passes the slot
// on. ctx carries no cancellation: the callers wait for their replies.
func (b *Batcher) send(ctx context.Context, q []*call) {
	defer func() { // even when a hook panics, so nobody waits forever
		for _, cl := range q[1:] {
			close(cl.done)
		}
		b.next()
	}()
	if len(q) == 1 {
		_ = b.c.Process(ctx, q[0].cmd)
	} else {
		pipe := b.c.Pipeline()
		for _, cl := range q {
			_ = pipe.Process(ctx, cl.cmd)
		}
		_, _ = pipe.Exec(ctx) // each command carries its own error
	}
}
