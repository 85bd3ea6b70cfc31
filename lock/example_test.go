package lock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redisallocator/redisallocator/lock"
)

func ExampleLock_Lock() {
	ctx := context.Background()
	client := exampleClient() // a *redis.Client, *redis.ClusterClient, ...
	locks, err := lock.New(client, exampleNamespace("orders"))
	if err != nil {
		panic(err)
	}

	ok, err := locks.Lock(ctx, "order-42", "worker-a", 30*time.Second)
	fmt.Println("worker-a locked:", ok, err)
	ok, _ = locks.Lock(ctx, "order-42", "worker-b", 30*time.Second)
	fmt.Println("worker-b locked:", ok)
	holder, _, _ := locks.Value(ctx, "order-42")
	fmt.Println("held by:", holder)
	status, _ := locks.Status(ctx, "order-42", time.Minute)
	fmt.Println("status:", status)
	ok, _ = locks.Unlock(ctx, "order-42")
	fmt.Println("unlocked:", ok)
	// Output:
	// worker-a locked: true <nil>
	// worker-b locked: false
	// held by: worker-a
	// status: locked
	// unlocked: true
}

func ExampleLock_Acquire() {
	ctx := context.Background()
	locks, err := lock.New(exampleClient(), exampleNamespace("reports"))
	if err != nil {
		panic(err)
	}

	// Wait up to 5s for the lock, waking as soon as a holder releases it.
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	held, err := locks.Acquire(waitCtx, "nightly", 10*time.Second, lock.WithReleaseNotify())
	if err != nil {
		panic(err)
	}
	// Renew in the background; stop work if the lock is ever lost.
	if err := held.KeepAlive(ctx); err != nil {
		panic(err)
	}
	select {
	case <-held.Lost():
		fmt.Println("lost:", held.Err())
	default:
		// Pass the fence to the store you write to: it grows with every
		// acquisition of the key (it starts from Redis's clock in µs).
		fmt.Println("held, fence > 0:", held.Fence() > 0)
	}

	_, err = locks.TryAcquire(ctx, "nightly", 10*time.Second)
	fmt.Println("second owner:", errors.Is(err, lock.ErrNotObtained))

	fmt.Println("release:", held.Release(ctx))
	fmt.Println("release again:", errors.Is(held.Release(ctx), lock.ErrNotHeld))
	// Output:
	// held, fence > 0: true
	// second owner: true
	// release: <nil>
	// release again: true
}

func ExamplePool() {
	ctx := context.Background()
	pool, err := lock.NewPool(exampleClient(), exampleNamespace("gpus"))
	if err != nil {
		panic(err)
	}
	if err := pool.Assign(ctx, "gpu-0", "gpu-1", "gpu-2"); err != nil {
		panic(err)
	}
	if _, err := pool.Lock(ctx, "gpu-1", "job-17", time.Minute); err != nil {
		panic(err)
	}

	statuses, _ := pool.Statuses(ctx)
	for _, s := range statuses {
		fmt.Println(s.Key, "locked:", s.Locked)
	}
	locked, free, _ := pool.HealthCheck(ctx)
	fmt.Println("locked:", locked, "free:", free)
	// Output:
	// gpu-0 locked: false
	// gpu-1 locked: true
	// gpu-2 locked: false
	// locked: 1 free: 2
}

func ExampleNewMemory() {
	ctx := context.Background()
	locks := lock.NewMemory() // same interface, no Redis: for tests and single processes

	held, _ := locks.TryAcquire(ctx, "cache-refresh", time.Minute)
	_, err := locks.TryAcquire(ctx, "cache-refresh", time.Minute)
	fmt.Println(errors.Is(err, lock.ErrNotObtained))
	fmt.Println(held.Release(ctx))
	// Output:
	// true
	// <nil>
}

func ExampleWithBatching() {
	ctx := context.Background()
	// Many goroutines lock through one namespace: the operations that queue
	// behind 16 in flight to a node share one pipeline (the default is 8;
	// WithBatching(0) sends each on its own).
	locks, err := lock.New(exampleClient(), exampleNamespace("jobs"), lock.WithBatching(16))
	if err != nil {
		panic(err)
	}

	var wg sync.WaitGroup
	var taken atomic.Int64
	for i := range 100 {
		wg.Go(func() {
			h, err := locks.TryAcquire(ctx, fmt.Sprintf("job-%d", i), time.Minute)
			if err != nil {
				return
			}
			taken.Add(1)
			_ = h.Release(ctx)
		})
	}
	wg.Wait()
	fmt.Println("jobs locked and released:", taken.Load())
	// Output:
	// jobs locked and released: 100
}
