package main

import (
	"log/slog"
	"net"
)

// warnIfExposed logs a warning when what, served in plaintext with no
// authentication, listens beyond loopback: whoever reaches it reads the
// topology (ADS, /snapshot) or steers the adaptive weights (LRS). The
// defaults listen on 127.0.0.1; in a cluster the address is set on purpose,
// and the warning says what must protect it. Over TLS without client
// certificates it says, at info, that clients are not authenticated; with
// mutual TLS it says nothing.
func warnIfExposed(log *slog.Logger, what string, addr net.Addr, sec security) {
	switch sec {
	case mutualTLS:
		return
	case serverTLS:
		log.Info("TLS without client certificates: the connection is private, but anyone who can reach it can read the models and endpoints, and LRS load reports are unauthenticated; add -client-ca to require client certificates",
			"listener", what, "address", addr.String())
		return
	}
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || tcp.IP.IsLoopback() {
		return
	}
	log.Warn("plaintext listener beyond loopback: anyone who can reach it can read the models and endpoints, and (LRS) post load reports that steer adaptive weights; use -tls-cert, -tls-key and -client-ca, or restrict it with a network policy",
		"listener", what, "address", addr.String())
}
