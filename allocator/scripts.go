package allocator

import (
	_ "embed"

	"github.com/redisallocator/redisallocator/internal/script"
)

var (
	//go:embed pool.lua
	poolLua string
	//go:embed malloc.lua
	mallocLua string
	//go:embed malloc_shared.lua
	mallocSharedLua string
	//go:embed free.lua
	freeLua string
	//go:embed renew.lua
	renewLua string
	//go:embed free_keys.lua
	freeKeysLua string
	//go:embed extend.lua
	extendLua string
	//go:embed shrink.lua
	shrinkLua string
	//go:embed quarantine.lua
	quarantineLua string
	//go:embed priority.lua
	priorityLua string
	//go:embed gc.lua
	gcLua string
	//go:embed bind.lua
	bindLua string
	//go:embed members.lua
	membersLua string
	//go:embed snapshot.lua
	snapshotLua string
	//go:embed wait.lua
	waitLua string
	//go:embed leave.lua
	leaveLua string
	//go:embed session.lua
	sessionLua string
	//go:embed free_token.lua
	freeTokenLua string
)

// poolScript joins an operation to the fence and pool preludes, so that
// every script moves resources between states the same way.
func poolScript(name, src string) *script.Script {
	return script.New(name, script.FencePrelude+poolLua+src)
}

// The scripts are immutable after package initialisation.
var (
	mallocScript       = poolScript("malloc.lua", mallocLua)
	mallocSharedScript = poolScript("malloc_shared.lua", mallocSharedLua)
	freeScript         = poolScript("free.lua", freeLua)
	renewScript        = poolScript("renew.lua", renewLua)
	freeKeysScript     = poolScript("free_keys.lua", freeKeysLua)
	extendScript       = poolScript("extend.lua", extendLua)
	shrinkScript       = poolScript("shrink.lua", shrinkLua)
	quarantineScript   = poolScript("quarantine.lua", quarantineLua)
	priorityScript     = poolScript("priority.lua", priorityLua)
	gcScript           = poolScript("gc.lua", gcLua)
	bindScript         = poolScript("bind.lua", bindLua)
	membersScript      = poolScript("members.lua", membersLua)
	snapshotScript     = poolScript("snapshot.lua", snapshotLua)
	waitScript         = poolScript("wait.lua", waitLua)
	leaveScript        = poolScript("leave.lua", leaveLua)
	sessionScript      = poolScript("session.lua", sessionLua)
	freeTokenScript    = poolScript("free_token.lua", freeTokenLua)
)
