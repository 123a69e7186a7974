package browsertest

import "syscall"

// sysProcAttr makes the kernel kill a process if the test binary dies
// first.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
