package redistest

import (
	"os/exec"
	"runtime"
	"sync"
)

// On Linux, the parent-death signal set by sysProcAttr is delivered when the OS thread
// that forked the child exits, not when the process does. Go may end an OS thread while
// the process lives on (when a goroutine locked to it exits), so servers are forked from
// one dedicated thread that is never released and lives as long as the test binary.

// spawner owns the dedicated thread that starts server processes.
var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

// spawnReq asks the spawner thread to start cmd and report the result on done.
type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// startCmd starts cmd from the dedicated spawner thread.
func startCmd(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		go spawnLoop(spawner.reqs)
	})
	done := make(chan error, 1)
	spawner.reqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}

// spawnLoop serves start requests on a locked OS thread. It never returns, so the
// thread (and with it the parent-death signal of its children) lasts until the process exits.
func spawnLoop(reqs <-chan spawnReq) {
	runtime.LockOSThread() // deliberately never unlocked
	for r := range reqs {
		r.done <- r.cmd.Start()
	}
}
