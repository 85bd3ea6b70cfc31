package lock_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/lock"
)

// TestMemoryMatchesRedis runs the same random sequence of parity operations
// against Redis and the in-memory twin and requires identical results. TTLs
// are either none or an hour, so no expiry happens during the run and the
// outcome does not depend on timing.
func TestMemoryMatchesRedis(t *testing.T) {
	ctx := ctxT(t)
	r := mustNew(t, redistest.Client(t), redistest.Namespace(t))
	m := lock.NewMemory()
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	keys := []string{"a", "b", "c"}
	values := []string{"1", "2", "2.5", "-3", "x", "owner", "0x10", "inf", "-inf", "nan", "1e500", " 7 ", "+2", ".5", "0x1p4",
		// What Lua's tonumber accepts and Go's parsers may not, and back:
		// digit separators, Unicode spaces, a NUL ending the number, C's
		// ASCII spaces, underflow, a trailing point or exponent.
		"1_0", "\u00a05", "5\u2003", "5\u0085", "5\x00junk", "5\x00x", "\v5\f", "\t-2\r\n", "1e-400", "5.", "1e", "1e+", "--1", "+-1", "1.5e3", "1E2", ""}
	ttls := []time.Duration{0, time.Hour, -time.Second}
	ops := []lock.Op{lock.GT, lock.LT, lock.GE, lock.LE, lock.EQ, lock.NE}
	nums := []float64{-3, 1, 2, 2.5, 2.5000001, 7}
	pick := func(n int) int { return rng.IntN(n) }

	for i := range 3000 {
		k, v, ttl := keys[pick(len(keys))], values[pick(len(values))], ttls[pick(len(ttls))]
		op, n1, n2 := ops[pick(len(ops))], nums[pick(len(nums))], nums[pick(len(nums))]
		var name string
		run := func(l lock.Locker) string {
			switch c := i % 9; c {
			case 0:
				name = fmt.Sprintf("Lock(%s,%s,%v)", k, v, ttl)
				ok, err := l.Lock(ctx, k, v, ttl)
				return fmt.Sprint(ok, err)
			case 1:
				name = fmt.Sprintf("RLock(%s,%s,%v)", k, v, ttl)
				ok, err := l.RLock(ctx, k, v, ttl)
				return fmt.Sprint(ok, err)
			case 2:
				name = fmt.Sprintf("Update(%s,%s,%v)", k, v, ttl)
				return fmt.Sprint(l.Update(ctx, k, v, ttl))
			case 3:
				name = fmt.Sprintf("Unlock(%s)", k)
				ok, err := l.Unlock(ctx, k)
				return fmt.Sprint(ok, err)
			case 4:
				name = fmt.Sprintf("Value(%s)", k)
				val, ok, err := l.Value(ctx, k)
				return fmt.Sprint(val, ok, err)
			case 5:
				name = fmt.Sprintf("Status(%s)", k)
				st, err := l.Status(ctx, k, 30*time.Minute)
				return fmt.Sprint(st, err)
			case 6:
				name = fmt.Sprintf("SetIf(%s,%v,%v,%v,%v)", k, op, n1, n2, ttl)
				ok, err := l.SetIf(ctx, k, op, n1, n2, ttl)
				return fmt.Sprint(ok, err != nil)
			case 7:
				name = fmt.Sprintf("DeleteIf(%s,%v,%v)", k, op, n1)
				ok, err := l.DeleteIf(ctx, k, op, n1)
				return fmt.Sprint(ok, err != nil)
			default:
				name = fmt.Sprintf("IsLocked(%s)", k)
				ok, err := l.IsLocked(ctx, k)
				return fmt.Sprint(ok, err)
			}
		}
		if got, want := run(m), run(r); got != want {
			t.Fatalf("op %d %s: memory %q, redis %q", i, name, got, want)
		}
	}
}
