package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Defaults of Options, the same as the sidecar's listener and user.
const (
	DefaultProxyPort = 15001
	DefaultProxyUID  = 1337
	// DefaultPriority puts the batchmesh chain just before the standard
	// destination NAT priority (-100, where iptables' nat OUTPUT chain and
	// Istio's rules sit), so that batchmesh sees a connection first; the
	// first NAT chain that redirects a connection decides where it goes.
	DefaultPriority = -110
)

// TableName is the one nftables table (family inet) the rules live in.
const TableName = "batchmesh"

// PortRange is an inclusive range of TCP ports; a single port has
// First == Last.
type PortRange struct{ First, Last uint16 }

func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// Options are the redirect rules' settings: sidecar redirect's flags.
type Options struct {
	// Ports are the captured destination ports; AllPorts captures every
	// TCP port instead (-ports '*'). One of the two is required.
	Ports    []PortRange
	AllPorts bool
	// ExcludePorts are destination ports never captured (with AllPorts,
	// e.g. a database the application reaches directly).
	ExcludePorts []PortRange
	// IncludeCIDRs, when set, limit capture to these destinations (IPv4
	// and IPv6 apart: an IPv4-only list captures no IPv6 traffic).
	// ExcludeCIDRs are never captured. 127.0.0.1 and ::1 never are.
	IncludeCIDRs, ExcludeCIDRs []netip.Prefix
	// ProxyPort is the sidecar's capture listener port.
	ProxyPort uint16
	// ProxyUID is the sidecar's user, whose own connections (to the
	// runtimes) are never captured; ProxyGID, when not negative, skips a
	// group too. ExcludeUIDs skips other users, e.g. Envoy's 1337 beside
	// Istio.
	ProxyUID    uint32
	ProxyGID    int64
	ExcludeUIDs []uint32
	// Priority is the NAT chain's priority; see DefaultPriority.
	Priority int32
}

// Validate reports the first setting that makes no sense, naming its flag.
func (o *Options) Validate() error {
	if !o.AllPorts && len(o.Ports) == 0 {
		return errors.New("redirect: -ports is required: a list like 8000,8080 or 8000-8100, or * for every TCP port")
	}
	if o.AllPorts && len(o.Ports) > 0 {
		return errors.New("redirect: -ports: * cannot be combined with other ports")
	}
	if o.ProxyPort == 0 {
		return errors.New("redirect: -proxy-port: want a port from 1 to 65535")
	}
	for _, r := range o.Ports {
		if r.First <= o.ProxyPort && o.ProxyPort <= r.Last {
			return fmt.Errorf("redirect: -ports %s includes -proxy-port %d: connections to the sidecar would be redirected to itself", r, o.ProxyPort)
		}
	}
	if o.ProxyGID < -1 || o.ProxyGID > 1<<32-1 {
		return fmt.Errorf("redirect: -proxy-gid %d: want a group id from 0 to 4294967295, or -1 for none", o.ProxyGID)
	}
	return nil
}

// ParsePorts parses a comma-separated list of ports and ranges
// ("8000,8080,9000-9100"), or "*" for every port (all true). Spaces around
// items are allowed; an empty string is an empty list.
func ParsePorts(s string) (ports []PortRange, all bool, err error) {
	if strings.TrimSpace(s) == "*" {
		return nil, true, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			if strings.TrimSpace(s) == "" {
				return nil, false, nil
			}
			return nil, false, fmt.Errorf("empty item in %q: want ports like 8000,8080 or ranges like 9000-9100", s)
		}
		r, err := parsePortRange(item)
		if err != nil {
			return nil, false, err
		}
		ports = append(ports, r)
	}
	return ports, false, nil
}

func parsePortRange(item string) (PortRange, error) {
	first, last, isRange := strings.Cut(item, "-")
	a, err := parsePort(first)
	if err != nil {
		return PortRange{}, fmt.Errorf("%q: %w", item, err)
	}
	if !isRange {
		return PortRange{a, a}, nil
	}
	b, err := parsePort(last)
	if err != nil {
		return PortRange{}, fmt.Errorf("%q: %w", item, err)
	}
	if b < a {
		return PortRange{}, fmt.Errorf("%q: range ends before it starts", item)
	}
	return PortRange{a, b}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q: want a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// ParseCIDRs parses a comma-separated list of IPv4 and IPv6 prefixes
// ("10.0.0.0/8,fd00::/8"); a bare address is a one-address prefix. The
// prefixes are masked to their length. An empty string is an empty list.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		var p netip.Prefix
		var err error
		if strings.Contains(item, "/") {
			p, err = netip.ParsePrefix(item)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(item); err == nil && a.Zone() != "" {
				err = errors.New("zone")
			} else if err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%q: want an address or CIDR like 10.0.0.0/8 or fd00::/8", item)
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%q: IPv4-mapped IPv6 addresses are not supported; write the IPv4 form", item)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ParseUIDs parses a comma-separated list of numeric user ids.
func ParseUIDs(s string) ([]uint32, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []uint32
	for item := range strings.SplitSeq(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(item), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q: want numeric user ids like 1337,1338", item)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}
