package capture

import (
	"io"
	"net"
	"net/netip"
)

// splice connects client to dst and copies bytes both ways until both
// directions end: first held (what sniffing read), then the rest. When one
// side stops sending, the other side's write half is closed, so that a
// half-closed connection keeps working.
func (l *Listener) splice(client *net.TCPConn, held []byte, dst netip.AddrPort) {
	log := l.cfg.Logger.With("src", client.RemoteAddr().String(), "original_dst", dst.String())
	d := net.Dialer{Timeout: l.cfg.DialTimeout}
	c, err := d.Dial("tcp", dst.String())
	if err != nil {
		log.Debug("splice: cannot reach the original destination", "err", err)
		_ = client.SetLinger(0) // a reset, as the destination would have answered
		_ = client.Close()
		return
	}
	up := c.(*net.TCPConn)
	if !l.track(client, up) {
		_ = client.Close()
		_ = up.Close()
		return
	}
	log.Debug("splice")
	defer l.untrack(client, up)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if len(held) > 0 {
			if _, err := up.Write(held); err != nil {
				_ = client.CloseRead()
				_ = up.CloseWrite()
				return
			}
		}
		_, _ = io.Copy(up, client)
		_ = up.CloseWrite()
	}()
	_, _ = io.Copy(client, up)
	_ = client.CloseWrite()
	<-done
}

// track records a splice's connections so that Shutdown can close them;
// it reports false once Shutdown has closed them.
func (l *Listener) track(cs ...net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shut {
		return false
	}
	for _, c := range cs {
		l.splices[c] = struct{}{}
	}
	return true
}

func (l *Listener) untrack(cs ...net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cs {
		delete(l.splices, c)
		_ = c.Close()
	}
}
