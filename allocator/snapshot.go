package allocator

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redisallocator/redisallocator/internal/script"
)

// Snapshot is the state of a pool at one instant, read atomically by one
// script: for inspection, diagnostics and tests.
type Snapshot struct {
	// Now is the time of the scripts' clock when the snapshot was taken.
	Now time.Time
	// Members are the pool's members, by key.
	Members map[string]Member
	// Free lists the free members in the order malloc takes them.
	Free []string
	// Leases are the live leases, by resource; a resource removed from the
	// pool while leased has a lease but no Member.
	Leases map[string]LeaseInfo
	// Waiters lists the MallocWait queue, first come first.
	Waiters []string
	// Sessions maps each open session to its deadline.
	Sessions map[string]time.Time

	raw snapshotRaw
}

// Member describes one member of the pool.
type Member struct {
	Key      string
	Priority float64
	// Free: the member is in the free set. A member is free, leased or
	// quarantined (a leased member may be quarantined too).
	Free bool
	// QuarantinedUntil is the end of its quarantine; zero when none.
	QuarantinedUntil time.Time
	// ExpiresAt is the end of its membership; zero when it has none.
	ExpiresAt time.Time
}

// LeaseInfo describes one lease.
type LeaseInfo struct {
	Key     string
	Fence   int64
	Session string    // "" when none
	Waiter  string    // the MallocWait entry it was handed to, "" when none
	Expires time.Time // zero for a permanent lease
}

// snapshotRaw keeps what Problems checks beyond the public fields.
type snapshotRaw struct {
	seq      map[string]string // member → free seq or "-"
	freeSeq  map[string]string // free entry's member → seq
	freeDup  []string
	timers   map[string]float64 // timer entry → score
	badItems []string
}

// Snapshot reads the whole pool atomically. Its cost grows with the pool.
func (a *Allocator) Snapshot(ctx context.Context) (*Snapshot, error) {
	v, err := a.run(ctx, snapshotScript, nil)
	if err != nil {
		return nil, err
	}
	r, ok := v.([]any)
	if !ok || len(r) != 6 {
		return nil, fmt.Errorf("%w: snapshot reply", script.ErrReply)
	}
	lists := make([][]string, 6)
	for i := 1; i < 6; i++ {
		if lists[i], err = script.Strings(r[i]); err != nil {
			return nil, err
		}
	}
	now, err := script.Int64(r[0])
	if err != nil {
		return nil, err
	}
	s := &Snapshot{
		Now: time.UnixMilli(now), Members: map[string]Member{}, Leases: map[string]LeaseInfo{},
		Sessions: map[string]time.Time{}, Waiters: lists[5],
		raw: snapshotRaw{seq: map[string]string{}, freeSeq: map[string]string{}, timers: map[string]float64{}},
	}
	for i := 0; i+1 < len(lists[1]); i += 2 {
		k, rec := lists[1][i], strings.Fields(lists[1][i+1])
		if len(rec) != 5 {
			s.raw.badItems = append(s.raw.badItems, k)
			continue
		}
		p, _ := strconv.ParseFloat(rec[0], 64)
		s.Members[k] = Member{Key: k, Priority: p, ExpiresAt: parseMillis(rec[3]), QuarantinedUntil: parseMillis(rec[4])}
		s.raw.seq[k] = rec[1]
	}
	for _, e := range lists[2] {
		if len(e) < 12 {
			s.raw.badItems = append(s.raw.badItems, "free entry "+strconv.Quote(e))
			continue
		}
		k := e[12:]
		if _, dup := s.raw.freeSeq[k]; dup {
			s.raw.freeDup = append(s.raw.freeDup, k)
		}
		s.raw.freeSeq[k] = e[:12]
		s.Free = append(s.Free, k)
		if m, ok := s.Members[k]; ok {
			m.Free = true
			s.Members[k] = m
		}
	}
	for i := 0; i+1 < len(lists[3]); i += 2 {
		k, rec := lists[3][i], strings.Fields(lists[3][i+1])
		if len(rec) != 5 {
			s.raw.badItems = append(s.raw.badItems, "holder "+strconv.Quote(k))
			continue
		}
		li := LeaseInfo{Key: k, Expires: parseMillis(rec[4])}
		li.Fence, _ = strconv.ParseInt(rec[0], 10, 64)
		if rec[2] != "-" {
			li.Session = rec[2]
		}
		if rec[3] != "-" {
			li.Waiter = rec[3]
		}
		s.Leases[k] = li
	}
	for i := 0; i+1 < len(lists[4]); i += 2 {
		t := lists[4][i]
		f, _ := strconv.ParseFloat(lists[4][i+1], 64)
		s.raw.timers[t] = f
		if strings.HasPrefix(t, "S") {
			s.Sessions[t[1:]] = time.UnixMilli(int64(f))
		}
	}
	return s, nil
}

// parseMillis reads a time in ms; 0, a negative value and +inf are the
// zero time (none).
func parseMillis(v string) time.Time {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsInf(f, 0) || f <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(f))
}

// Problems checks the data model's invariants on the snapshot and
// describes each violation; it returns nil for a consistent pool.
//
// Every free entry belongs to a member whose record points at it; a free
// member is neither leased nor quarantined; every deadline (lease,
// membership, quarantine) has a timer that matches and every timer its
// object; a member that is not free is leased, quarantined or due for
// housekeeping (its membership, lease, quarantine or session ended and the
// next malloc or GC reclaims it).
func (s *Snapshot) Problems() []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for _, k := range s.raw.badItems {
		add("malformed record %q", k)
	}
	for _, k := range s.raw.freeDup {
		add("%q is in the free set twice", k)
	}
	for k, seq := range s.raw.freeSeq {
		m, ok := s.Members[k]
		switch {
		case !ok:
			add("free entry %q is not a member", k)
		case s.raw.seq[k] != seq:
			add("free entry %q has seq %s, its record %s", k, seq, s.raw.seq[k])
		}
		if _, leased := s.Leases[k]; leased {
			add("%q is both free and leased", k)
		}
		if ok && m.QuarantinedUntil.After(s.Now) {
			add("%q is both free and quarantined", k)
		}
	}
	for k, l := range s.Leases {
		score, timed := s.raw.timers["L"+k]
		switch {
		case l.Expires.IsZero() && timed:
			add("permanent lease on %q has a timer", k)
		case !l.Expires.IsZero() && (!timed || int64(score) != l.Expires.UnixMilli()):
			add("lease on %q expires at %d, its timer says %v (present %v)", k, l.Expires.UnixMilli(), score, timed)
		}
	}
	for t, score := range s.raw.timers {
		k := t[1:]
		switch t[0] {
		case 'L':
			if _, ok := s.Leases[k]; !ok {
				add("timer %q has no lease", t)
			}
		case 'E':
			m, ok := s.Members[k]
			_, leased := s.Leases[k]
			switch {
			case !ok:
				add("timer %q has no member", t)
			case score == 0 && !leased:
				add("member %q expired while leased, but has no lease", k)
			case score != 0 && int64(score) != m.ExpiresAt.UnixMilli():
				add("timer %q at %v, the member expires at %d", t, score, m.ExpiresAt.UnixMilli())
			}
		case 'Q':
			if m, ok := s.Members[k]; !ok || int64(score) != m.QuarantinedUntil.UnixMilli() {
				add("timer %q at %v does not match its member", t, score)
			}
		case 'S':
		default:
			add("unknown timer %q", t)
		}
	}
	for k, m := range s.Members {
		if _, ok := s.raw.timers["E"+k]; !m.ExpiresAt.IsZero() && !ok {
			add("member %q expires but has no timer", k)
		}
		if _, ok := s.raw.timers["Q"+k]; !m.QuarantinedUntil.IsZero() && !ok {
			add("member %q is quarantined but has no timer", k)
		}
	}
	for k, m := range s.Members {
		l, leased := s.Leases[k]
		if s.raw.seq[k] != "-" && !m.Free && !leased {
			add("record of %q, neither free nor leased, points at a free entry", k)
		}
		if m.Free {
			continue
		}
		due := (!m.ExpiresAt.IsZero() && !m.ExpiresAt.After(s.Now)) ||
			(!m.QuarantinedUntil.IsZero() && !m.QuarantinedUntil.After(s.Now)) ||
			(leased && !l.Expires.IsZero() && !l.Expires.After(s.Now)) ||
			(leased && l.Session != "" && !s.Sessions[l.Session].After(s.Now))
		if !leased && !m.QuarantinedUntil.After(s.Now) && !due {
			add("%q is neither free, leased nor quarantined", k)
		}
	}
	sort.Strings(out)
	return out
}
