package main

import (
	"log/slog"
	"net"
)

// warnIfExposed logs a warning when what, served in plaintext with no
// authentication, listens beyond loopback: whoever reaches it reads the
// topology (ADS, /snapshot) or steers the adaptive weights (LRS). The
// defaults listen on 127.0.0.1; in a cluster the address is set on purpose,
// and the warning says what must protect it.
func warnIfExposed(log *slog.Logger, what string, addr net.Addr) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || tcp.IP.IsLoopback() {
		return
	}
	log.Warn("plaintext listener beyond loopback: anyone who can reach it can read the models and endpoints, and (LRS) post load reports that steer adaptive weights; TLS is not supported yet, so restrict it with a network policy",
		"listener", what, "address", addr.String())
}
