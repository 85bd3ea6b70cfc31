//go:build linux

package redistest

import "syscall"

// sysProcAttr makes a server receive SIGTERM when the test binary dies, so servers
// do not linger after a test binary is killed or exits without Main.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
