// Package notify keeps the one pub/sub subscription through which a value
// of the library (an Allocator, a task Queue) is told about events: it
// subscribes on first use, hands every message to a callback, resubscribes
// after a lost connection and then tells its users that messages may have
// been lost, so that they read the state they wait for again.
package notify

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sub is one subscription to one channel. It is safe for concurrent use.
type Sub struct {
	c       redis.UniversalClient
	channel string
	onMsg   func(payload string)
	closed  error  // returned by Ensure after Close
	what    string // prefix of errors, such as "allocator: MallocWait"
	done    chan struct{}

	mu       sync.Mutex
	ps       *redis.PubSub
	starting chan struct{} // closed when the running subscription attempt ends
	startErr error         // why the last attempt failed
	ready    bool
	isClosed bool
	kick     chan struct{} // closed and replaced on every (re)subscription
	exited   chan struct{}
}

// New returns the subscription of c to channel, not yet subscribed. onMsg
// gets every message's payload, one at a time, on the receiving goroutine.
// Ensure returns closedErr after Close, and prefixes its other errors with
// what.
func New(c redis.UniversalClient, channel string, onMsg func(payload string), closedErr error, what string) *Sub {
	return &Sub{
		c: c, channel: channel, onMsg: onMsg, closed: closedErr, what: what,
		done: make(chan struct{}), kick: make(chan struct{}),
	}
}

// Channel returns the channel subscribed to.
func (s *Sub) Channel() string { return s.channel }

// Done is closed by Close.
func (s *Sub) Done() <-chan struct{} { return s.done }

// Ensure subscribes on first use and waits for Redis to confirm it, so that
// no message published after Ensure returns is missed. One attempt runs at
// a time, detached from the callers' contexts; callers wait for it or for
// their ctx. A failed attempt is retried by the next call.
func (s *Sub) Ensure(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.isClosed:
		s.mu.Unlock()
		return s.closed
	case s.ready:
		s.mu.Unlock()
		return nil
	}
	if s.starting == nil {
		s.starting = make(chan struct{})
		go s.subscribe(s.starting)
	}
	starting := s.starting
	s.mu.Unlock()
	select {
	case <-starting:
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", s.what, ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.isClosed:
		return s.closed
	case s.ready:
		return nil
	}
	return s.startErr
}

// subscribe makes one subscription attempt and closes started when done.
func (s *Sub) subscribe(started chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ps := s.c.Subscribe(ctx)
	err := ps.Subscribe(ctx, s.channel)
	if err == nil {
		_, err = ps.ReceiveTimeout(ctx, 10*time.Second)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer close(started)
	s.starting = nil
	if err != nil || s.isClosed {
		_ = ps.Close()
		if err != nil {
			s.startErr = fmt.Errorf("%s: subscribing to %s: %w", s.what, s.channel, err)
		}
		return
	}
	s.ps, s.ready, s.exited = ps, true, make(chan struct{})
	go s.receive(ps, s.exited)
}

func (s *Sub) receive(ps *redis.PubSub, exited chan struct{}) {
	defer close(exited)
	pause := 50 * time.Millisecond
	for {
		msg, err := ps.Receive(context.Background())
		if err != nil {
			select {
			case <-s.done:
				return
			case <-time.After(pause): // go-redis reconnects on the next Receive
			}
			pause = min(2*pause, time.Second)
			continue
		}
		pause = 50 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				s.kickAll() // resubscribed: messages may have been lost
			}
		case *redis.Message:
			s.onMsg(m.Payload)
		}
	}
}

// Kicked returns a channel that is closed at the next (re)subscription:
// messages may have been lost before it.
func (s *Sub) Kicked() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kick
}

func (s *Sub) kickAll() {
	s.mu.Lock()
	close(s.kick)
	s.kick = make(chan struct{})
	s.mu.Unlock()
}

// Close ends the subscription and waits for the receiving goroutine. It
// is idempotent.
func (s *Sub) Close() {
	s.mu.Lock()
	if s.isClosed {
		s.mu.Unlock()
		return
	}
	s.isClosed = true
	close(s.done)
	ps, exited := s.ps, s.exited
	s.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
		<-exited
	}
}
