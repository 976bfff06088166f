package xdsclient

import (
	"fmt"
	"maps"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Protocols of Config.Protocol.
const (
	ProtocolSotW  = "sotw"
	ProtocolDelta = "delta"
)

// sotwWire sends SotW requests: every request names the whole
// subscription of its type and the version last accepted.
type sotwWire struct {
	node *core.Node
	send func(*discovery.DiscoveryRequest) error
}

func (w sotwWire) request(t *typeState, names []string, version, nonce string, detail *status.Status) error {
	return w.send(&discovery.DiscoveryRequest{
		Node:          w.node,
		TypeUrl:       t.url,
		VersionInfo:   version,
		ResponseNonce: nonce,
		ResourceNames: names,
		ErrorDetail:   detail,
	})
}

// deltaWire sends delta (incremental) requests: the node on the stream's
// first request only; per type, the first request subscribes (a wildcard
// as "*") and says which resources the client already has, at which
// version, and later ones subscribe and unsubscribe the names that changed.
type deltaWire struct {
	node       *core.Node
	send       func(*discovery.DeltaDiscoveryRequest) error
	nodeSent   bool
	subscribed map[string][]string // by type URL, on this stream
}

func newDeltaWire(node *core.Node, send func(*discovery.DeltaDiscoveryRequest) error) *deltaWire {
	return &deltaWire{node: node, send: send, subscribed: map[string][]string{}}
}

func (w *deltaWire) request(t *typeState, names []string, _, nonce string, detail *status.Status) error {
	req := &discovery.DeltaDiscoveryRequest{TypeUrl: t.url, ResponseNonce: nonce, ErrorDetail: detail}
	if !w.nodeSent {
		req.Node, w.nodeSent = w.node, true
	}
	if names == nil {
		names = []string{"*"}
	}
	prev, started := w.subscribed[t.url]
	if started {
		req.ResourceNamesSubscribe = minus(names, prev)
		req.ResourceNamesUnsubscribe = minus(prev, names)
	} else {
		req.ResourceNamesSubscribe = names
		req.InitialResourceVersions = maps.Clone(t.versions)
	}
	w.subscribed[t.url] = names
	return w.send(req)
}

// minus returns the names of a that b lacks.
func minus(a, b []string) []string {
	in := make(map[string]bool, len(b))
	for _, n := range b {
		in[n] = true
	}
	var out []string
	for _, n := range a {
		if !in[n] {
			out = append(out, n)
		}
	}
	return out
}

// decode decodes a SotW response of type url.
func decode(url string, resp *discovery.DiscoveryResponse) (*response, error) {
	r := &response{version: resp.GetVersionInfo(), nonce: resp.GetNonce(), resources: map[string]proto.Message{}}
	for _, a := range resp.GetResources() {
		name, m, err := decodeAny(url, a)
		if err != nil {
			return nil, err
		}
		if _, dup := r.resources[name]; dup {
			return nil, fmt.Errorf("xdsclient: %s: resource %q twice", url, name)
		}
		r.resources[name] = m
	}
	return r, nil
}

// decodeDelta decodes a delta response of type url: the resources it adds
// or changes, with their versions.
func decodeDelta(url string, resp *discovery.DeltaDiscoveryResponse) (*response, error) {
	r := &response{
		version: resp.GetSystemVersionInfo(), nonce: resp.GetNonce(),
		resources: map[string]proto.Message{}, versions: map[string]string{},
	}
	for _, res := range resp.GetResources() {
		name, m, err := decodeAny(url, res.GetResource())
		if err != nil {
			return nil, err
		}
		if name != res.GetName() {
			return nil, fmt.Errorf("xdsclient: %s: resource %q holds %q", url, res.GetName(), name)
		}
		if _, dup := r.resources[name]; dup {
			return nil, fmt.Errorf("xdsclient: %s: resource %q twice", url, name)
		}
		r.resources[name], r.versions[name] = m, res.GetVersion()
	}
	return r, nil
}

// decodeAny decodes one resource of type url and returns its name.
func decodeAny(url string, a *anypb.Any) (string, proto.Message, error) {
	if a.GetTypeUrl() != url {
		return "", nil, fmt.Errorf("xdsclient: a resource of type %q in a response of type %q", a.GetTypeUrl(), url)
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return "", nil, fmt.Errorf("xdsclient: %s: %w", url, err)
	}
	var name string
	switch m := m.(type) {
	case *listener.Listener:
		name = m.GetName()
	case *route.RouteConfiguration:
		name = m.GetName()
	case *cluster.Cluster:
		name = m.GetName()
	case *endpoint.ClusterLoadAssignment:
		name = m.GetClusterName()
	}
	return name, m, nil
}

// overlay returns base with upd laid over it, less removed, and, if names
// is not nil, only the names it lists. base is not modified.
func overlay(base, upd map[string]proto.Message, removed, names []string) map[string]proto.Message {
	out := make(map[string]proto.Message, len(base)+len(upd))
	maps.Copy(out, base)
	maps.Copy(out, upd)
	for _, n := range removed {
		delete(out, n)
	}
	if names != nil {
		keep := make(map[string]bool, len(names))
		for _, n := range names {
			keep[n] = true
		}
		maps.DeleteFunc(out, func(n string, _ proto.Message) bool { return !keep[n] })
	}
	return out
}

// overlayVersions returns the resource versions of keep: from upd, or else
// from base. It returns nil if neither has any (SotW).
func overlayVersions(base, upd map[string]string, keep map[string]proto.Message) map[string]string {
	if base == nil && upd == nil {
		return nil
	}
	out := make(map[string]string, len(keep))
	for n := range keep {
		if v, ok := upd[n]; ok {
			out[n] = v
		} else if v, ok := base[n]; ok {
			out[n] = v
		}
	}
	return out
}

// receiveDelta decodes a delta response and holds it, merged into what
// the client has of its type. One that cannot be decoded is NACKed at once.
func (s *state) receiveDelta(resp *discovery.DeltaDiscoveryResponse) {
	t := s.typ(resp.GetTypeUrl())
	if t == nil {
		s.c.log.Warn("xds response of an unknown type", "type", resp.GetTypeUrl())
		return
	}
	r, err := decodeDelta(t.url, resp)
	s.hold(t, resp.GetSystemVersionInfo(), resp.GetNonce(), r, resp.GetRemovedResources(), err, true)
}
