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
// it is lost, at the latest when no heartbeat was confirmed within its TTL
// less a tenth, even while a heartbeat is still on its way. A lease of the
// session is lost with it (Lease.Lost).
//
// A Session is safe for concurrent use.
type Session struct {
	a   *Allocator
	id  string
	ttl time.Duration

	// mu guards the fields below. Lock order: a Lease's mu before a
	// Session's; the session ends its watching leases after releasing mu.
	mu       sync.Mutex
	validTo  time.Time
	done     chan struct{}
	over     bool
	err      error
	timer    *time.Timer // fires at validTo
	watchers map[*Lease]struct{}
	cancel   context.CancelFunc
	exited   chan struct{}
}

// NewSession opens a session that lapses ttl after its last heartbeat (ttl
// of at least a millisecond) and starts heartbeating it in the background.
func (a *Allocator) NewSession(ctx context.Context, ttl time.Duration) (*Session, error) {
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("%w: session TTL %v", ErrInvalidArgument, ttl)
	}
	if a.isClosed() {
		return nil, ErrClosed
	}
	s := &Session{a: a, id: randomID(12), ttl: ttl.Truncate(time.Millisecond), done: make(chan struct{})}
	sent := time.Now()
	if _, err := a.runInt(ctx, sessionScript, nil, "open", s.id, millis(s.ttl)); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.validTo = validity(sent, s.ttl)
	s.timer = time.AfterFunc(time.Until(s.validTo), s.expire)
	s.mu.Unlock()
	hctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.exited = cancel, make(chan struct{})
	go s.heartbeat(hctx)
	return s, nil
}

// ID returns the session's id.
func (s *Session) ID() string { return s.id }

// Done returns a channel closed when the session is lost or closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns nil while the session lives, else an error wrapping
// ErrSessionLost.
func (s *Session) Err() error {
	s.mu.Lock()
	ended := s.checkLocked()
	err := s.err
	s.mu.Unlock()
	endLeases(ended)
	return err
}

// ValidUntil returns the local time until which the session surely lives,
// unless a heartbeat extends it.
func (s *Session) ValidUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.validTo
}

// checkLocked ends the session when its validity ran out and returns the
// leases to end then (see endLocked). Caller holds mu.
func (s *Session) checkLocked() []*Lease {
	if !s.over && !time.Now().Before(s.validTo) {
		return s.endLocked(fmt.Errorf("%w: session %s: no heartbeat confirmed within its TTL less a tenth", ErrSessionLost, s.id))
	}
	return nil
}

func (s *Session) expire() {
	s.mu.Lock()
	ended := s.checkLocked()
	if !s.over {
		s.timer.Reset(time.Until(s.validTo)) // a heartbeat extended it meanwhile
	}
	s.mu.Unlock()
	endLeases(ended)
}

// endLocked ends the session and returns the leases watching it, which the
// caller ends after releasing mu. Caller holds mu.
func (s *Session) endLocked(err error) []*Lease {
	if s.over {
		return nil
	}
	s.over, s.err = true, err
	if s.timer != nil {
		s.timer.Stop()
	}
	close(s.done)
	ended := make([]*Lease, 0, len(s.watchers))
	for l := range s.watchers {
		ended = append(ended, l)
	}
	s.watchers = nil
	return ended
}

func (s *Session) end(err error) {
	s.mu.Lock()
	ended := s.endLocked(err)
	s.mu.Unlock()
	endLeases(ended)
}

func endLeases(ls []*Lease) {
	for _, l := range ls {
		l.mu.Lock()
		l.checkLocked(time.Now())
		l.mu.Unlock()
	}
}

// lostErr is Err for a Lease that holds its own mu: it never ends the
// session (which would end the leases watching it, this one included).
func (s *Session) lostErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.over && !time.Now().Before(s.validTo) {
		return fmt.Errorf("%w: session %s: no heartbeat confirmed within its TTL less a tenth", ErrSessionLost, s.id)
	}
	return s.err
}

// watch makes the session end l, synchronously, when it ends; it reports
// false when the session has already ended.
func (s *Session) watch(l *Lease) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.over {
		return false
	}
	if s.watchers == nil {
		s.watchers = map[*Lease]struct{}{}
	}
	s.watchers[l] = struct{}{}
	return true
}

func (s *Session) unwatch(l *Lease) {
	s.mu.Lock()
	delete(s.watchers, l)
	s.mu.Unlock()
}

func (s *Session) heartbeat(ctx context.Context) {
	defer close(s.exited)
	every := s.ttl / 3
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case <-t.C:
		}
		sent := time.Now()
		n, err := s.a.runInt(ctx, sessionScript, nil, "renew", s.id, millis(s.ttl))
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
			if !s.over {
				s.validTo = validity(sent, s.ttl)
				s.timer.Reset(time.Until(s.validTo))
			}
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
// leases ended. The session and its leases are lost locally first, before
// Redis frees anything. When the request fails, the session lapses by
// itself after its TTL.
func (s *Session) Close(ctx context.Context) (int, error) {
	s.Orphan()
	s.end(fmt.Errorf("%w: session %s closed", ErrSessionLost, s.id))
	n, err := s.a.runInt(ctx, sessionScript, nil, "close", s.id)
	if err != nil {
		return 0, err
	}
	return int(n), nil
}
