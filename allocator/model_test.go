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
	exp    map[string]int64 // 0: expired while leased, removed when the lease ends
	quar   map[string]int64
	leases map[string]*mLease
	binds  map[string]mBind
	seq    int64
	fences int64 // number of fences issued
}

type mItem struct {
	prio float64
	seq  int64 // position in the free set; 0 when not free
	gen  int64
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
		budget: budget, items: map[string]*mItem{}, exp: map[string]int64{}, quar: map[string]int64{},
		leases: map[string]*mLease{}, binds: map[string]mBind{},
	}
}

func (m *model) nextSeq() int64 { m.seq++; return m.seq }

func (m *model) expired(name string) bool {
	e, ok := m.exp[name]
	return ok && e <= m.now
}

func (m *model) quarantined(name string) bool {
	q, ok := m.quar[name]
	return ok && q > m.now
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
	delete(m.exp, name)
	delete(m.quar, name)
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
	if _, leased := m.leases[name]; leased || m.quarantined(name) {
		return
	}
	if m.expired(name) {
		m.removeMember(name)
		return
	}
	m.pushFree(name)
}

func (m *model) endLease(name string) bool {
	if _, ok := m.leases[name]; !ok {
		return false
	}
	delete(m.leases, name)
	m.settle(name)
	return true
}

// byScore lists the keys of a score map with scores in [lo, hi] (lo
// exclusive when loOpen), in ZSET order, at most limit.
func byScore(s map[string]int64, lo int64, loOpen bool, hi int64, hiOpen bool, limit int) []string {
	var out []string
	for k, v := range s {
		if (v > lo || (!loOpen && v == lo)) && (v < hi || (!hiOpen && v == hi)) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		if c := cmp.Compare(s[a], s[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
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
	deadlines := map[string]int64{}
	for k, l := range m.leases {
		if l.deadline >= 0 {
			deadlines[k] = l.deadline
		}
	}
	for _, k := range byScore(deadlines, -1<<62, false, m.now, true, budget) {
		m.endLease(k)
		n[0]++
	}
	budget -= n[0]
	if budget > 0 {
		for _, k := range byScore(m.exp, 0, true, m.now, false, budget) {
			if _, leased := m.leases[k]; leased {
				m.exp[k] = 0
			} else {
				m.removeMember(k)
			}
			n[2]++
		}
		budget -= n[2]
	}
	if budget > 0 {
		for _, k := range byScore(m.quar, -1<<62, false, m.now, false, budget) {
			delete(m.quar, k)
			m.settle(k)
			n[3]++
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
	for _, k := range names {
		if ttl > 0 {
			m.exp[k] = m.now + ttl
		} else {
			delete(m.exp, k)
		}
		if _, ok := m.items[k]; !ok {
			delete(m.quar, k)
			m.items[k] = &mItem{prio: prio, gen: m.nextSeq()}
			if _, leased := m.leases[k]; !leased {
				m.pushFree(k)
			}
			added++
		}
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
	m.items, m.exp, m.quar = map[string]*mItem{}, map[string]int64{}, map[string]int64{}
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
			m.quar[k] = m.now + d
			it.gen = m.nextSeq()
			it.seq = 0
			n++
		} else if _, q := m.quar[k]; q {
			delete(m.quar, k)
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
