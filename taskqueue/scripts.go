package taskqueue

import (
	_ "embed"

	"github.com/redisallocator/redisallocator/internal/script"
)

var (
	//go:embed queue.lua
	queueLua string
	//go:embed submit.lua
	submitLua string
	//go:embed claim.lua
	claimLua string
	//go:embed extend.lua
	extendLua string
	//go:embed complete.lua
	completeLua string
	//go:embed progress.lua
	progressLua string
	//go:embed look.lua
	lookLua string
	//go:embed cancel.lua
	cancelLua string
	//go:embed steal.lua
	stealLua string
	//go:embed requeue.lua
	requeueLua string
	//go:embed stats.lua
	statsLua string
	//go:embed dead.lua
	deadLua string
)

// withPrelude joins queue.lua before an operation's script.
func withPrelude(name, src string) *script.Script {
	return script.New(name, queueLua+src)
}

var (
	submitScript   = withPrelude("submit.lua", submitLua)
	claimScript    = withPrelude("claim.lua", claimLua)
	extendScript   = withPrelude("extend.lua", extendLua)
	completeScript = withPrelude("complete.lua", completeLua)
	progressScript = withPrelude("progress.lua", progressLua)
	lookScript     = withPrelude("look.lua", lookLua)
	cancelScript   = withPrelude("cancel.lua", cancelLua)
	stealScript    = withPrelude("steal.lua", stealLua)
	requeueScript  = withPrelude("requeue.lua", requeueLua)
	statsScript    = withPrelude("stats.lua", statsLua)
	deadScript     = withPrelude("dead.lua", deadLua)
)
