//go:build linux

package redistest

import "syscall"

// sysProcAttr makes the kernel SIGKILL the server if the test binary dies
// without running its cleanups (e.g. a panic or a timeout), so that no
// redis-server is left orphaned.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
