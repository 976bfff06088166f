//go:build unix

package sidecar

import (
	"syscall"
	"testing"
)

func TestRaiseNoFile(t *testing.T) {
	got, err := raiseNoFile()
	if err != nil {
		t.Fatal(err)
	}
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatal(err)
	}
	if got != l.Max || l.Cur != l.Max {
		t.Errorf("raiseNoFile = %d; limit now %d of hard %d, want the soft limit raised to the hard one", got, l.Cur, l.Max)
	}
}
