package allocator_test

import (
	"cmp"
	"slices"
)

// model is the reference model of one pool: the semantics of pool.lua and
// the operation scripts written plainly in Go over maps, with time in ms
// given by the test. Sessions and waiters are left out (they have tests of
// their own); everything else is compared with Redis by
// TestModelMatchesRedis.
type model struct {
	now    int64
	budget int
	items  map[string]*mItem
	leases map[string]*mLease
	binds  map[string]mBind
	seq    int64
	fences int64 // number of fences issued
}

type mItem struct {
	prio   float64
	seq    int64 // position in the free set; 0 when not free
	gen    int64
	exp    int64 // membership expiry, 0: none
	quar   int64 // quarantine end, 0: none
	marked bool  // expired while leased: its timer no longer fires
}

type mLease struct {
	token    string
	fence    int64 // index of the fence (1 for the first grant)
	deadline int64 // -1: permanent
}

type mBind struct {
	exp  int64 // 0: permanent
	gen  int64
	name string
}

func newModel(budget int) *model {
	return &model{
		budget: budget, items: map[string]*mItem{}, leases: map[string]*mLease{}, binds: map[string]mBind{},
	}
}

func (m *model) nextSeq() int64 { m.seq++; return m.seq }

func (m *model) expired(name string) bool {
	it, ok := m.items[name]
	return ok && it.exp != 0 && it.exp <= m.now
}

func (m *model) quarantined(name string) bool {
	it, ok := m.items[name]
	return ok && it.quar > m.now
}

// freeOrder lists the free members in allocation order.
func (m *model) freeOrder() []string {
	var out []string
	for k, it := range m.items {
		if it.seq != 0 {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		ia, ib := m.items[a], m.items[b]
		if c := cmp.Compare(ib.prio, ia.prio); c != 0 {
			return c
		}
		return cmp.Compare(ia.seq, ib.seq)
	})
	return out
}

func (m *model) pushFree(name string) { m.items[name].seq = m.nextSeq() }

func (m *model) removeMember(name string) bool {
	if _, ok := m.items[name]; !ok {
		return false
	}
	delete(m.items, name)
	return true
}

func (m *model) bestFree() string {
	for _, k := range m.freeOrder() {
		if m.expired(k) {
			m.removeMember(k)
			continue
		}
		return k
	}
	return ""
}

func (m *model) grant(name, token string, ttl int64) int64 {
	m.fences++
	d := int64(-1)
	if ttl > 0 {
		d = m.now + ttl
	}
	m.leases[name] = &mLease{token: token, fence: m.fences, deadline: d}
	return m.fences
}

func (m *model) settle(name string) {
	it, ok := m.items[name]
	if !ok || it.seq != 0 {
		return
	}
	if _, leased := m.leases[name]; leased {
		return
	}
	if m.expired(name) {
		m.removeMember(name)
	} else if !m.quarantined(name) {
		m.pushFree(name)
	}
}

func (m *model) endLease(name string) bool {
	if _, ok := m.leases[name]; !ok {
		return false
	}
	delete(m.leases, name)
	m.settle(name)
	return true
}

type timer struct {
	name  string // kind letter and name, as in the timers set
	score int64
}

// due lists the timers that are due, in the order of the timers set, at
// most limit.
func (m *model) due(limit int) []timer {
	var out []timer
	add := func(kind, k string, at int64) {
		if at > 0 && at <= m.now {
			out = append(out, timer{kind + k, at})
		}
	}
	for k, l := range m.leases {
		add("L", k, l.deadline)
	}
	for k, it := range m.items {
		if !it.marked {
			add("E", k, it.exp)
		}
		add("Q", k, it.quar)
	}
	slices.SortFunc(out, func(a, b timer) int {
		if c := cmp.Compare(a.score, b.score); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

func (m *model) reclaim(budget int) [4]int {
	var n [4]int
	if budget <= 0 {
		return n
	}
	for _, t := range m.due(budget) {
		k := t.name[1:]
		switch t.name[0] {
		case 'L':
			if m.endLease(k) {
				n[0]++
			}
		case 'E':
			if _, leased := m.leases[k]; leased {
				m.items[k].marked = true
				n[2]++
			} else if m.removeMember(k) {
				n[2]++
			}
		case 'Q':
			if it, ok := m.items[k]; ok {
				it.quar = 0
				m.settle(k)
				n[3]++
			}
		}
	}
	return n
}

// boundMember mirrors pool.lua's bound.
func (m *model) boundMember(bindName string, wantFree bool) string {
	b, ok := m.binds[bindName]
	if !ok || (b.exp != 0 && b.exp <= m.now) {
		return ""
	}
	it, ok := m.items[b.name]
	if !ok || it.gen != b.gen || m.expired(b.name) || m.quarantined(b.name) {
		return ""
	}
	if wantFree && it.seq == 0 {
		return ""
	}
	return b.name
}

func (m *model) bind(bindName, name string, ttl int64) {
	b := mBind{gen: m.items[name].gen, name: name}
	if ttl > 0 {
		b.exp = m.now + ttl
	}
	m.binds[bindName] = b
}

// malloc returns the leased names and their fence indexes, nil when none.
func (m *model) malloc(n int, ttl int64, token, bindName string, bindTTL int64) ([]string, []int64) {
	m.reclaim(m.budget)
	var picked []string
	if bindName != "" {
		if k := m.boundMember(bindName, true); k != "" {
			picked = []string{k}
		}
	}
	if picked == nil {
		if len(m.freeOrder()) < n {
			return nil, nil
		}
		for len(picked) < n {
			k := m.bestFree()
			if k == "" {
				for _, p := range picked {
					m.pushFree(p)
				}
				return nil, nil
			}
			m.items[k].seq = 0
			picked = append(picked, k)
		}
	} else {
		m.items[picked[0]].seq = 0
	}
	fences := make([]int64, len(picked))
	for i, k := range picked {
		fences[i] = m.grant(k, token, ttl)
	}
	if bindName != "" {
		m.bind(bindName, picked[0], bindTTL)
	}
	return picked, fences
}

func (m *model) mallocShared(bindName string, bindTTL int64) string {
	m.reclaim(m.budget)
	k := ""
	if bindName != "" {
		k = m.boundMember(bindName, true)
	}
	if k == "" {
		if k = m.bestFree(); k == "" {
			return ""
		}
	}
	m.pushFree(k)
	if bindName != "" {
		m.bind(bindName, k, bindTTL)
	}
	return k
}

// free returns 1 (freed), 0 (not held) or 2 (had expired).
func (m *model) free(name, token string) int {
	l, ok := m.leases[name]
	if !ok || l.token != token {
		return 0
	}
	d := l.deadline
	m.endLease(name)
	if d >= 0 && d <= m.now {
		return 2
	}
	return 1
}

func (m *model) renew(name, token string, ttl int64) bool {
	l, ok := m.leases[name]
	if !ok || l.token != token {
		return false
	}
	if l.deadline >= 0 && l.deadline <= m.now {
		m.endLease(name)
		return false
	}
	l.deadline = -1
	if ttl > 0 {
		l.deadline = m.now + ttl
	}
	return true
}

func (m *model) freeKeys(names []string) int {
	n := 0
	for _, k := range names {
		if m.endLease(k) {
			n++
		}
	}
	return n
}

func (m *model) extend(ttl int64, prio float64, assign bool, names []string) (added, removed int) {
	if assign {
		keep := map[string]bool{}
		for _, k := range names {
			keep[k] = true
		}
		for k := range m.items {
			if !keep[k] {
				m.removeMember(k)
				removed++
			}
		}
	}
	exp := int64(0)
	if ttl > 0 {
		exp = m.now + ttl
	}
	for _, k := range names {
		if it, ok := m.items[k]; ok {
			it.exp, it.marked = exp, false
			continue
		}
		m.items[k] = &mItem{prio: prio, gen: m.nextSeq(), exp: exp}
		if _, leased := m.leases[k]; !leased {
			m.pushFree(k)
		}
		added++
	}
	return added, removed
}

func (m *model) shrink(names []string) int {
	n := 0
	for _, k := range names {
		if m.removeMember(k) {
			n++
		}
	}
	return n
}

func (m *model) clear() int {
	n := len(m.keys())
	m.items = map[string]*mItem{}
	return n
}

func (m *model) quarantine(d int64, names []string) int {
	n := 0
	for _, k := range names {
		it, ok := m.items[k]
		if !ok {
			continue
		}
		if d > 0 {
			it.seq = 0
			it.gen = m.nextSeq()
			it.quar = m.now + d
			n++
		} else if it.quar != 0 {
			it.quar = 0
			m.settle(k)
			n++
		}
	}
	return n
}

func (m *model) setPriority(p float64, names []string) int {
	n := 0
	for _, k := range names {
		if it, ok := m.items[k]; ok {
			it.prio = p
			n++
		}
	}
	return n
}

func (m *model) bindSet(bindName, name string, ttl int64) bool {
	if _, ok := m.items[name]; !ok || m.expired(name) {
		return false
	}
	m.bind(bindName, name, ttl)
	return true
}

func (m *model) keys() []string {
	var out []string
	for k := range m.items {
		if !m.expired(k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
