// Package batch sends the commands that many goroutines issue at the same
// time in shared pipelines.
//
// A Batcher lets up to maxInFlight commands go to each Redis node on their
// own, each in its own round trip as go-redis would send it. A command that
// finds that many already in flight to its node is queued. When an
// in-flight command to that node completes, the node's whole queue leaves in
// one pipeline, sent by the first queued caller, so under load each round
// trip carries many commands: Redis and the client make one read and one
// write system call per batch instead of per command. A lone caller never
// waits for anyone, and never pays a goroutine switch.
//
// The budget is per node (on a Redis Cluster, the master of the command's
// first key; on any other client there is one node), so a slow node only
// holds up the commands sent to it.
//
// Every command still travels in exactly one round trip. Commands in one
// batch may come from unrelated callers; Redis runs each of them atomically
// as usual, and no ordering between callers is promised.
package batch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// ErrNotSent is wrapped by the error of a command that never left the
// client: its context ended while it was queued. Redis did not run it.
var ErrNotSent = errors.New("batch: command not sent")

// Batcher sends commands like a go-redis client's Process method, batching
// concurrent ones; see the package documentation. It is safe for concurrent
// use and needs no closing.
type Batcher struct {
	c   redis.UniversalClient
	max int

	mu    sync.Mutex
	lanes map[string]*lane // by node address; "" for every command of a non-cluster client
}

// lane is the budget and queue of one node. Its fields are guarded by
// Batcher.mu.
type lane struct {
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

// New returns a Batcher sending through c that lets maxInFlight sends per
// node run at once before it queues commands. maxInFlight must be ≥ 1.
func New(c redis.UniversalClient, maxInFlight int) (*Batcher, error) {
	if maxInFlight < 1 {
		return nil, fmt.Errorf("batch: maxInFlight %d, must be ≥ 1", maxInFlight)
	}
	return &Batcher{c: c, max: maxInFlight, lanes: map[string]*lane{}}, nil
}

// Process sends cmd, directly or in the next batch to its node, and returns
// cmd.Err().
//
// When ctx ends before cmd was sent, cmd is dropped and an error wrapping
// ErrNotSent and ctx's error returned. Once cmd has left the queue it is on
// its way, and Process waits for its reply, which the client's read and
// write timeouts bound: a caller that gives up on a sent command could not
// know whether Redis ran it.
func (b *Batcher) Process(ctx context.Context, cmd redis.Cmder) error {
	if err := ctx.Err(); err != nil {
		err = fmt.Errorf("%w: %w", ErrNotSent, err)
		cmd.SetErr(err)
		return err
	}
	name := b.node(ctx, cmd)
	b.mu.Lock()
	ln := b.lanes[name]
	if ln == nil {
		ln = &lane{}
		b.lanes[name] = ln
	}
	if ln.inflight < b.max {
		ln.inflight++
		b.mu.Unlock()
		defer b.next(ln) // even when a hook panics, so the slot is not lost
		return b.c.Process(ctx, cmd)
	}
	cl := &call{cmd: cmd, done: make(chan struct{})}
	ln.queue = append(ln.queue, cl)
	b.mu.Unlock()

	select {
	case <-cl.done:
	case <-ctx.Done():
		b.mu.Lock()
		if !cl.taken {
			ln.drop(cl)
			b.mu.Unlock()
			err := fmt.Errorf("%w: %w", ErrNotSent, ctx.Err())
			cmd.SetErr(err)
			return err
		}
		b.mu.Unlock()
		<-cl.done
	}
	if cl.batch != nil {
		b.send(context.WithoutCancel(ctx), ln, cl.batch)
	}
	return cmd.Err()
}

// node returns the lane name of cmd: the address of the cluster master of
// its first key, or "" when c is not a cluster client, cmd has no key, or
// the master is not known.
func (b *Batcher) node(ctx context.Context, cmd redis.Cmder) string {
	cc, ok := b.c.(*redis.ClusterClient)
	if !ok {
		return ""
	}
	key := firstKey(cmd.Args())
	if key == "" {
		return ""
	}
	n, err := cc.MasterForKey(ctx, key)
	if err != nil {
		return ""
	}
	return n.Options().Addr
}

// firstKey returns the first key of a command: the first argument, or for
// the script commands the first of their keys.
func firstKey(args []any) string {
	if len(args) < 2 {
		return ""
	}
	i := 1
	switch name, _ := args[0].(string); strings.ToLower(name) {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
		if len(args) < 4 {
			return ""
		}
		if n, ok := args[2].(int); ok && n == 0 {
			return ""
		}
		if s, ok := args[2].(string); ok {
			if n, err := strconv.Atoi(s); err != nil || n == 0 {
				return ""
			}
		}
		i = 3
	}
	key, _ := args[i].(string)
	return key
}

// drop removes cl from the queue. Batcher.mu must be held.
func (ln *lane) drop(cl *call) {
	for i, q := range ln.queue {
		if q == cl {
			ln.queue = append(ln.queue[:i], ln.queue[i+1:]...)
			return
		}
	}
}

// next runs when a send on ln completes: it hands the lane's queue, as one
// batch, to the first queued caller, which takes over the finished send's
// slot, or frees the slot when nobody waits.
func (b *Batcher) next(ln *lane) {
	b.mu.Lock()
	q := ln.queue
	if len(q) == 0 {
		ln.inflight--
		b.mu.Unlock()
		return
	}
	ln.queue = nil
	for _, cl := range q {
		cl.taken = true
	}
	q[0].batch = q
	b.mu.Unlock()
	close(q[0].done)
}

// send sends a batch in one pipeline, wakes its callers and passes the slot
// on. ctx carries no cancellation: the callers wait for their replies.
//
// When sending panics (a faulty hook), the caller that sent the batch gets
// the panic, and every other command of the batch an error: none of them
// can be trusted to hold a reply.
func (b *Batcher) send(ctx context.Context, ln *lane, q []*call) {
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("batch: sending the pipeline panicked: %v", r)
			for _, cl := range q[1:] {
				cl.cmd.SetErr(err)
			}
			b.wake(ln, q)
			panic(r)
		}
		b.wake(ln, q)
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

// wake releases the callers of a sent batch but its leader, and passes the
// slot on.
func (b *Batcher) wake(ln *lane, q []*call) {
	for _, cl := range q[1:] {
		close(cl.done)
	}
	b.next(ln)
}
