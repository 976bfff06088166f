//go:build !linux

package capture

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
)

// OriginalDst is not supported off Linux: every connection is served as an
// explicit call.
func OriginalDst(*net.TCPConn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("capture: original destination: not supported on " + runtime.GOOS)
}
