package capture

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// DefaultResolveTTL is how long Matcher keeps a host name's addresses.
const DefaultResolveTTL = 30 * time.Second

// Matcher maps a captured destination to the endpoint addresses of the
// configuration: a request matches an endpoint "host:port" when its Host
// header is that string, or when its original destination is host (an IP
// address, or a name — a Kubernetes Service — resolved to its addresses)
// at that port. The zero value is ready to use.
type Matcher struct {
	// Resolver resolves endpoint host names; nil is net.DefaultResolver.
	Resolver *net.Resolver
	// TTL keeps resolved addresses (and failures); default
	// DefaultResolveTTL.
	TTL time.Duration

	mu    sync.Mutex
	cache map[string]resolved
}

type resolved struct {
	addrs []netip.Addr
	at    time.Time
}

// Match reports whether host or dst names one of endpoints.
func (m *Matcher) Match(ctx context.Context, endpoints []string, host []byte, dst netip.AddrPort) bool {
	for _, ep := range endpoints {
		if ep == string(host) {
			return true
		}
	}
	for _, ep := range endpoints {
		h, p, err := net.SplitHostPort(ep)
		if err != nil {
			continue
		}
		port, err := strconv.ParseUint(p, 10, 16)
		if err != nil || uint16(port) != dst.Port() {
			continue
		}
		for _, a := range m.lookup(ctx, h) {
			if a == dst.Addr() {
				return true
			}
		}
	}
	return false
}

// lookup returns host's addresses, unmapped: host itself when it is an
// address, else its resolved addresses (cached for TTL).
func (m *Matcher) lookup(ctx context.Context, host string) []netip.Addr {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	ttl := m.TTL
	if ttl <= 0 {
		ttl = DefaultResolveTTL
	}
	m.mu.Lock()
	r, ok := m.cache[host]
	m.mu.Unlock()
	if ok && time.Since(r.at) < ttl {
		return r.addrs
	}
	res := m.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	addrs, _ := res.LookupNetIP(ctx, "ip", host)
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	m.mu.Lock()
	if m.cache == nil {
		m.cache = map[string]resolved{}
	}
	m.cache[host] = resolved{addrs: addrs, at: time.Now()}
	m.mu.Unlock()
	return addrs
}
