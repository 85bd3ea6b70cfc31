//go:build !linux

package redistest

import "syscall"

// sysProcAttr returns nil: parent-death signals are Linux-only, so elsewhere servers rely on Main.
func sysProcAttr() *syscall.SysProcAttr { return nil }
