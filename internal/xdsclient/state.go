package xdsclient

import (
	"errors"
	"fmt"
	"reflect"
	"slices"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/batchmesh/batchmesh/internal/config"
)

// Type URLs of the resources the client subscribes to.
const (
	typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	typeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// maxReasks bounds how often in a row the client asks again for load
// assignments that a response left out, against a server that keeps
// leaving them out.
const maxReasks = 2

// response is a decoded DiscoveryResponse or DeltaDiscoveryResponse: once
// held, the whole of its type as the client would have it on ACK.
type response struct {
	version, nonce string
	resources      map[string]proto.Message
	// versions are the resource versions of a delta response, by name.
	versions map[string]string
}

// typeState is the client's state of one resource type.
type typeState struct {
	url string

	// Kept across streams: the last accepted response, and the last
	// rejection since.
	accepted         map[string]proto.Message
	versions         map[string]string // delta: resource versions of accepted
	version, nonce   string
	rejected, reason string

	// Per stream.
	pending   *response // received, neither ACKed nor NACKed yet
	lastNonce string    // of the last response received
	sentNames []string  // of the last request sent
	reasks    int       // requests in a row for load assignments a response left out
	awaiting  bool      // the subscription changed; its answer has not come
}

// state is the ADS state machine of a Client. It is used by Run's
// goroutine only.
//
// Responses are held (neither ACKed nor NACKed) until the resources
// received so far, each type from its held response or else from its last
// accepted one, make a consistent config. That config is then applied and
// every held response ACKed, or, if it cannot be used, every held response
// NACKed. If a resource is missing that only a held response could supply,
// nothing more will arrive for it until the held responses are ACKed (the
// server waits for that), so they are ACKed without applying anything:
// the config is applied once the rest arrives. Responses of routes and
// load assignments (SotW) and every delta response carry changes only;
// they are merged into what the client has of their type.
type state struct {
	c     *Client
	apply ApplyFunc
	types []*typeState // in the order of typeListener, typeRoute, typeCluster, typeEndpoint

	wire    wire // the stream's requests: SotW or delta
	sendErr error

	applied     *config.Config // last config apply accepted
	rejectedCfg *config.Config // last config apply rejected
	rejectedErr error
}

func newState(c *Client, apply ApplyFunc) *state {
	s := &state{c: c, apply: apply}
	for _, url := range []string{typeListener, typeRoute, typeCluster, typeEndpoint} {
		s.types = append(s.types, &typeState{url: url})
	}
	return s
}

func (s *state) typ(url string) *typeState {
	for _, t := range s.types {
		if t.url == url {
			return t
		}
	}
	return nil
}

// wire sends the requests of one stream. A request of type t asks for
// names (nil: every resource of the type), and ACKs (detail nil) or NACKs
// the response of nonce; version is the last accepted version of t.
type wire interface {
	request(t *typeState, names []string, version, nonce string, detail *status.Status) error
}

// begin resets the per-stream state for a new stream that sends with w.
func (s *state) begin(w wire) {
	s.wire, s.sendErr = w, nil
	for _, t := range s.types {
		t.pending, t.lastNonce, t.sentNames, t.reasks, t.awaiting = nil, "", nil, 0, false
	}
}

// start sends the first request of each type, with the versions accepted on
// earlier streams.
func (s *state) start() error {
	for _, t := range s.types {
		if t.url == typeEndpoint && len(s.names(t)) == 0 {
			continue // asked for once the clusters are known
		}
		s.request(t, t.version, "", nil)
	}
	return s.sendErr
}

// names returns the resource names to request for t: the listener and
// the route by name, every cluster (wildcard), and the load assignments of
// the EDS clusters in view.
func (s *state) names(t *typeState) []string {
	switch t.url {
	case typeListener:
		return []string{OutboundListener}
	case typeRoute:
		return []string{RouteName}
	case typeEndpoint:
		return loadNames(s.view().clusters)
	}
	return nil // wildcard
}

func (s *state) request(t *typeState, version, nonce string, detail *status.Status) {
	names := s.names(t)
	if t.url == typeEndpoint && len(names) == 0 {
		// No cluster is known: keep the last subscription, since an empty
		// list would subscribe to every load assignment.
		if len(t.sentNames) == 0 {
			return
		}
		names = t.sentNames
	}
	if !slices.Equal(names, t.sentNames) {
		t.reasks = 0
	}
	t.sentNames = names
	if err := s.wire.request(t, names, version, nonce, detail); err != nil && s.sendErr == nil {
		s.sendErr = fmt.Errorf("xdsclient: send: %w", err)
	}
}

// receive decodes a SotW response and holds it. One that cannot be
// decoded is NACKed at once. Listeners and clusters come whole; a response
// of routes or load assignments holds only those that changed (SotW sends
// the full state of those two types only), so it is merged into what the
// client has of the type.
func (s *state) receive(resp *discovery.DiscoveryResponse) {
	t := s.typ(resp.GetTypeUrl())
	if t == nil {
		s.c.log.Warn("xds response of an unknown type", "type", resp.GetTypeUrl())
		return
	}
	r, err := decode(t.url, resp)
	s.hold(t, resp.GetVersionInfo(), resp.GetNonce(), r, nil, err, t.url == typeRoute || t.url == typeEndpoint)
}

// hold holds r, a response of type t, or NACKs it at once if it could not
// be decoded (err). With merge, r holds changes only: it is laid over what
// the client has of t (the held response, or else the accepted one), less
// removed, and restricted to the names subscribed.
func (s *state) hold(t *typeState, version, nonce string, r *response, removed []string, err error, merge bool) {
	t.lastNonce = nonce
	t.awaiting = false
	prev := t.pending
	t.pending = nil // superseded
	if err != nil {
		s.reject(t, version, err)
		s.request(t, t.version, nonce, nack(err))
		s.publish()
		return
	}
	if merge {
		base, versions := t.accepted, t.versions
		if prev != nil {
			base, versions = prev.resources, prev.versions
		}
		r.resources = overlay(base, r.resources, removed, t.sentNames)
		r.versions = overlayVersions(versions, r.versions, r.resources)
	}
	t.pending = r
}

// view returns the resources of each type: held, or else last accepted.
func (s *state) view() *view {
	get := func(url string) map[string]proto.Message {
		t := s.typ(url)
		if t.pending != nil {
			return t.pending.resources
		}
		return t.accepted
	}
	return &view{
		listeners: typed[*listener.Listener](get(typeListener)),
		routes:    typed[*route.RouteConfiguration](get(typeRoute)),
		clusters:  typed[*cluster.Cluster](get(typeCluster)),
		loads:     typed[*endpoint.ClusterLoadAssignment](get(typeEndpoint)),
	}
}

func typed[T proto.Message](in map[string]proto.Message) map[string]T {
	out := make(map[string]T, len(in))
	for name, m := range in {
		if v, ok := m.(T); ok {
			out[name] = v
		}
	}
	return out
}

// subscribe asks for the load assignments of the clusters in view when they
// differ from those last asked for, or when the held response of load
// assignments lacks some (it answered an earlier request).
func (s *state) subscribe() {
	t := s.typ(typeEndpoint)
	want := s.names(t)
	if len(want) == 0 {
		return
	}
	if t.pending != nil && hasAll(t.pending.resources, want) {
		t.reasks = 0
	}
	switch {
	case !slices.Equal(want, t.sentNames):
	case t.pending != nil && !hasAll(t.pending.resources, want) && t.reasks < maxReasks:
		t.reasks++
	default:
		return
	}
	// What is held of names no longer wanted goes; the answer for the new
	// names follows.
	if t.pending != nil {
		t.pending.resources = overlay(t.pending.resources, nil, nil, want)
	}
	t.awaiting = true
	s.request(t, t.version, t.lastNonce, nil)
}

func hasAll(m map[string]proto.Message, names []string) bool {
	for _, n := range names {
		if _, ok := m[n]; !ok {
			return false
		}
	}
	return true
}

// sync acts on the held responses: it applies and ACKs them, NACKs them, or
// keeps holding them while the resources that are missing may still come.
// It returns an error if a request could not be sent.
func (s *state) sync() error {
	s.subscribe()
	if !slices.ContainsFunc(s.types, func(t *typeState) bool { return t.pending != nil }) {
		return s.sendErr
	}
	cfg, err := translate(s.view())
	if inc, ok := errors.AsType[*incompleteError](err); ok {
		for _, url := range inc.types {
			if t := s.typ(url); t.pending == nil || t.awaiting {
				s.c.log.Debug("xds config incomplete; waiting", "missing", inc.what)
				return s.sendErr
			}
		}
		// Only held responses could supply what is missing, and the
		// server sends a type again only once its last response is ACKed
		// (or NACKed, which it would not send again). Each is valid on its
		// own: ACK them, keep the applied config, and apply once the rest
		// has come.
		s.c.log.Debug("xds config incomplete; ACKed, waiting for the rest", "missing", inc.what)
		s.ackAll()
		s.publish()
		return s.sendErr
	}
	if err == nil {
		if verr := cfg.Validate(); verr != nil {
			err = fmt.Errorf("xdsclient: invalid config: %w", verr)
		}
	}
	if err == nil && s.rejectedCfg != nil && reflect.DeepEqual(cfg, s.rejectedCfg) {
		err = s.rejectedErr
	}
	if err == nil && !reflect.DeepEqual(cfg, s.applied) {
		next := s.next()
		if aerr := s.apply(cfg, next); aerr != nil {
			err = fmt.Errorf("xdsclient: config refused: %w", aerr)
			s.rejectedCfg, s.rejectedErr = cfg, err
		} else {
			s.applied = cfg
			s.c.log.Info("xds config applied", "listeners", next.Listeners.Version, "routes", next.Routes.Version,
				"clusters", next.Clusters.Version, "endpoints", next.Endpoints.Version, "models", len(cfg.Models))
		}
	}
	if err != nil {
		s.nackAll(err)
	} else {
		s.ackAll()
	}
	s.publish()
	return s.sendErr
}

// next returns the versions once the held responses are accepted.
func (s *state) next() Versions {
	tv := func(url string) TypeVersion {
		t := s.typ(url)
		if t.pending != nil {
			return TypeVersion{Version: t.pending.version, Nonce: t.pending.nonce}
		}
		return TypeVersion{Version: t.version, Nonce: t.nonce, Rejected: t.rejected, Error: t.reason}
	}
	return Versions{Listeners: tv(typeListener), Routes: tv(typeRoute), Clusters: tv(typeCluster), Endpoints: tv(typeEndpoint)}
}

func (s *state) ackAll() {
	var acked []*typeState
	for _, t := range s.types {
		if r := t.pending; r != nil {
			t.accepted, t.versions, t.version, t.nonce = r.resources, r.versions, r.version, r.nonce
			t.rejected, t.reason = "", ""
			t.pending = nil
			acked = append(acked, t)
		}
	}
	for _, t := range acked {
		s.request(t, t.version, t.nonce, nil)
	}
}

func (s *state) nackAll(err error) {
	var nacked []*typeState
	var nonces []string
	for _, t := range s.types {
		if r := t.pending; r != nil {
			s.reject(t, r.version, err)
			t.pending = nil
			nacked = append(nacked, t)
			nonces = append(nonces, r.nonce)
		}
	}
	// The names are those of what stays accepted, now that nothing is held.
	for i, t := range nacked {
		s.request(t, t.version, nonces[i], nack(err))
	}
	s.subscribe()
}

func (s *state) reject(t *typeState, version string, err error) {
	t.rejected, t.reason = version, err.Error()
	s.c.log.Warn("xds NACK", "type", t.url, "rejected", version, "kept", t.version, "reason", t.reason)
}

func nack(err error) *status.Status {
	return &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

// publish makes the accepted versions visible to Client.Versions.
func (s *state) publish() {
	v := Versions{}
	for _, p := range []struct {
		tv  *TypeVersion
		url string
	}{{&v.Listeners, typeListener}, {&v.Routes, typeRoute}, {&v.Clusters, typeCluster}, {&v.Endpoints, typeEndpoint}} {
		t := s.typ(p.url)
		*p.tv = TypeVersion{Version: t.version, Nonce: t.nonce, Rejected: t.rejected, Error: t.reason}
	}
	s.c.setVersions(v)
}
