//go:build unix

package modelrt

import (
	"syscall"
	"time"
)

// fineSleep sleeps d in the kernel (nanosleep), blocking the OS thread.
// It may return early when a signal interrupts it.
func fineSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}
