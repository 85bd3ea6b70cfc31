package lock_test

import (
	"math"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/lock"
)

// TestExponentialBackoffBounds checks every delay against the strategy's
// envelope: at least half of min·2^(failures−1) capped at max, at most that
// value, for any number of failures, including 0 and those where the
// doubling overflows.
func TestExponentialBackoffBounds(t *testing.T) {
	tests := []struct{ min, max time.Duration }{
		{8 * time.Millisecond, 512 * time.Millisecond},
		{1<<33 + 1, 24 * time.Hour}, // odd, near 2³³ ns: doubling wraps past 2⁶³
		{time.Nanosecond, math.MaxInt64},
		{3, 3},
		{time.Hour, math.MaxInt64},
	}
	for _, tt := range tests {
		s := lock.ExponentialBackoff(tt.min, tt.max)
		for _, failures := range []int{math.MinInt, -1, 0, 1, 2, 31, 32, 33, 62, 63, 64, 1000, math.MaxInt} {
			want := tt.max
			if n := max(failures, 1) - 1; n < 63 && tt.min <= tt.max>>n {
				want = min(tt.min<<n, tt.max)
			}
			for range 20 {
				d, again := s.NextBackoff(failures)
				if !again || d < want/2 || d > want {
					t.Fatalf("ExponentialBackoff(%v, %v).NextBackoff(%d) = %v, %v; want in [%v, %v]", tt.min, tt.max, failures, d, again, want/2, want)
				}
			}
		}
	}
}
