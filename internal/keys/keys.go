// Package keys names every Redis key and channel the library uses.
//
// All key strings are built here so that the layout is documented in one
// place and every structure that a Lua script touches together shares a
// Redis Cluster hash tag.
//
// Layout (Redis type in brackets):
//
//	<prefix>|<suffix>:<key>            [STRING] plain lock key holding the caller's value
//	                                   (same layout as the Python redis-allocator)
//	{<lock key>}|fence                 [STRING] fencing counter of an untagged lock key: the last
//	                                   fence issued, expiring some time after it started
//	{<tag>}|fence|<lock key>           [STRING] fencing counter of a lock key with hash tag <tag>
//	{<lock key>}|grant                 [STRING] grant id of the acquisition that took the key
//	{<tag>}|grant|<lock key>           afresh with a token of its caller's (see Grant)
//	{<lock key>}|queue                 [ZSET]   owner tokens waiting for an untagged lock key,
//	                                   scored by arrival (see Queue)
//	{<lock key>}|queued                [HASH]   token → entry of each waiting owner (see Queued)
//	{<tag>}|queue|<lock key>           the same two for a lock key with hash tag <tag>
//	{<tag>}|queued|<lock key>
//	<namespace>|wake|<id>              [channel] grants to the waiters of one Lock or Pool value
//	{<prefix>|<suffix>}|pool           [SET]    members of a lock pool
//	{<prefix>|<suffix>}:<key>          [STRING] lock key of a pool member
//	{<prefix>|<suffix>}|fence          [STRING] fencing counter shared by a pool's members
//
// Allocator (every key shares the tag T = {<prefix>|<suffix>}, see Pool):
//
//	T|items       [HASH]   member → "<priority> <free seq or -> <generation> <expiry ms> <quarantine end ms>"
//	T|free        [ZSET]   "<free seq, 12 hex digits><member>" scored by -priority
//	T|timers      [ZSET]   every deadline: "L<resource>" lease, "E<member>" membership,
//	                       "Q<member>" quarantine, "S<session>" session (ms)
//	T|holders     [HASH]   leased resource → "<fence> <token> <session> <waiter> <deadline ms or -1>"
//	T|seq         [STRING] counter of free sequence numbers and generations
//	T|fence       [STRING] fencing counter of the pool's leases
//	T|sessl       [ZSET]   "<session id>|<resource>" of each lease in a session (score 0)
//	T|waitq       [ZSET]   waiter id → arrival (a seq), the MallocWait queue
//	T|waitd       [HASH]   waiter id → "<until ms> <ttl ms> <token> <session> <channel>"
//	T|granted     [HASH]   waiter id → "<fence> <deadline> <resource>" of its lease
//	T|perm        [ZSET]   "<token>|<resource>" of each permanent lease (score 0)
//	T|cancelled   [ZSET]   token → when (ms) its caller gave up on an operation of unknown outcome
//	T|bind|<name> [STRING] soft binding: "<expiry ms or 0> <generation> <resource>"
//	T|wake|<id>   [channel] hand-offs to the waiters of one Allocator value
//	<prefix>|<suffix>-refresh:update  [STRING] the pool refresher's lock (a
//	              plain lock key of package lock, expiring after the interval)
//	{<prefix>|workers}|workers  [ZSET] worker registry, see Workers
package keys

import (
	"fmt"
	"strings"
	"sync"
)

// MaxKeyLen is the largest caller-supplied key, in bytes.
const MaxKeyLen = 1024

// Problem says what is wrong with a caller-supplied key, or returns "" when
// the key can be used: it must be non-empty and at most MaxKeyLen bytes.
// Callers wrap the text in their own sentinel error.
func Problem(key string) string {
	switch {
	case key == "":
		return "empty key"
	case len(key) > MaxKeyLen:
		return fmt.Sprintf("key of %d bytes, limit is %d", len(key), MaxKeyLen)
	}
	return ""
}

// NamespaceProblem says what is wrong with a namespace, or returns "".
// A suffix may not contain braces (so fencing counters cannot collide with
// lock keys); when tagged is true the namespace is wrapped in a hash tag, so
// the prefix may not either.
func NamespaceProblem(prefix, suffix string, tagged bool) string {
	switch {
	case prefix == "":
		return "empty prefix"
	case len(prefix)+len(suffix) > MaxKeyLen:
		return fmt.Sprintf("prefix and suffix longer than %d bytes", MaxKeyLen)
	case strings.ContainsAny(suffix, "{}"):
		return fmt.Sprintf("suffix %q contains a brace", suffix)
	case tagged && strings.ContainsAny(prefix, "{}"):
		return fmt.Sprintf("prefix %q contains a brace", prefix)
	}
	return ""
}

// Namespace returns <prefix>|<suffix>, which every plain lock key of the
// namespace starts with.
func Namespace(prefix, suffix string) string {
	return prefix + "|" + suffix
}

// Lock returns the plain lock key <prefix>|<suffix>:<key>.
func Lock(prefix, suffix, key string) string {
	return Namespace(prefix, suffix) + ":" + key
}

// Tag returns the hash tag shared by every key of a tagged namespace.
func Tag(prefix, suffix string) string {
	return "{" + prefix + "|" + suffix + "}"
}

// PoolLock returns the lock key of a pool member: {<prefix>|<suffix>}:<key>.
func PoolLock(prefix, suffix, key string) string {
	return Tag(prefix, suffix) + ":" + key
}

// PoolSet returns the set holding the members of a lock pool.
func PoolSet(prefix, suffix string) string {
	return Tag(prefix, suffix) + "|pool"
}

// PoolFence returns the fencing counter shared by all members of a pool.
func PoolFence(prefix, suffix string) string {
	return Tag(prefix, suffix) + "|fence"
}

// Fence returns the fencing counter of lockKey. It lives in the same Redis
// Cluster slot as lockKey, so one script can update both, and it can never
// equal a lock key: a lock key <prefix>|<suffix>:<key> has no hash tag
// unless its prefix or key brings one, and the counter of a key with a tag
// t starts with "{t}|fence|", which no lock key of a namespace without
// braces in its suffix can produce.
func Fence(lockKey string) string { return sibling(lockKey, "fence") }

// Grant returns the grant marker of lockKey: the grant id of the
// acquisition that took lockKey afresh with a token its caller chose, so
// that the clean-up after an attempt of unknown outcome gives back only
// that grant. It shares lockKey's slot and never equals a lock key.
func Grant(lockKey string) string { return sibling(lockKey, "grant") }

// Queue returns the wait queue of lockKey: a sorted set of the owner tokens
// waiting for it, scored by arrival, which a release hands the key to in
// order. It shares lockKey's slot and, like Fence, never equals a lock key.
func Queue(lockKey string) string { return sibling(lockKey, "queue") }

// Queued returns the hash that holds, for each token in the Queue of
// lockKey, what a release needs to hand the key over: until when the owner
// waits, the TTL it asked for and where to tell it.
func Queued(lockKey string) string { return sibling(lockKey, "queued") }

// sibling returns the key named kind that belongs to lockKey, in its slot:
// {<lockKey>}|kind when lockKey has no hash tag, {<tag>}|kind|<lockKey>
// when it has.
func sibling(lockKey, kind string) string {
	if tag, ok := hashTag(lockKey); ok {
		return "{" + tag + "}|" + kind + "|" + lockKey
	}
	if !strings.Contains(lockKey, "}") {
		return "{" + lockKey + "}|" + kind
	}
	return "{" + tagForSlot(Slot(lockKey)) + "}|" + kind + "|" + lockKey
}

// Wake returns the pub/sub channel on which releases tell the waiters of
// one Lock or Pool value (identified by id) that they were handed a key.
// namespace is the part every key of the namespace starts with, such as
// "<prefix>|<suffix>" or a pool's hash tag.
func Wake(namespace, id string) string {
	return namespace + "|wake|" + id
}

// Companion returns a key ending in suffix that hashes to the same Redis
// Cluster slot as key.
//
// When key carries a hash tag, appending keeps the tag. Otherwise the whole
// key becomes the tag, which works whenever key has no '}'. For the remaining
// keys a short tag with the same slot is looked up.
func Companion(key, suffix string) string {
	if _, ok := hashTag(key); ok {
		return key + suffix
	}
	if !strings.Contains(key, "}") {
		return "{" + key + "}" + suffix
	}
	return "{" + tagForSlot(Slot(key)) + "}" + key + suffix
}

// hashTag returns the hash tag of key as Redis Cluster computes it.
func hashTag(key string) (string, bool) {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return "", false
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return "", false
	}
	return key[i+1 : i+1+j], true
}

// Slot returns the Redis Cluster hash slot of key.
func Slot(key string) int {
	if tag, ok := hashTag(key); ok {
		key = tag
	}
	return int(crc16(key) % 16384)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021), the checksum Redis Cluster uses.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

var (
	slotTagsOnce sync.Once
	slotTags     []string
)

// tagForSlot returns a short brace-free string whose slot is slot. The table
// is built once, on first use, and never changes afterwards.
func tagForSlot(slot int) string {
	slotTagsOnce.Do(func() {
		tags := make([]string, 16384)
		left := len(tags)
		const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
		for n := 0; left > 0; n++ {
			var b [8]byte
			i := len(b)
			for v := n; ; v /= len(alphabet) {
				i--
				b[i] = alphabet[v%len(alphabet)]
				if v < len(alphabet) {
					break
				}
			}
			s := string(b[i:])
			if sl := int(crc16(s) % 16384); tags[sl] == "" {
				tags[sl] = s
				left--
			}
		}
		slotTags = tags
	})
	return slotTags[slot]
}

// Pool names the keys of one allocator pool, all under the hash tag
// {<prefix>|<suffix>} so that every script runs in one Redis Cluster slot.
type Pool struct{ tag string }

// NewPool returns the key names of the allocator pool prefix, suffix.
func NewPool(prefix, suffix string) Pool { return Pool{tag: Tag(prefix, suffix)} }

// Tag returns the pool's hash tag, with its braces.
func (p Pool) Tag() string { return p.tag }

// poolParts lists the fixed keys of a pool, in the order of Scripts.
var poolParts = []string{"items", "free", "timers", "holders", "seq", "fence", "sessl", "waitq", "waitd", "granted", "perm", "cancelled"}

// Scripts returns the fixed keys every allocator script takes, KEYS[1] to
// KEYS[12], in the order of the layout above, followed by extra
// (such as a binding key).
func (p Pool) Scripts(extra ...string) []string {
	out := make([]string, 0, len(poolParts)+len(extra))
	for _, part := range poolParts {
		out = append(out, p.tag+"|"+part)
	}
	return append(out, extra...)
}

// Part returns the key of one fixed part, such as "items" or "free".
func (p Pool) Part(part string) string { return p.tag + "|" + part }

// Bind returns the soft-binding key of name.
func (p Pool) Bind(name string) string { return p.tag + "|bind|" + name }

// Wake returns the channel of the waiters of the Allocator value id.
func (p Pool) Wake(id string) string { return Wake(p.tag, id) }
