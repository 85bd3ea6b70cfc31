package taskqueue_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// advdScriptHook watches the EVALSHA/EVAL commands of one script (file
// name, e.g. "extend.lua"): it records when each is sent and, while fail
// is set, fails it without sending it (Redis unreachable for it); while
// hang is set, it blocks it until the hook is released.
type advdScriptHook struct {
	name  string
	fail  atomic.Bool
	hang  atomic.Bool
	mu    sync.Mutex
	times []time.Time
	rel   chan struct{}
}

func newAdvdScriptHook(name string) *advdScriptHook {
	return &advdScriptHook{name: name, rel: make(chan struct{})}
}

var errAdvdInjected = errors.New("advd: injected network failure")

func (h *advdScriptHook) sent() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.times...)
}

func (h *advdScriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *advdScriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isScript(cmd, h.name) {
			h.mu.Lock()
			h.times = append(h.times, time.Now())
			h.mu.Unlock()
			if h.hang.Load() {
				select {
				case <-h.rel:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if h.fail.Load() {
				cmd.SetErr(errAdvdInjected)
				return errAdvdInjected
			}
		}
		return next(ctx, cmd)
	}
}
func (h *advdScriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// advdRedisNow is the Redis server's clock in ms.
func advdRedisNow(q *taskqueue.Queue) int64 {
	now, _ := q.Raw().Time(context.Background()).Result()
	return now.UnixMilli()
}

// advdLease is the lease deadline (ms, Redis clock) of task id of name, or -1.
func advdLease(q *taskqueue.Queue, name, id string) int64 {
	sc, err := q.Raw().ZScore(context.Background(), taskqueue.Tag(q)+"|a|"+name, id).Result()
	if err != nil {
		return -1
	}
	return int64(sc)
}
