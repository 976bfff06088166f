//go:build !unix

package rawconn

import "net"

func wrap(c net.Conn) net.Conn { return c }
