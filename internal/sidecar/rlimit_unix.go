//go:build unix

package sidecar

import (
	"fmt"
	"syscall"
)

// raiseNoFile raises the soft file-descriptor limit to the hard one and
// returns the limit in force.
func raiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("sidecar: file-descriptor limit: %w", err)
	}
	if l.Cur < l.Max {
		raised := syscall.Rlimit{Cur: l.Max, Max: l.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return l.Cur, fmt.Errorf("sidecar: raise the file-descriptor limit to %d: %w", l.Max, err)
		}
		l.Cur = l.Max
	}
	return l.Cur, nil
}
