package lock

// Adversarial checks of the dispatcher's bookkeeping (see
// adversarial_test.go for the rest).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
)

// TestAdvDispatcherBookkeeping: after many waits on several
// keys by three Lock values, with contexts ending at random moments, no
// call is left registered in any line and no line keeps a waiter.
func TestAdvDispatcherBookkeeping(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ns := redistest.Namespace(t)
	var ls []*Lock
	for range 3 {
		l, err := New(redistest.Client(t), ns)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	stop := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for p, l := range ls {
		for g := range 6 {
			wg.Go(func() {
				for i := 0; time.Now().Before(stop); i++ {
					key := fmt.Sprint("k", (g+i)%3)
					wait := time.Duration(1+(p*5+g*3+i)%50) * time.Millisecond
					actx, cancel := context.WithTimeout(ctx, wait)
					h, err := l.Acquire(actx, key, time.Second, WithReleaseNotify())
					dl, _ := actx.Deadline()
					ended := !time.Now().Before(dl) // see TestAdvDeadlineDuringSubscribeMisreported
					cancel()
					if err != nil {
						if !errors.Is(err, ErrNotObtained) && !ended {
							mu.Lock()
							errs = append(errs, err)
							mu.Unlock()
						}
						continue
					}
					time.Sleep(time.Duration(i%3) * time.Millisecond)
					_ = h.Release(ctx)
				}
			})
		}
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	for p, l := range ls {
		d := l.b.(*redisBackend).d
		d.mu.Lock()
		if d.users != 0 {
			t.Errorf("process %d: %d callers still registered", p, d.users)
		}
		for sk, wl := range d.lines {
			if len(wl.waiters) != 0 {
				t.Errorf("process %d: line of %q keeps %d waiters", p, sk, len(wl.waiters))
			}
		}
		d.mu.Unlock()
	}
}
