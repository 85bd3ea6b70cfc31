package allocator_test

import (
	"context"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// Close while a background refresh is in flight and Redis stalls (CLIENT
// PAUSE by an operator, a failover): Close should return promptly.
func TestAdv3CloseWhileRedisStalls(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	admin := srv.Client(t)
	for _, mode := range []string{"malloc", "refresher", "health"} {
		started := make(chan struct{}, 1)
		u := &adv3Updater{n: 1, f: func(ctx context.Context, call int32, _ int) ([]string, error) {
			select {
			case started <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return nil, ctx.Err()
		}}
		a, err := allocator.New(srv.Client(t), redistest.Namespace(t), allocator.WithPolicy(allocator.Policy{Updater: u, RefreshInterval: time.Minute}))
		ok(t, err)
		ok(t, errOnly(a.Extend(ctx, []string{"r0"})))
		switch mode {
		case "malloc":
			l := must[*allocator.Lease](t)(a.MallocLease(ctx))
			ok(t, l.Free(ctx))
			<-started
		case "refresher":
			must[*allocator.Background](t)(a.StartRefresher(ctx))
			<-started
		case "health":
			block := make(chan struct{}, 1)
			must[*allocator.Background](t)(a.StartHealthChecker(ctx, time.Millisecond, func(ctx context.Context, key string) error {
				select {
				case block <- struct{}{}:
				default:
				}
				return nil
			}))
			<-block
		}
		ok(t, admin.Do(ctx, "CLIENT", "PAUSE", "4000", "ALL").Err())
		t0 := time.Now()
		ok(t, a.Close())
		d := time.Since(t0)
		ok(t, admin.Do(ctx, "CLIENT", "UNPAUSE").Err())
		if d > time.Second {
			t.Errorf("%s: Close took %v while Redis was paused", mode, d)
		}
	}
}
