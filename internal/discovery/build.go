package discovery

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/batchmesh/batchmesh/internal/config"
)

// The labels and annotations discovery reads.
const (
	// LabelModel on a Service names the model its endpoints serve.
	LabelModel = "batchmesh.io/model"
	// LabelVersion on a Service names the version; the Service's name
	// when absent.
	LabelVersion = "batchmesh.io/version"
	// AnnotationWeight on a Service is the version's share of the model's
	// traffic (config.Version.Weight): an integer, 0 or more; default 1.
	AnnotationWeight = "batchmesh.io/weight"
	// AnnotationSlots on a Service is how many batches each of its
	// endpoints runs at once (config.Endpoint.Slots): 1 or more; default 1.
	AnnotationSlots = "batchmesh.io/slots"
	// LabelServiceName is the label Kubernetes puts on an EndpointSlice
	// naming its Service.
	LabelServiceName = discoveryv1.LabelServiceName
	// PortHTTP is the port name chosen when no port is named after the
	// model's protocol.
	PortHTTP = "http"
)

// Found is what discovery found: per model, its versions with at least
// one ready endpoint, sorted by version; endpoints are sorted by address.
// Skipped lists what was left out and why, one line each, sorted.
type Found struct {
	Models  map[string][]config.Version
	Skipped []string
}

// key names one version of a model.
type key struct{ model, version string }

// acc gathers the endpoints of one version over its Services and slices.
type acc struct {
	weight int
	eps    map[string]config.Endpoint // by address
	from   string                     // the first Service, namespace/name
	svc    map[string]bool            // the Services' ClusterIP addresses, ip:port
}

// Build turns labelled Services and their EndpointSlices into versions and
// endpoints. protocol returns the protocol of a model (config.ProtocolV2
// for one the file does not list): a slice's port is the one named after
// it, else the one named PortHTTP, else its only port.
//
// An endpoint is healthy when ready, draining (config.Endpoint.Draining)
// when serving and terminating, and absent otherwise; an address listed
// by several slices counts once, healthy if any lists it ready. FQDN
// slices, slices without a usable port and Services with bad labels or
// annotations are skipped, as are endpoints whose address is not an IP
// address (Found.Skipped says why).
//
// A version's ServiceAddresses are the ClusterIPs of its Services
// (spec.clusterIPs; headless Services have none) at the Service port
// chosen as a slice's is, so that a sidecar capturing a call to the
// Service batches it. A version with no
// healthy endpoint is left out: its draining ones finish their work as
// the sidecars retire the version.
//
// Build keeps nothing of its arguments; it is a pure function.
func Build(services []*corev1.Service, eps []*discoveryv1.EndpointSlice, protocol func(model string) string) Found {
	f := Found{Models: map[string][]config.Version{}}
	byService := map[string][]*discoveryv1.EndpointSlice{} // namespace/name → its slices
	for _, s := range eps {
		name := s.Labels[LabelServiceName]
		if name == "" {
			continue
		}
		id := s.Namespace + "/" + name
		byService[id] = append(byService[id], s)
	}
	services = slices.Clone(services)
	slices.SortFunc(services, func(a, b *corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	versions := map[key]*acc{}
	for _, svc := range services {
		id := svc.Namespace + "/" + svc.Name
		k, weight, slots, err := serviceVersion(svc)
		if err != nil {
			f.Skipped = append(f.Skipped, fmt.Sprintf("service %s: %v", id, err))
			continue
		}
		a := versions[k]
		if a == nil {
			a = &acc{weight: weight, eps: map[string]config.Endpoint{}, from: id, svc: map[string]bool{}}
			versions[k] = a
		} else if a.weight != weight {
			f.Skipped = append(f.Skipped, fmt.Sprintf("service %s: annotation %s: %d differs from %d on service %s, which is also version %q of model %q; using %d",
				id, AnnotationWeight, weight, a.weight, a.from, k.version, k.model, a.weight))
		}
		proto := protocol(k.model)
		addrs, why := serviceAddresses(svc, proto)
		if why != "" {
			f.Skipped = append(f.Skipped, fmt.Sprintf("service %s: its cluster IP is not used: %s", id, why))
		}
		for _, addr := range addrs {
			a.svc[addr] = true
		}
		for _, s := range byService[id] {
			if why := addSlice(a.eps, s, proto, slots); why != "" {
				f.Skipped = append(f.Skipped, fmt.Sprintf("endpointslice %s/%s of service %s: %s", s.Namespace, s.Name, id, why))
			}
		}
	}
	for k, a := range versions {
		v := config.Version{Version: k.version, Weight: a.weight}
		ready := false
		for _, e := range a.eps {
			v.Endpoints = append(v.Endpoints, e)
			ready = ready || !e.Draining
		}
		if !ready {
			continue
		}
		slices.SortFunc(v.Endpoints, func(a, b config.Endpoint) int { return cmp.Compare(a.Address, b.Address) })
		if len(a.svc) > 0 {
			v.ServiceAddresses = slices.Sorted(maps.Keys(a.svc))
		}
		f.Models[k.model] = append(f.Models[k.model], v)
	}
	for _, vs := range f.Models {
		slices.SortFunc(vs, func(a, b config.Version) int { return cmp.Compare(a.Version, b.Version) })
	}
	slices.Sort(f.Skipped)
	return f
}

// serviceVersion reads a Service's model, version, weight and slots.
func serviceVersion(svc *corev1.Service) (key, int, int, error) {
	k := key{model: svc.Labels[LabelModel], version: svc.Labels[LabelVersion]}
	if k.version == "" {
		k.version = svc.Name
	}
	weight, err := annotationInt(svc, AnnotationWeight, config.DefaultWeight, 0)
	if err != nil {
		return key{}, 0, 0, err
	}
	slots, err := annotationInt(svc, AnnotationSlots, config.DefaultSlots, 1)
	if err != nil {
		return key{}, 0, 0, err
	}
	// The names must make a valid config on their own: check them with
	// the rules of the file.
	probe := &config.Config{CacheBytes: config.DefaultCacheBytes, Weights: config.WeightsStatic, Models: []config.Model{{
		Name: k.model, Protocol: config.ProtocolV2, Batching: config.DefaultBatching(), Cache: config.DefaultCache(),
		Versions: []config.Version{{Version: k.version, Weight: 1, Endpoints: []config.Endpoint{{Address: "192.0.2.1:1", Weight: 1, Slots: 1}}}},
	}}}
	if err := probe.Validate(); err != nil {
		return key{}, 0, 0, fmt.Errorf("label %s=%q or %s=%q: %w", LabelModel, k.model, LabelVersion, k.version, err)
	}
	return k, weight, slots, nil
}

// annotationInt reads an integer annotation of at least lowest, or def
// when absent.
func annotationInt(svc *corev1.Service, name string, def, lowest int) (int, error) {
	s, ok := svc.Annotations[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lowest || n > config.MaxWeightSum {
		return 0, fmt.Errorf("annotation %s: %q is not an integer from %d to %d", name, s, lowest, config.MaxWeightSum)
	}
	return n, nil
}

// addSlice adds the endpoints of one slice to eps; it returns why the
// slice is skipped, or "".
func addSlice(eps map[string]config.Endpoint, s *discoveryv1.EndpointSlice, protocol string, slots int) string {
	if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
		return fmt.Sprintf("address type %s; only IPv4 and IPv6 are used", s.AddressType)
	}
	port, why := slicePort(s.Ports, protocol)
	if why != "" {
		return why
	}
	var bad []string
	for _, e := range s.Endpoints {
		if len(e.Addresses) == 0 {
			continue
		}
		// Kubernetes uses the first address only.
		ip, err := netip.ParseAddr(e.Addresses[0])
		if err != nil || ip.Zone() != "" {
			bad = append(bad, strconv.Quote(e.Addresses[0]))
			continue
		}
		ready := e.Conditions.Ready == nil || *e.Conditions.Ready // nil: unknown, taken as ready
		serving := ready
		if e.Conditions.Serving != nil {
			serving = *e.Conditions.Serving
		}
		terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
		var draining bool
		switch {
		case ready && !terminating:
		case serving && terminating:
			draining = true
		default:
			continue // not ready: absent
		}
		addr := net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
		if old, dup := eps[addr]; dup && !old.Draining {
			continue
		}
		zone := ""
		if e.Zone != nil {
			zone = *e.Zone
		}
		eps[addr] = config.Endpoint{Address: addr, Weight: config.DefaultWeight, Slots: slots, Zone: zone, Draining: draining}
	}
	if len(bad) > 0 {
		return fmt.Sprintf("endpoints with addresses %s left out: not IP addresses", strings.Join(bad, ", "))
	}
	return ""
}

// slicePort picks the port named protocol, else PortHTTP, else the only
// port; it returns why none fits otherwise.
func slicePort(ports []discoveryv1.EndpointPort, protocol string) (int32, string) {
	var usable []discoveryv1.EndpointPort
	for _, p := range ports {
		if p.Port == nil || *p.Port < 1 || *p.Port > 65535 || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
			continue
		}
		usable = append(usable, p)
	}
	for _, want := range []string{protocol, PortHTTP} {
		for _, p := range usable {
			if p.Name != nil && *p.Name == want {
				return *p.Port, ""
			}
		}
	}
	if len(usable) == 1 {
		return *usable[0].Port, ""
	}
	return 0, fmt.Sprintf("%d TCP ports and none named %q or %q; name the runtime's port one of them", len(usable), protocol, PortHTTP)
}

// serviceAddresses returns the ip:port addresses of a Service's cluster
// IPs at its port for protocol (chosen as slicePort does), none for a
// headless or ExternalName Service; with why a Service that has cluster
// IPs gives none.
func serviceAddresses(svc *corev1.Service, protocol string) ([]string, string) {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var usable []netip.Addr
	var bad []string
	for _, s := range ips {
		if s == corev1.ClusterIPNone || s == "" {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			bad = append(bad, strconv.Quote(s))
			continue
		}
		usable = append(usable, ip)
	}
	var why []string
	if len(bad) > 0 {
		why = append(why, fmt.Sprintf("cluster IPs %s are not IP addresses", strings.Join(bad, ", ")))
	}
	if len(usable) == 0 {
		return nil, strings.Join(why, "; ")
	}
	ports := make([]discoveryv1.EndpointPort, len(svc.Spec.Ports))
	for i, p := range svc.Spec.Ports {
		ports[i] = discoveryv1.EndpointPort{Name: &p.Name, Protocol: &p.Protocol, Port: &p.Port}
		if p.Protocol == "" {
			ports[i].Protocol = nil
		}
	}
	port, whyPort := slicePort(ports, protocol)
	if whyPort != "" {
		return nil, strings.Join(append(why, "service ports: "+whyPort), "; ")
	}
	out := make([]string, len(usable))
	for i, ip := range usable {
		out[i] = net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
	}
	return out, strings.Join(why, "; ")
}
