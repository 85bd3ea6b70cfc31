package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/keys"
)

// MemResult is the server memory that idle members take.
type MemResult struct {
	Members int `json:"members"`
	NameLen int `json:"name_len"`
	// UsedBefore and UsedAfter are INFO memory used_memory before and after
	// the members were added.
	UsedBefore     int64   `json:"used_before"`
	UsedAfter      int64   `json:"used_after"`
	BytesPerMember float64 `json:"bytes_per_member"`
	// Keys lists MEMORY USAGE (every element sampled) of each key of the
	// pool, by its part name (items, free, seq, ...).
	Keys []KeyMemory `json:"keys"`
}

// KeyMemory is the memory of one key of a pool.
type KeyMemory struct {
	Part  string `json:"part"`
	Bytes int64  `json:"bytes"`
}

// measureMemory adds MemMembers members with names of MemNameLen bytes to a
// fresh pool, FillChunk per Extend call, and reads used_memory around it.
// The members are idle: free, no lease, no expiry.
func measureMemory(ctx context.Context, e *allocEnv) (MemResult, error) {
	cfg := e.cfg
	prefix := e.poolPrefix("mem")
	a, err := e.newAlloc(prefix, allocator.WithBatching(0))
	if err != nil {
		return MemResult{}, err
	}
	e.progress("memory: adding %d members with %d-byte names ...", cfg.MemMembers, cfg.MemNameLen)
	res := MemResult{Members: cfg.MemMembers, NameLen: cfg.MemNameLen}
	if res.UsedBefore, err = usedMemory(ctx, e.client); err != nil {
		return res, err
	}
	name := func(i int) string { return fmt.Sprintf("m%0*d", cfg.MemNameLen-1, i) }
	if err := fill(ctx, a, cfg.MemMembers, cfg.FillChunk, name); err != nil {
		return res, err
	}
	if res.UsedAfter, err = usedMemory(ctx, e.client); err != nil {
		return res, err
	}
	res.BytesPerMember = float64(res.UsedAfter-res.UsedBefore) / float64(cfg.MemMembers)
	p := keys.NewPool(prefix, allocator.DefaultSuffix)
	for _, part := range []string{"items", "free", "timers", "holders", "seq", "fence"} {
		n, err := e.client.MemoryUsage(ctx, p.Part(part), 0).Result()
		if errors.Is(err, redis.Nil) {
			continue // the key does not exist
		}
		if err != nil {
			return res, fmt.Errorf("MEMORY USAGE: %w", err)
		}
		res.Keys = append(res.Keys, KeyMemory{Part: part, Bytes: n})
	}
	slices.SortStableFunc(res.Keys, func(x, y KeyMemory) int { return int(y.Bytes - x.Bytes) })
	return res, nil
}
