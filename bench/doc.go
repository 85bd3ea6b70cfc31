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
// given a server. This is a separate module so that bsm/redislock never
// becomes a dependency of redisallocator itself.
package bench
