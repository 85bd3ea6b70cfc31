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
	holders  map[string]bool
	badItems []string
}

// Snapshot reads the whole pool atomically. Its cost grows with the pool.
func (a *Allocator) Snapshot(ctx context.Context) (*Snapshot, error) {
	v, err := a.run(ctx, snapshotScript, nil)
	if err != nil {
		return nil, err
	}
	r, ok := v.([]any)
	if !ok || len(r) != 9 {
		return nil, fmt.Errorf("%w: snapshot reply", script.ErrReply)
	}
	lists := make([][]string, 9)
	for i := 1; i < 9; i++ {
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
		Sessions: map[string]time.Time{}, Waiters: lists[7],
		raw: snapshotRaw{seq: map[string]string{}, freeSeq: map[string]string{}, holders: map[string]bool{}},
	}
	for i := 0; i+1 < len(lists[1]); i += 2 {
		k, rec := lists[1][i], strings.Fields(lists[1][i+1])
		if len(rec) != 3 {
			s.raw.badItems = append(s.raw.badItems, k)
			continue
		}
		p, _ := strconv.ParseFloat(rec[0], 64)
		s.Members[k] = Member{Key: k, Priority: p}
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
		k := lists[3][i]
		li := LeaseInfo{Key: k}
		if d := parseMillis(lists[3][i+1]); !d.IsZero() {
			li.Expires = d
		}
		s.Leases[k] = li
	}
	for i := 0; i+1 < len(lists[4]); i += 2 {
		k, rec := lists[4][i], strings.Fields(lists[4][i+1])
		s.raw.holders[k] = true
		li, ok := s.Leases[k]
		if !ok || len(rec) != 4 {
			continue
		}
		li.Fence, _ = strconv.ParseInt(rec[0], 10, 64)
		if rec[2] != "-" {
			li.Session = rec[2]
		}
		if rec[3] != "-" {
			li.Waiter = rec[3]
		}
		s.Leases[k] = li
	}
	for i := 0; i+1 < len(lists[5]); i += 2 {
		if m, ok := s.Members[lists[5][i]]; ok {
			m.QuarantinedUntil = parseMillis(lists[5][i+1])
			s.Members[lists[5][i]] = m
		}
	}
	for i := 0; i+1 < len(lists[6]); i += 2 {
		if m, ok := s.Members[lists[6][i]]; ok {
			m.ExpiresAt = parseMillis(lists[6][i+1])
			s.Members[lists[6][i]] = m
		}
	}
	for i := 0; i+1 < len(lists[8]); i += 2 {
		s.Sessions[lists[8][i]] = parseMillis(lists[8][i+1])
	}
	return s, nil
}

// parseMillis reads a score in ms; +inf is the zero time.
func parseMillis(v string) time.Time {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsInf(f, 0) {
		return time.Time{}
	}
	return time.UnixMilli(int64(f))
}

// Problems checks the data model's invariants on the snapshot and
// describes each violation; it returns nil for a consistent pool.
//
// Every free entry belongs to a member whose record points at it; a free
// member is neither leased nor quarantined; every lease has a holder
// record and every holder a lease; a member that is not free is leased,
// quarantined or due for housekeeping (its membership, lease or
// quarantine ended and the next malloc or GC reclaims it).
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
	for k := range s.Leases {
		if !s.raw.holders[k] {
			add("lease on %q has no holder record", k)
		}
	}
	for k := range s.raw.holders {
		if _, ok := s.Leases[k]; !ok {
			add("holder record of %q has no lease", k)
		}
	}
	for k, m := range s.Members {
		if s.raw.seq[k] != "-" && !m.Free {
			add("record of %q points at a free entry that does not exist", k)
		}
		if m.Free {
			continue
		}
		l, leased := s.Leases[k]
		due := (!m.ExpiresAt.IsZero() && !m.ExpiresAt.After(s.Now)) ||
			(!m.QuarantinedUntil.IsZero() && !m.QuarantinedUntil.After(s.Now)) ||
			(leased && !l.Expires.IsZero() && l.Expires.Before(s.Now)) ||
			(leased && l.Session != "" && !s.Sessions[l.Session].After(s.Now))
		if !leased && !m.QuarantinedUntil.After(s.Now) && !due {
			add("%q is neither free, leased nor quarantined", k)
		}
	}
	sort.Strings(out)
	return out
}
