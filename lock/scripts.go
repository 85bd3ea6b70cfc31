package lock

import (
	_ "embed"

	"github.com/redisallocator/redisallocator/internal/script"
)

var (
	//go:embed rlock.lua
	rlockLua string
	//go:embed acquire.lua
	acquireLua string
	//go:embed refresh.lua
	refreshLua string
	//go:embed release.lua
	releaseLua string
	//go:embed cond.lua
	condLua string
	//go:embed pool_assign.lua
	poolAssignLua string
	//go:embed pool_status.lua
	poolStatusLua string
)

// The scripts are immutable after package initialisation. Those that grant
// a lock key start with fence.lua, so that every grant issues fences alike.
var (
	rlockScript      = script.New("rlock.lua", rlockLua)
	acquireScript    = script.New("acquire.lua", script.FencePrelude+acquireLua)
	refreshScript    = script.New("refresh.lua", refreshLua)
	releaseScript    = script.New("release.lua", script.FencePrelude+releaseLua)
	condScript       = script.New("cond.lua", condLua)
	poolAssignScript = script.New("pool_assign.lua", poolAssignLua)
	poolStatusScript = script.New("pool_status.lua", poolStatusLua)
)
