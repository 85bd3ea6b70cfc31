package allocator_test

const helperEnv = "ALLOCATOR_TEST_HAMMER"

func runHammer() int { return 0 }
