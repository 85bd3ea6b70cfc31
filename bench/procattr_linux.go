//go:build linux

package bench

import "syscall"

// childProcAttr makes the server receive SIGTERM when the thread that started
// it ends, which happens only after the server exited or this program died.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
