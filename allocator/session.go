package allocator

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Session is a client session: leases taken WithSession belong to it, and
// when the session lapses (its process stopped heartbeating, for instance
// because it died) all of them are reclaimed together, by the next malloc
// or GC, instead of one by one as their TTLs run out. A Session renews
// itself every third of its TTL until Close or Orphan; Done is closed when
// it is lost. This is etcd's session idea on Redis.
//
// A Session is safe for concurrent use.
type Session struct {
	a   *Allocator
	id  string
	ttl time.Duration

	mu      sync.Mutex
	validTo time.Time
	done    chan struct{}
	over    bool
	err     error
	cancel  context.CancelFunc
	exited  chan struct{}
}

// NewSession opens a session that lapses ttl after its last heartbeat (ttl
// of at least a millisecond) and starts heartbeating it in the background.
func (a *Allocator) NewSession(ctx context.Context, ttl time.Duration) (*Session, error) {
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("%w: session TTL %v", ErrInvalidArgument, ttl)
	}
	s := &Session{a: a, id: randomID(12), ttl: ttl.Truncate(time.Millisecond), done: make(chan struct{})}
	sent := time.Now()
	if _, err := a.runInt(ctx, sessionScript, nil, "open", s.id, millis(s.ttl)); err != nil {
		return nil, err
	}
	s.validTo = validity(sent, s.ttl)
	hctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.exited = cancel, make(chan struct{})
	go s.heartbeat(hctx)
	return s, nil
}

// ID returns the session's id.
func (s *Session) ID() string { return s.id }

// Done returns a channel closed when the session is lost (a heartbeat found
// it lapsed, or none was confirmed within its TTL less a tenth) or closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns nil while the session lives, else an error wrapping
// ErrSessionLost.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Session) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.over {
		s.over, s.err = true, err
		close(s.done)
	}
}

func (s *Session) heartbeat(ctx context.Context) {
	defer close(s.exited)
	every := s.ttl / 3
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		s.mu.Lock()
		left := time.Until(s.validTo)
		s.mu.Unlock()
		expiry := time.NewTimer(left)
		select {
		case <-ctx.Done():
			expiry.Stop()
			return
		case <-expiry.C:
			s.end(fmt.Errorf("%w: session %s: no heartbeat confirmed within its TTL less a tenth", ErrSessionLost, s.id))
			return
		case <-t.C:
		}
		expiry.Stop()
		sent := time.Now()
		s.mu.Lock()
		rctx, cancel := context.WithDeadline(ctx, s.validTo)
		s.mu.Unlock()
		n, err := s.a.runInt(rctx, sessionScript, nil, "renew", s.id, millis(s.ttl))
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.a.log.Warn("allocator: session heartbeat failed", "session", s.id, "err", err)
			t.Reset(max(s.ttl/10, time.Millisecond))
		case n == 0:
			s.end(fmt.Errorf("%w: session %s lapsed", ErrSessionLost, s.id))
			return
		default:
			s.mu.Lock()
			s.validTo = validity(sent, s.ttl)
			s.mu.Unlock()
			t.Reset(every)
		}
	}
}

// Orphan stops heartbeating without ending anything: the session and its
// leases lapse when its TTL runs out (as if the process had died).
func (s *Session) Orphan() {
	s.cancel()
	<-s.exited
}

// Close ends the session and every lease in it, and returns how many
// leases ended. Leases of the session then report ErrNotHeld at their next
// renewal.
func (s *Session) Close(ctx context.Context) (int, error) {
	s.Orphan()
	n, err := s.a.runInt(ctx, sessionScript, nil, "close", s.id)
	if err != nil {
		return 0, err
	}
	s.end(fmt.Errorf("%w: session %s closed", ErrSessionLost, s.id))
	return int(n), nil
}
