package keys

import (
	"strings"
	"testing"
)

func TestLayout(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"lock", Lock("app", "lock", "k1"), "app|lock:k1"},
		{"pool lock", PoolLock("app", "lock-pool", "k1"), "{app|lock-pool}:k1"},
		{"pool set", PoolSet("app", "lock-pool"), "{app|lock-pool}|pool"},
		{"fence", Fence("app|lock:k1"), "{app|lock:k1}|fence"},
		{"fence tagged", Fence("{app}|lock:k1"), "{app}|fence|{app}|lock:k1"},
		{"fence pool", Fence(PoolLock("app", "lock-pool", "k1")), "{app|lock-pool}|fence|{app|lock-pool}:k1"},
		{"grant", Grant("app|lock:k1"), "{app|lock:k1}|grant"},
		{"queue", Queue("app|lock:k1"), "{app|lock:k1}|queue"},
		{"queued", Queued("app|lock:k1"), "{app|lock:k1}|queued"},
		{"queue pool", Queue(PoolLock("app", "lock-pool", "k1")), "{app|lock-pool}|queue|{app|lock-pool}:k1"},
		{"wake", Wake("app|lock", "x1"), "app|lock|wake|x1"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestSlotKnownValues(t *testing.T) {
	// Values from the Redis Cluster specification and CLUSTER KEYSLOT.
	tests := map[string]int{
		"123456789":     12739,
		"foo":           12182,
		"{user1000}.a":  Slot("user1000"),
		"foo{}{bar}":    Slot("foo{}{bar}"),
		"foo{{bar}}zap": Slot("{bar"),
		"foo{bar}{zap}": Slot("bar"),
		"":              0,
	}
	for key, want := range tests {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestCompanionSameSlot(t *testing.T) {
	for _, key := range []string{
		"plain", "a|b:c", "{tag}rest", "x{}y", "a}b", "}{", "a{b", "{}", "{}}", "k}{v}", strings.Repeat("z}", 40),
	} {
		c := Companion(key, "|fence")
		if Slot(c) != Slot(key) {
			t.Errorf("Companion(%q) = %q: slot %d, want %d", key, c, Slot(c), Slot(key))
		}
		if c == key {
			t.Errorf("Companion(%q) returned the key itself", key)
		}
	}
}

func TestProblem(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"", false},
		{"k", true},
		{strings.Repeat("k", MaxKeyLen), true},
		{strings.Repeat("k", MaxKeyLen+1), false},
	}
	for _, tt := range tests {
		if p := Problem(tt.key); (p == "") != tt.ok {
			t.Errorf("Problem(len %d) = %q, want ok=%v", len(tt.key), p, tt.ok)
		}
	}
}

func TestNamespaceProblem(t *testing.T) {
	if NamespaceProblem("", "lock", false) == "" {
		t.Error("empty prefix accepted")
	}
	if p := NamespaceProblem("{app}", "lock", false); p != "" {
		t.Errorf("tagged prefix refused for plain namespace: %s", p)
	}
	if NamespaceProblem("{app}", "lock", true) == "" {
		t.Error("brace accepted in a tagged namespace")
	}
}

// TestSiblingNeverALockKey checks that no caller key of a namespace maps to
// the fencing counter or waiters key of another key of the same namespace,
// for plain and pool namespaces, and that both share the lock key's slot.
func TestSiblingNeverALockKey(t *testing.T) {
	siblings := map[string]func(string) string{"Fence": Fence, "Grant": Grant, "Queue": Queue, "Queued": Queued}
	for _, prefix := range []string{"app", "{app}", "a{b", "x}y"} {
		for _, key := range []string{"k", "k|fence", "k|waiters", "{t}y", "{t}y|fence", "}", "{}"} {
			for name, sib := range siblings {
				lk := Lock(prefix, "lock", key)
				f := sib(lk)
				if Slot(f) != Slot(lk) {
					t.Errorf("%s(%q) = %q in another slot", name, lk, f)
				}
				if rest, ok := strings.CutPrefix(f, prefix+"|lock:"); ok {
					t.Errorf("%s(%q) = %q is the lock key of caller key %q", name, lk, f, rest)
				}
				if strings.ContainsAny(prefix, "{}") {
					continue // pool prefixes may not contain braces
				}
				pk := PoolLock(prefix, "lock-pool", key)
				f = sib(pk)
				if Slot(f) != Slot(pk) {
					t.Errorf("%s(%q) = %q in another slot", name, pk, f)
				}
				if rest, ok := strings.CutPrefix(f, PoolLock(prefix, "lock-pool", "")); ok {
					t.Errorf("%s(%q) = %q is the pool lock key of member %q", name, pk, f, rest)
				}
			}
		}
	}
}

func FuzzCompanion(f *testing.F) {
	f.Add("k")
	f.Add("a}b{c}")
	f.Fuzz(func(t *testing.T, key string) {
		if c := Companion(key, "|x"); Slot(c) != Slot(key) {
			t.Fatalf("Companion(%q) = %q in slot %d, want %d", key, c, Slot(c), Slot(key))
		}
	})
}
