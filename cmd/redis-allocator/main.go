// Command redis-allocator is the command-line tool of the redisallocator
// module: it takes, inspects and releases distributed locks on Redis and runs
// a guided demonstration of the lock.
//
// Run "redis-allocator help" for the list of commands. All the work is done
// by package internal/cli; this file only wires signals and the exit code.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/redisallocator/redisallocator/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
