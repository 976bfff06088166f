package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// A checker applies the semantic checks shared by Parse and Validate. With
// lines from a decoder its errors carry the file and line of the key path;
// without, from Validate, they carry the path alone.
type checker struct {
	file   string
	lines  map[string]int // key path → line; nil from Validate
	failed []string       // key paths the decoder could not decode
	errs   []*Error
	// partial lets a file list no models, and a model no versions
	// (LoadPartial).
	partial bool
}

// line returns the line of path, or of its nearest ancestor with one.
func (c *checker) line(path string) int {
	if c.lines == nil {
		return 0
	}
	for {
		if l, ok := c.lines[path]; ok {
			return l
		}
		if path == "" {
			return 0
		}
		path = parent(path)
	}
}

// at names path for a message, with its line when known: "models[0]" or
// "models[0] (line 4)".
func (c *checker) at(path string) string {
	if l := c.line(path); l > 0 {
		return fmt.Sprintf("%s (line %d)", path, l)
	}
	return path
}

// errorf reports a problem at path, unless the decoder already reported a
// problem at, under or above path: what it decoded there is incomplete.
func (c *checker) errorf(path, format string, args ...any) {
	for _, f := range c.failed {
		if within(path, f) || within(f, path) {
			return
		}
	}
	c.errs = append(c.errs, errorf(c.file, c.line(path), path, format, args...))
}

// within reports whether path is outer or lies under it.
func within(path, outer string) bool {
	if outer == "" || path == outer {
		return true
	}
	return len(path) > len(outer) && strings.HasPrefix(path, outer) &&
		(path[len(outer)] == '.' || path[len(outer)] == '[')
}

func (c *checker) config(cfg *Config) {
	if cfg.CacheBytes < 0 {
		c.errorf("cache_bytes", "%d is negative; must be 0 or more", cfg.CacheBytes)
	}
	c.oneOf("weights", cfg.Weights, "weights mode", WeightsStatic, WeightsAdaptive)
	c.outlier(cfg.OutlierDetection, "outlier_detection")
	if len(cfg.Models) == 0 && !c.partial {
		c.errorf("models", "at least one model is required")
	}
	names := make(map[string]string) // name → path of the model that has it
	for i := range cfg.Models {
		m := &cfg.Models[i]
		path := index("models", i)
		if reason := checkName(m.Name); reason != "" {
			c.errorf(path+".name", "%s", reason)
		} else if first, dup := names[m.Name]; dup {
			c.errorf(path+".name", "duplicate model name %s; %s has it too", quote(m.Name), c.at(first))
		} else {
			names[m.Name] = path
		}
		c.model(cfg, m, path)
	}
}

func (c *checker) model(cfg *Config, m *Model, path string) {
	c.oneOf(path+".protocol", m.Protocol, "protocol", ProtocolV2, ProtocolOpenAI, ProtocolTFServing)

	b, bp := m.Batching, path+".batching"
	if b.MaxBatchSize < 0 {
		c.errorf(bp+".max_batch_size", "%d is negative; must be 0 (no batching) or more", b.MaxBatchSize)
	}
	switch {
	case b.MaxQueueSize < 0:
		c.errorf(bp+".max_queue_size", "%d is negative; must be 1 or more", b.MaxQueueSize)
	case b.MaxQueueSize == 0 && b.MaxBatchSize != 0:
		c.errorf(bp+".max_queue_size", "0 leaves no room to queue; must be 1 or more while batching (max_batch_size > 0)")
	}
	if b.MaxQueueDelay < 0 {
		c.errorf(bp+".max_queue_delay", "%v is negative; must be 0 or more", b.MaxQueueDelay)
	}
	if b.Policy != "" { // "" (a Config built in code) is the default
		c.oneOf(bp+".batch_policy", b.Policy, "batch policy", BatchPolicyCohort, BatchPolicyTransit)
	}
	c.positive(bp+".timeout", b.Timeout)

	c.resilience(m, path)

	cp := path + ".cache"
	c.positive(cp+".ttl", m.Cache.TTL)
	c.oneOf(cp+".granularity", m.Cache.Granularity, "cache granularity", GranularityRow, GranularityRequest)
	c.oneOf(cp+".scope", m.Cache.Scope, "cache scope", ScopeShared, ScopeTenant)
	if m.Cache.Enabled && cfg.CacheBytes == 0 {
		c.errorf(cp+".enabled", "the cache is on, but cache_bytes is 0 (no row cache); set cache_bytes or turn the cache off")
	}

	vp := path + ".versions"
	if len(m.Versions) == 0 {
		if !c.partial {
			c.errorf(vp, "at least one version is required")
		}
		return
	}
	seen := make(map[string]string) // version → path of the version that has it
	weights := make([]int, len(m.Versions))
	for j := range m.Versions {
		v := &m.Versions[j]
		p := index(vp, j)
		weights[j] = v.Weight
		if reason := checkVersion(v.Version); reason != "" {
			c.errorf(p+".version", "%s", reason)
		} else if first, dup := seen[v.Version]; dup {
			c.errorf(p+".version", "duplicate version %s; %s has it too", quote(v.Version), c.at(first))
		} else {
			seen[v.Version] = p
		}
		c.version(v, p)
		c.endpointProtocols(m, v, p)
	}
	c.weights(vp, "version", weights)
}

func (c *checker) version(v *Version, path string) {
	ep := path + ".endpoints"
	if len(v.Endpoints) == 0 {
		c.errorf(ep, "at least one endpoint is required")
		return
	}
	seen := make(map[string]string) // address → path of the endpoint that has it
	weights := make([]int, len(v.Endpoints))
	for k := range v.Endpoints {
		e := &v.Endpoints[k]
		p := index(ep, k)
		weights[k] = e.Weight
		if reason := checkAddress(e.Address); reason != "" {
			c.errorf(p+".address", "%s", reason)
		} else if first, dup := seen[e.Address]; dup {
			c.errorf(p+".address", "duplicate address %s; %s has it too", quote(e.Address), c.at(first))
		} else {
			seen[e.Address] = p
		}
		if e.Slots < 1 {
			c.errorf(p+".slots", "%d is too few; must be 1 or more", e.Slots)
		}
	}
	c.weights(ep, "endpoint", weights)
	for k, a := range v.ServiceAddresses {
		if reason := checkServiceAddress(a); reason != "" {
			c.errorf(index(path+".service_addresses", k), "%s", reason)
		}
	}
}

// checkServiceAddress returns why addr is not an IP address and a port
// from 1 to 65535, or "".
func checkServiceAddress(addr string) string {
	if reason := checkAddress(addr); reason != "" {
		return reason
	}
	host, _, _ := net.SplitHostPort(addr)
	if ip, err := netip.ParseAddr(host); err != nil || ip.Zone() != "" {
		return fmt.Sprintf("%s: the host %s is not an IP address; a service address is ip:port", quote(addr), quote(host))
	}
	return ""
}

// endpointProtocols checks each endpoint's protocol: http (or unset) or
// grpc, and grpc only for a v2 model.
func (c *checker) endpointProtocols(m *Model, v *Version, path string) {
	for k := range v.Endpoints {
		e := &v.Endpoints[k]
		p := index(path+".endpoints", k) + ".protocol"
		switch e.Protocol {
		case "", EndpointHTTP:
		case EndpointGRPC:
			if m.Protocol != ProtocolV2 {
				c.errorf(p, "grpc serves v2 models only; model protocol is %s, so the endpoint must be http", quote(m.Protocol))
			}
		default:
			c.errorf(p, "%s is not an endpoint protocol; must be http or grpc", quote(e.Protocol))
		}
	}
}

// weights checks the weights of the elements of the list at path, and
// their sum.
func (c *checker) weights(path, what string, weights []int) {
	var sum int64
	ok := true
	for i, w := range weights {
		switch {
		case w < 0:
			c.errorf(index(path, i)+".weight", "%d is negative; must be 0 or more", w)
			ok = false
		case int64(w) > MaxWeightSum:
			c.errorf(index(path, i)+".weight", "%d is too large; must be at most %d", w, int64(MaxWeightSum))
			ok = false
		default:
			sum += int64(w)
		}
	}
	switch {
	case !ok:
	case sum == 0:
		c.errorf(path, "the %s weights sum to 0; give at least one %s a weight above 0", what, what)
	case sum > MaxWeightSum:
		c.errorf(path, "the %s weights sum to %d; the sum must be at most %d", what, sum, int64(MaxWeightSum))
	}
}

// oneOf checks that the value at path is one of allowed.
func (c *checker) oneOf(path, value, what string, allowed ...string) {
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	list := strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
	c.errorf(path, "%s is not a %s; must be %s", quote(value), what, list)
}

// positive checks that the duration at path is more than 0.
func (c *checker) positive(path string, d time.Duration) {
	switch {
	case d < 0:
		c.errorf(path, "%v is negative; must be more than 0", d)
	case d == 0:
		c.errorf(path, "0s is too short; must be more than 0")
	}
}

// checkName returns why name is not a valid model name, or "".
func checkName(name string) string {
	if name == "" {
		return "required; a model needs a name"
	}
	if name == "." || name == ".." {
		return quote(name) + " is not a name; a name must not be . or .."
	}
	for _, r := range name {
		if !isAlnum(r) && r != '.' && r != '_' && r != '-' {
			return fmt.Sprintf("%s has %s; a name may hold only A-Z, a-z, 0-9, '.', '_' and '-'", quote(name), describeRune(r))
		}
	}
	return ""
}

// checkVersion returns why v is not a valid version string, or "".
func checkVersion(v string) string {
	if v == "" {
		return "required; a version needs a version string"
	}
	if v == "." || v == ".." {
		return quote(v) + " is not a version; a version must not be . or .."
	}
	for _, r := range v {
		if r == '/' || r == '|' || unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return fmt.Sprintf("%s has %s; a version must not hold '/', '|', spaces or control characters", quote(v), describeRune(r))
		}
	}
	return ""
}

func describeRune(r rune) string {
	if unicode.IsPrint(r) && r != ' ' {
		return strconv.QuoteRune(r)
	}
	return fmt.Sprintf("the character %U", r)
}

// checkAddress returns why addr is not a valid host:port, or "".
func checkAddress(addr string) string {
	if addr == "" {
		return "required; an endpoint needs an address, host:port"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			reason = ae.Err
		}
		return fmt.Sprintf("%s is not host:port: %s", quote(addr), reason)
	}
	if host == "" {
		return fmt.Sprintf("%s has no host; write e.g. 127.0.0.1%s", quote(addr), addr)
	}
	for _, r := range host {
		if r <= ' ' || r == 0x7f || strings.ContainsRune("/?#@|", r) || r == unicode.ReplacementChar {
			return fmt.Sprintf("%s: the host has %s", quote(addr), describeRune(r))
		}
	}
	n := 0
	for _, r := range port {
		if r < '0' || r > '9' {
			return fmt.Sprintf("%s: the port %s is not a number; must be 1-65535", quote(addr), quote(port))
		}
		if n = n*10 + int(r-'0'); n > 65535 {
			break
		}
	}
	if port == "" || n < 1 || n > 65535 {
		return fmt.Sprintf("%s: the port %s is out of range; must be 1-65535", quote(addr), quote(port))
	}
	return ""
}
