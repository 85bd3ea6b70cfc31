// Package bench compares the lock of redisallocator with
// github.com/bsm/redislock on one Redis server through one go-redis client.
//
// It times four cases at several goroutine counts: a floor (EVALSHA of the
// no-op script "return 1"), redisallocator TryAcquire+Release,
// bsm/redislock Obtain+Release, and redisallocator Lock+Unlock (SET NX PX +
// DEL). Around each run it reads INFO commandstats and the server's CPU
// time; a separate pass times the acquire and release scripts alone.
//
// The command lockbench (./lockbench) prints the comparison; the Go
// benchmarks BenchmarkCompare/<case>/goroutines=<n> run the same cases under
// go test. Both start a private redis-server on a free loopback port unless
// given a server.
//
// The command handoff (./handoff, RunHandoff) measures the opposite case:
// many goroutines, in one or several processes, contend for one key and
// the lock passes from holder to holder. It compares redisallocator's
// Acquire with release notification, bsm/redislock's Obtain polling every
// millisecond and redisallocator's Acquire polling every millisecond, by
// hand-offs per second, wait time, fairness and Redis CPU and commands per
// hand-off, and checks mutual exclusion on the way.
//
// The command allocbench (./allocbench, RunAlloc) measures the allocator
// package alone: malloc + free pairs against the no-op floor on pools of
// 100 to 1 000 000 members, its scripts' Redis time, MallocWait hand-offs,
// GC and memory per member, with each target of its issue as a PASS or
// MISS line. The command allocfloor (./allocfloor) compares the malloc and
// free scripts with flat scripts that run only their common-path commands.
//
// This is a separate module so that bsm/redislock never becomes a
// dependency of redisallocator itself.
package bench
