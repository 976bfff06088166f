// Package capture is the sidecar's transparent listener: the connections
// that `sidecar redirect`'s NAT rules send to the capture port, with their
// original destination read back from conntrack (SO_ORIGINAL_DST, and
// IP6T_SO_ORIGINAL_DST for IPv6).
//
// A Listener sniffs each connection's first bytes:
//
//   - HTTP/1.x goes to the sidecar's HTTP server as a *Conn that carries its
//     original destination. There the Router sends a request the proxy
//     serves (its path names a configured model and its Host or original
//     destination is one of that model's endpoints; see Matcher) to the
//     usual proxy handler, and forwards any other request unchanged to the
//     original destination;
//   - anything else (TLS, HTTP/2 prior knowledge, a database protocol, or
//     nothing within SniffTimeout: a server-speaks-first protocol) is
//     spliced to the original destination, byte for byte, both ways, with
//     half-close;
//   - a connection whose original destination is the sidecar itself (or
//     that was not redirected) is an explicit call, served as usual.
//
// The sidecar's own connections to runtimes and original destinations are
// not captured because the rules skip its user (redirect -proxy-uid).
//
// docs/capture.md describes capture end to end.
package capture
