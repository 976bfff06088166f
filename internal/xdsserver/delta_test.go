package xdsserver

import (
	"context"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// deltaClient is a raw delta (incremental) ADS client: it sends what a test
// tells it to and hands every response to the test. Like Envoy, it sets the
// node on the first request of the stream only.
type deltaClient struct {
	t        *testing.T
	node     *core.Node
	stream   discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	recv     chan *discovery.DeltaDiscoveryResponse
	cancel   context.CancelFunc
	nodeSent bool
}

func dialDelta(t *testing.T, addr string, node *core.Node) *deltaClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &deltaClient{t: t, node: node, stream: stream, recv: make(chan *discovery.DeltaDiscoveryResponse, 16), cancel: cancel}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case c.recv <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
	})
	return c
}

func (c *deltaClient) send(req *discovery.DeltaDiscoveryRequest) {
	c.t.Helper()
	if !c.nodeSent {
		req.Node, c.nodeSent = c.node, true
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send %s: %v", req.GetTypeUrl(), err)
	}
}

// subscribe subscribes to names of typ; no names is a legacy wildcard.
func (c *deltaClient) subscribe(typ string, names ...string) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: names})
}

// ack ACKs r: its nonce, no error_detail.
func (c *deltaClient) ack(r *discovery.DeltaDiscoveryResponse) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
}

// nack rejects r: its nonce, with error_detail.
func (c *deltaClient) nack(r *discovery.DeltaDiscoveryResponse, reason string) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{
		TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: reason},
	})
}

// next returns the next response, which must be of type typ and carry
// system version v, failing the test after 5s.
func (c *deltaClient) next(typ, v string) *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.recv:
		if r.GetTypeUrl() != typ || r.GetSystemVersionInfo() != v {
			c.t.Fatalf("got response %s at version %q (resources %v, removed %v), want %s at %q",
				r.GetTypeUrl(), r.GetSystemVersionInfo(), deltaNames(r), r.GetRemovedResources(), typ, v)
		}
		if r.GetNonce() == "" {
			c.t.Fatalf("%s response without nonce", typ)
		}
		return r
	case <-time.After(5 * time.Second):
		c.t.Fatalf("no %s response within 5s", typ)
		return nil
	}
}

// nextAll returns the next len(types) responses by type URL: one of each of
// types, in any order, all at system version v.
func (c *deltaClient) nextAll(v string, types ...string) map[string]*discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	out := map[string]*discovery.DeltaDiscoveryResponse{}
	deadline := time.After(5 * time.Second)
	for range types {
		select {
		case r := <-c.recv:
			typ := r.GetTypeUrl()
			if !slices.Contains(types, typ) || out[typ] != nil || r.GetSystemVersionInfo() != v {
				c.t.Fatalf("unexpected response %s at version %q (resources %v, removed %v), want one each of %v at %q",
					typ, r.GetSystemVersionInfo(), deltaNames(r), r.GetRemovedResources(), types, v)
			}
			out[typ] = r
		case <-deadline:
			c.t.Fatalf("got responses of %v within 5s, want %v", slices.Collect(maps.Keys(out)), types)
		}
	}
	return out
}

// deltaNames returns the sorted names of the resources of r.
func deltaNames(r *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.GetResources() {
		out = append(out, res.GetName())
	}
	slices.Sort(out)
	return out
}

// deltaUnpack decodes the resources of r by name, checking that each
// carries a resource version and the name of what it wraps.
func deltaUnpack[T proto.Message](t *testing.T, r *discovery.DeltaDiscoveryResponse) map[string]T {
	t.Helper()
	var as []*anypb.Any
	for _, res := range r.GetResources() {
		if res.GetVersion() == "" {
			t.Errorf("%s %q has no resource version", r.GetTypeUrl(), res.GetName())
		}
		as = append(as, res.GetResource())
	}
	out := unpack[T](t, as)
	for _, res := range r.GetResources() {
		if _, ok := out[res.GetName()]; !ok {
			t.Errorf("%s: resource named %q wraps none of %v", r.GetTypeUrl(), res.GetName(), slices.Sorted(maps.Keys(out)))
		}
	}
	return out
}

// subscribeDelta subscribes as Envoy does: clusters (explicit wildcard),
// the endpoints of the clusters it got, listeners (legacy wildcard), and
// the route config the outbound listener names, each after the response
// to the previous one. It returns the four responses, none ACKed.
func subscribeDelta(t *testing.T, c *deltaClient, v string) map[string]*discovery.DeltaDiscoveryResponse {
	t.Helper()
	rs := map[string]*discovery.DeltaDiscoveryResponse{}
	c.subscribe(resource.ClusterType, "*")
	rs[resource.ClusterType] = c.next(resource.ClusterType, v)
	c.subscribe(resource.EndpointType, deltaNames(rs[resource.ClusterType])...)
	rs[resource.EndpointType] = c.next(resource.EndpointType, v)
	c.subscribe(resource.ListenerType)
	rs[resource.ListenerType] = c.next(resource.ListenerType, v)
	var manager hcm.HttpConnectionManager
	out := unpack[*listener.Listener](t, anys(rs[resource.ListenerType]))[OutboundListener]
	if err := out.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&manager); err != nil {
		t.Fatalf("outbound listener: %v", err)
	}
	c.subscribe(resource.RouteType, manager.GetRds().GetRouteConfigName())
	rs[resource.RouteType] = c.next(resource.RouteType, v)
	return rs
}

func anys(r *discovery.DeltaDiscoveryResponse) []*anypb.Any {
	var out []*anypb.Any
	for _, res := range r.GetResources() {
		out = append(out, res.GetResource())
	}
	return out
}

// counts returns a {type} → count map of the four types.
func counts(clusters, endpoints, listeners, routes int64) map[string]int64 {
	return map[string]int64{"clusters": clusters, "endpoints": endpoints, "listeners": listeners, "routes": routes}
}

// waitCounts waits until metric name reads want, failing with the last
// reading after 5s.
func waitCounts(t *testing.T, r *sdkmetric.ManualReader, name string, want map[string]int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := byType(t, r, name)
		if equalCounts(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v within 5s", name, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDeltaADS checks the incremental variant of ADS end to end over
// loopback gRPC, for a node that only ever speaks delta:
//   - subscribing type by type as Envoy does, it gets every resource:
//     the clusters batchmesh|bert|{1,2}, their ClusterLoadAssignments with
//     the config's addresses, zones and weights, both listeners and the
//     route config with the 90/10 split, each response at the server's
//     version, as Served() reports;
//   - its ACKs (nonce, no error_detail) are timed by type in
//     batchmesh_xds_push_ack_seconds, and batchmesh_xds_updates counts one
//     response per type;
//   - after an update that changes one endpoint weight, the next response
//     holds only the changed ClusterLoadAssignment with the new weight, and
//     no other type is sent (the update counters do not move for them);
//   - after an update that removes a version, its cluster and
//     ClusterLoadAssignment are named in removed_resources, and only the
//     route config that changed is sent again (the api_listener refers to
//     its route by name, so it does not change);
//   - closing the stream drops what the server recorded of it.
func TestDeltaADS(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	s := New(Config{Epoch: 1, Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")})
	v1, err := s.Update(context.Background(), mustParse(t, splitYAML))
	if err != nil {
		t.Fatal(err)
	}
	c := dialDelta(t, startServer(t, s), &core.Node{Id: "d1", Cluster: "delta-sidecars"})
	rs := subscribeDelta(t, c, v1)

	for typ, r := range rs {
		if len(r.GetRemovedResources()) != 0 {
			t.Errorf("first %s response removes %v", typ, r.GetRemovedResources())
		}
	}
	cs := deltaUnpack[*cluster.Cluster](t, rs[resource.ClusterType])
	if got := slices.Sorted(maps.Keys(cs)); !slices.Equal(got, []string{"batchmesh|bert|1", "batchmesh|bert|2"}) {
		t.Errorf("clusters = %v", got)
	}
	if got := cs["batchmesh|bert|2"].GetEdsClusterConfig().GetServiceName(); got != "batchmesh|bert|2" {
		t.Errorf("bert|2 EDS service name = %q", got)
	}
	eps := deltaUnpack[*endpoint.ClusterLoadAssignment](t, rs[resource.EndpointType])
	if got := slices.Sorted(maps.Keys(eps)); !slices.Equal(got, []string{"batchmesh|bert|1", "batchmesh|bert|2"}) {
		t.Errorf("endpoints = %v", got)
	}
	want1 := []locality{
		{zone: "a", weight: 3, endpoints: []string{"127.0.0.1:8000=1", "127.0.0.1:8001=2"}},
		{zone: "b", weight: 3, endpoints: []string{"127.0.0.1:8002=3"}},
	}
	if got := flatten(eps["batchmesh|bert|1"]); !reflect.DeepEqual(got, want1) {
		t.Errorf("bert|1 localities = %+v, want %+v", got, want1)
	}
	if got, want := flatten(eps["batchmesh|bert|2"]), []locality{{weight: 1, endpoints: []string{"127.0.0.1:8003=1"}}}; !reflect.DeepEqual(got, want) {
		t.Errorf("bert|2 localities = %+v, want %+v", got, want)
	}
	ls := deltaUnpack[*listener.Listener](t, rs[resource.ListenerType])
	if got := slices.Sorted(maps.Keys(ls)); !slices.Equal(got, []string{OutboundListener, "bert"}) {
		t.Errorf("listeners = %v", got)
	}
	rc := deltaUnpack[*route.RouteConfiguration](t, rs[resource.RouteType])[RouteName]
	if got := weights(rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute()); !slices.Equal(got, []string{"batchmesh|bert|1=90", "batchmesh|bert|2=10"}) {
		t.Errorf("route weights = %v", got)
	}
	if st := s.Served()["clusters"]; st.Version != v1 || len(st.Names) != 2 {
		t.Errorf("served clusters = %+v, want 2 at %q", st, v1)
	}

	for _, typ := range allTypes {
		c.ack(rs[typ])
	}
	waitCounts(t, reader, "batchmesh_xds_push_ack_seconds", counts(1, 1, 1, 1))
	if got := byType(t, reader, "batchmesh_xds_updates"); !equalCounts(got, counts(1, 1, 1, 1)) {
		t.Errorf("updates = %v, want one per type", got)
	}
	if got := byType(t, reader, "batchmesh_xds_nacks"); len(got) != 0 {
		t.Errorf("nacks = %v, want none", got)
	}

	// One endpoint weight changes (127.0.0.1:8001: 2 → 5): only bert|1's
	// ClusterLoadAssignment is sent. next fails on any other type first.
	cfg := mustParse(t, splitYAML)
	cfg.Models[0].Versions[0].Endpoints[1].Weight = 5
	v2, err := s.Update(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := c.next(resource.EndpointType, v2)
	if got := deltaNames(r); !slices.Equal(got, []string{"batchmesh|bert|1"}) || len(r.GetRemovedResources()) != 0 {
		t.Errorf("after a weight change: resources %v, removed %v; want only batchmesh|bert|1", got, r.GetRemovedResources())
	}
	want2 := []locality{
		{zone: "a", weight: 6, endpoints: []string{"127.0.0.1:8000=1", "127.0.0.1:8001=5"}},
		{zone: "b", weight: 3, endpoints: []string{"127.0.0.1:8002=3"}},
	}
	if got := flatten(deltaUnpack[*endpoint.ClusterLoadAssignment](t, r)["batchmesh|bert|1"]); !reflect.DeepEqual(got, want2) {
		t.Errorf("bert|1 localities after the change = %+v, want %+v", got, want2)
	}
	c.ack(r)
	// The server sends every response queued on a stream before it handles
	// the stream's next request, and this update queued all of its
	// responses before Update returned: once the ACK is timed, every
	// response of the update has been counted.
	waitCounts(t, reader, "batchmesh_xds_push_ack_seconds", counts(1, 2, 1, 1))
	if got := byType(t, reader, "batchmesh_xds_updates"); !equalCounts(got, counts(1, 2, 1, 1)) {
		t.Errorf("updates after a weight change = %v, want one more endpoints response only", got)
	}

	// Version 2 leaves: its cluster and load assignment are removed; the
	// route config changes (its split), no listener does.
	cfg.Models[0].Versions = cfg.Models[0].Versions[:1]
	v3, err := s.Update(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	rs = c.nextAll(v3, resource.ClusterType, resource.EndpointType, resource.RouteType)
	for _, typ := range []string{resource.ClusterType, resource.EndpointType} {
		if got := rs[typ].GetRemovedResources(); !slices.Equal(got, []string{"batchmesh|bert|2"}) || len(rs[typ].GetResources()) != 0 {
			t.Errorf("%s after removal: resources %v, removed %v; want only batchmesh|bert|2 removed", typ, deltaNames(rs[typ]), got)
		}
	}
	rc = deltaUnpack[*route.RouteConfiguration](t, rs[resource.RouteType])[RouteName]
	if got := weights(rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute()); !slices.Equal(got, []string{"batchmesh|bert|1=90"}) {
		t.Errorf("route weights after removal = %v", got)
	}
	for _, r := range rs {
		c.ack(r)
	}
	waitCounts(t, reader, "batchmesh_xds_push_ack_seconds", counts(2, 3, 1, 2))
	if got := byType(t, reader, "batchmesh_xds_updates"); !equalCounts(got, counts(2, 3, 1, 2)) {
		t.Errorf("updates after removal = %v", got)
	}

	c.cancel()
	waitFor(t, func() bool {
		s.streamMu.Lock()
		defer s.streamMu.Unlock()
		return len(s.deltaSent) == 0
	})
}

// TestDeltaNACK checks that a delta NACK (error_detail and the response's
// nonce) is counted once for its type, in NACKs() and
// batchmesh_xds_nacks, is not timed as an ACK, and is not answered by
// sending the rejected resources again: the next response on the stream is
// that of the next update that changes them.
func TestDeltaNACK(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	s := New(Config{Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")})
	v1, err := s.Update(context.Background(), mustParse(t, splitYAML))
	if err != nil {
		t.Fatal(err)
	}
	c := dialDelta(t, startServer(t, s), &core.Node{Id: "d2", Cluster: "delta-nack"})
	rs := subscribeDelta(t, c, v1)

	// The endpoints are rejected; the routes are ACKed last, after the NACK.
	c.ack(rs[resource.ClusterType])
	c.ack(rs[resource.ListenerType])
	c.nack(rs[resource.EndpointType], "bad endpoints")
	c.ack(rs[resource.RouteType])
	// The routes ACK is handled after the NACK, and only once every
	// response queued by the NACK has been sent: when it is timed, a
	// re-send would have been counted already.
	waitCounts(t, reader, "batchmesh_xds_push_ack_seconds", map[string]int64{"clusters": 1, "listeners": 1, "routes": 1})
	if got := byType(t, reader, "batchmesh_xds_nacks"); !equalCounts(got, map[string]int64{"endpoints": 1}) {
		t.Errorf("nacks = %v, want one of endpoints", got)
	}
	if got := s.NACKs(); !maps.Equal(got, map[string]uint64{resource.EndpointType: 1}) {
		t.Errorf("NACKs() = %v, want one of endpoints", got)
	}
	if got := byType(t, reader, "batchmesh_xds_updates"); !equalCounts(got, counts(1, 1, 1, 1)) {
		t.Errorf("updates after the NACK = %v, want one per type (nothing re-sent)", got)
	}

	// A real change: the next response is the new assignment, not the
	// rejected one again.
	cfg := mustParse(t, splitYAML)
	cfg.Models[0].Versions[1].Endpoints[0].Weight = 4
	v2, err := s.Update(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := c.next(resource.EndpointType, v2)
	if got := deltaNames(r); !slices.Equal(got, []string{"batchmesh|bert|2"}) {
		t.Errorf("after the NACK and an update: resources %v, want only batchmesh|bert|2", got)
	}
	if got, want := flatten(deltaUnpack[*endpoint.ClusterLoadAssignment](t, r)["batchmesh|bert|2"]), []locality{{weight: 4, endpoints: []string{"127.0.0.1:8003=4"}}}; !reflect.DeepEqual(got, want) {
		t.Errorf("bert|2 localities = %+v, want %+v", got, want)
	}
	c.ack(r)
	waitCounts(t, reader, "batchmesh_xds_push_ack_seconds", counts(1, 1, 1, 1))
	if got := byType(t, reader, "batchmesh_xds_nacks"); !equalCounts(got, map[string]int64{"endpoints": 1}) {
		t.Errorf("nacks after the ACK = %v, want still one of endpoints", got)
	}
	if got := byType(t, reader, "batchmesh_xds_updates"); !equalCounts(got, counts(1, 2, 1, 1)) {
		t.Errorf("updates = %v, want one more endpoints response only", got)
	}
}

// logRecords is a slog.Handler that keeps every record's attributes.
type logRecords struct {
	mu   sync.Mutex
	recs []map[string]string // message under "msg"
}

func (*logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler     { return h }
func (h *logRecords) WithGroup(string) slog.Handler          { return h }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, m)
	return nil
}

func (h *logRecords) find(msg string) map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.recs {
		if m["msg"] == msg {
			return m
		}
	}
	return nil
}

// TestDeltaNACKLogsNode checks that the log of a delta NACK names the node
// and its cluster when, as Envoy does on delta streams, the node is
// set on the stream's first request only.
func TestDeltaNACKLogsNode(t *testing.T) {
	logs := &logRecords{}
	s := New(Config{Logger: slog.New(logs)})
	v1, err := s.Update(context.Background(), mustParse(t, splitYAML))
	if err != nil {
		t.Fatal(err)
	}
	c := dialDelta(t, startServer(t, s), &core.Node{Id: "d3", Cluster: "delta-log"})
	c.subscribe(resource.ClusterType, "*")
	c.nack(c.next(resource.ClusterType, v1), "bad clusters")
	waitFor(t, func() bool { return logs.find("xds delta NACK") != nil })
	if m := logs.find("xds delta NACK"); m["node"] != "d3" || m["cluster"] != "delta-log" {
		t.Errorf("NACK logged as node %q cluster %q, want d3 of delta-log", m["node"], m["cluster"])
	}
}
