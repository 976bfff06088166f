//go:build !linux

package redirect

import (
	"errors"
	"runtime"
)

var errNotSupported = errors.New("redirect: not supported on " + runtime.GOOS + ": the rules are Linux nftables")

// Apply is not supported off Linux.
func Apply(o *Options) error { return errNotSupported }

// Clean is not supported off Linux.
func Clean() error { return errNotSupported }
