package allocator_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// TestAdvModelMoreSeeds runs the differential test with many more seeds and
// steps than TestModelMatchesRedis (seeds 1000.. so they differ from its).
func TestAdvModelMoreSeeds(t *testing.T) {
	seeds, steps := 40, 400
	if s, err := strconv.Atoi(os.Getenv("ADV_SEEDS")); err == nil {
		seeds = s
	}
	tg := targets[0]
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", 1000+seed), func(t *testing.T) {
			t.Parallel()
			runModelDiff(t, tg, uint64(1000+seed), steps)
		})
	}
}

func TestAdvModelMoreSeedsCluster(t *testing.T) {
	tg := targets[1]
	for seed := range 10 {
		t.Run(fmt.Sprint("seed", 2000+seed), func(t *testing.T) {
			t.Parallel()
			runModelDiff(t, tg, uint64(2000+seed), 300)
		})
	}
}
