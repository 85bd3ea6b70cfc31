package taskqueue_test

const crashEnv = "TASKQUEUE_CRASH_LISTENER"

func runCrashListener() int { return 0 }
