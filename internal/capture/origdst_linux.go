//go:build linux

package capture

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The getsockopt options that return a redirected connection's original
// destination from conntrack (linux/netfilter_ipv4.h and
// linux/netfilter_ipv6/ip6_tables.h); golang.org/x/sys does not name them.
const (
	soOriginalDst     = 80 // SO_ORIGINAL_DST, level SOL_IP
	ip6tSoOriginalDst = 80 // IP6T_SO_ORIGINAL_DST, level SOL_IPV6
)

// OriginalDst returns the destination a redirected TCP connection was
// addressed to before NAT rewrote it. For a connection that was not
// redirected it returns the connection's own local address (conntrack's
// original tuple), or an error where conntrack has no entry.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("capture: original destination: %w", err)
	}
	local, _ := c.LocalAddr().(*net.TCPAddr)
	v4 := local != nil && local.IP.To4() != nil
	var dst netip.AddrPort
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v4 {
			dst, serr = originalDst4(int(fd))
		} else {
			dst, serr = originalDst6(int(fd))
		}
	})
	if err = errors.Join(err, serr); err != nil {
		return netip.AddrPort{}, fmt.Errorf("capture: original destination: %w", err)
	}
	return dst, nil
}

func originalDst4(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", err)
	}
	port := bits.ReverseBytes16(sa.Port) // network byte order
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}

func originalDst6(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet6
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSoOriginalDst, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, fmt.Errorf("IP6T_SO_ORIGINAL_DST: %w", err)
	}
	port := bits.ReverseBytes16(sa.Port)
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), nil
}

func getsockopt(fd, level, opt int, p unsafe.Pointer, size *uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(p), uintptr(unsafe.Pointer(size)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
