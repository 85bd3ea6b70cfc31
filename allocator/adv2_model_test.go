package allocator_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// adv2Names: fewer names than modelNames so that collisions (re-adding a
// leased member, priority changes while leased...) are frequent.
var adv2Names = []string{"a", "b", "c", "d", "e", "f"}

// TestAdv2ModelBudgets runs an extended differential test: budgets 0, 1, 2,
// 16, Extend without TTL on expiring members, SetPriority on leased
// members, MallocN up to the pool size, renewals to permanent and back, GC
// of many sizes, shared malloc with bindings, and many more time steps.
func TestAdv2ModelBudgets(t *testing.T) {
	seeds, steps := 30, 300
	if s, err := strconv.Atoi(os.Getenv("ADV2_SEEDS")); err == nil {
		seeds = s
	}
	for _, budget := range []int{0, 1, 2, 16} {
		for _, tg := range targets[:1] {
			for seed := range seeds {
				t.Run(fmt.Sprintf("%s/b%d/seed%d", tg.name, budget, seed), func(t *testing.T) {
					t.Parallel()
					runModelDiff(t, tg, uint64(5000+seed), steps, budget, adv2Names)
				})
			}
		}
	}
}

func TestAdv2ModelBudgetsCluster(t *testing.T) {
	for _, budget := range []int{1, 16} {
		for seed := range 4 {
			t.Run(fmt.Sprintf("b%d/seed%d", budget, seed), func(t *testing.T) {
				t.Parallel()
				runModelDiff(t, targets[1], uint64(7000+seed), 200, budget, adv2Names)
			})
		}
	}
}
