package xdsserver

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
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
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// startServer serves s over ADS on a loopback port and returns its address.
func startServer(t *testing.T, s *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := grpc.NewServer()
	s.Register(ctx, g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	t.Cleanup(func() {
		cancel()
		g.Stop()
		<-done
	})
	return lis.Addr().String()
}

// adsClient is a raw SotW ADS client: it sends what a test tells it to and
// hands every response to the test.
type adsClient struct {
	t      *testing.T
	node   *core.Node
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	recv   chan *discovery.DiscoveryResponse
}

func dialADS(t *testing.T, addr string, node *core.Node) *adsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, node: node, stream: stream, recv: make(chan *discovery.DiscoveryResponse, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			c.recv <- r
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
	})
	return c
}

func (c *adsClient) send(typ string, names []string, version, nonce string, nack *status.Status) {
	c.t.Helper()
	err := c.stream.Send(&discovery.DiscoveryRequest{
		Node: c.node, TypeUrl: typ, ResourceNames: names,
		VersionInfo: version, ResponseNonce: nonce, ErrorDetail: nack,
	})
	if err != nil {
		c.t.Fatalf("send %s: %v", typ, err)
	}
}

// next returns the next response, failing the test after 5s.
func (c *adsClient) next() *discovery.DiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.recv:
		return r
	case <-time.After(5 * time.Second):
		c.t.Fatal("no response within 5s")
		return nil
	}
}

// nextN returns the next n responses by type URL.
func (c *adsClient) nextN(n int) map[string]*discovery.DiscoveryResponse {
	c.t.Helper()
	out := map[string]*discovery.DiscoveryResponse{}
	for range n {
		r := c.next()
		out[r.GetTypeUrl()] = r
	}
	return out
}

// quiet fails if a response arrives within d. It is the one negative check
// of these tests and waits in real time.
func (c *adsClient) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.recv:
		c.t.Fatalf("unexpected response %s version %s", r.GetTypeUrl(), r.GetVersionInfo())
	case <-time.After(d):
	}
}

func unpack[T proto.Message](t *testing.T, as []*anypb.Any) map[string]T {
	t.Helper()
	out := map[string]T{}
	for _, a := range as {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		v := m.(T)
		var name string
		switch r := any(v).(type) {
		case *listener.Listener:
			name = r.GetName()
		case *route.RouteConfiguration:
			name = r.GetName()
		case *cluster.Cluster:
			name = r.GetName()
		case *endpoint.ClusterLoadAssignment:
			name = r.GetClusterName()
		}
		out[name] = v
	}
	return out
}

var sidecarNode = &core.Node{Id: "n1", Cluster: "sidecars"}

var allTypes = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// subscribe asks for every type with the names a sidecar asks for, and
// returns the four responses.
func subscribe(c *adsClient) map[string]*discovery.DiscoveryResponse {
	c.send(resource.ClusterType, nil, "", "", nil)
	c.send(resource.EndpointType, []string{"batchmesh|bert|1", "batchmesh|bert|2"}, "", "", nil)
	c.send(resource.ListenerType, nil, "", "", nil)
	c.send(resource.RouteType, []string{RouteName}, "", "", nil)
	return c.nextN(4)
}

// ack ACKs each response with the names it was asked for.
func ack(c *adsClient, rs map[string]*discovery.DiscoveryResponse) {
	names := map[string][]string{
		resource.EndpointType: {"batchmesh|bert|1", "batchmesh|bert|2"},
		resource.RouteType:    {RouteName},
	}
	for _, typ := range allTypes {
		c.send(typ, names[typ], rs[typ].GetVersionInfo(), rs[typ].GetNonce(), nil)
	}
}

func TestADSLoopback(t *testing.T) {
	s := New(Config{Epoch: 1})
	if _, err := s.Update(context.Background(), mustParse(t, splitYAML)); err != nil {
		t.Fatal(err)
	}
	c := dialADS(t, startServer(t, s), sidecarNode)
	rs := subscribe(c)

	v1 := s.Version()
	for _, typ := range allTypes {
		if got := rs[typ].GetVersionInfo(); got != v1 {
			t.Errorf("%s version = %q, want %q", typ, got, v1)
		}
	}
	ls := unpack[*listener.Listener](t, rs[resource.ListenerType].GetResources())
	if got := slices.Sorted(maps.Keys(ls)); !slices.Equal(got, []string{"batchmesh-outbound", "bert"}) {
		t.Errorf("listeners = %v", got)
	}
	cs := unpack[*cluster.Cluster](t, rs[resource.ClusterType].GetResources())
	if got := slices.Sorted(maps.Keys(cs)); !slices.Equal(got, []string{"batchmesh|bert|1", "batchmesh|bert|2"}) {
		t.Errorf("clusters = %v", got)
	}
	if got := cs["batchmesh|bert|1"].GetMetadata().GetFilterMetadata()[MetadataKey].AsMap()["batching"].(map[string]any)["max_batch_size"]; got != 32.0 {
		t.Errorf("cluster metadata max_batch_size = %v, want 32", got)
	}
	eps := unpack[*endpoint.ClusterLoadAssignment](t, rs[resource.EndpointType].GetResources())
	if got := flatten(eps["batchmesh|bert|1"]); len(got) != 2 || got[0].zone != "a" || got[0].weight != 3 || got[1].zone != "b" {
		t.Errorf("bert|1 localities = %+v", got)
	}
	rc := unpack[*route.RouteConfiguration](t, rs[resource.RouteType].GetResources())[RouteName]
	if got := weights(rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute()); !slices.Equal(got, []string{"batchmesh|bert|1=90", "batchmesh|bert|2=10"}) {
		t.Errorf("weights = %v", got)
	}

	ack(c, rs)
	c.quiet(100 * time.Millisecond) // an ACK of the current version gets no answer

	// A weight change reaches the client under a newer version.
	cfg := mustParse(t, splitYAML)
	cfg.Models[0].Versions[0].Weight, cfg.Models[0].Versions[1].Weight = 20, 80
	v2, err := s.Update(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if v2 == v1 || !versionAfter(v2, v1) {
		t.Errorf("version %q does not move forward from %q", v2, v1)
	}
	// Only the route config changed: no other type is sent.
	rs = c.nextN(1)
	if got := rs[resource.RouteType].GetVersionInfo(); got != v2 {
		t.Fatalf("after update: %v, want routes at %q", slices.Collect(maps.Keys(rs)), v2)
	}
	c.quiet(100 * time.Millisecond)
	rc = unpack[*route.RouteConfiguration](t, rs[resource.RouteType].GetResources())[RouteName]
	if got := weights(rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute()); !slices.Equal(got, []string{"batchmesh|bert|1=20", "batchmesh|bert|2=80"}) {
		t.Errorf("weights after update = %v", got)
	}

	// A NACK of the routes: counted, and the rejected version is not sent
	// again; the next update is.
	c.send(resource.RouteType, []string{RouteName}, v1, rs[resource.RouteType].GetNonce(), &status.Status{Code: 3, Message: "bad weights"})
	waitFor(t, func() bool { return s.NACKs()[resource.RouteType] == 1 })
	c.quiet(300 * time.Millisecond)
	if n := s.NACKs(); len(n) != 1 {
		t.Errorf("NACKs = %v, want one route NACK", n)
	}
	cfg.Models[0].Versions[0].Weight = 30
	v3, err := s.Update(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	rs = c.nextN(1)
	if got := rs[resource.RouteType].GetVersionInfo(); got != v3 {
		t.Errorf("route version after NACK and update = %q, want %q", got, v3)
	}
}

// TestBadUpdateKeepsSnapshot: a config that fails to translate changes
// nothing.
func TestBadUpdateKeepsSnapshot(t *testing.T) {
	s := New(Config{})
	v1, err := s.Update(context.Background(), mustParse(t, splitYAML))
	if err != nil {
		t.Fatal(err)
	}
	bad := mustParse(t, splitYAML)
	bad.Models[0].Versions[0].Endpoints[0].Address = "nope"
	if _, err := s.Update(context.Background(), bad); err == nil {
		t.Fatal("bad config accepted")
	}
	if got := s.Version(); got != v1 {
		t.Errorf("version after a bad update = %q, want %q", got, v1)
	}
	st := s.Served()
	if c := st["clusters"]; c.Version != v1 || len(c.Names) != 2 {
		t.Errorf("served clusters = %+v", c)
	}
}

// TestAnyNode: nodes of any cluster, or none, are served the same
// resources at once.
func TestAnyNode(t *testing.T) {
	s := New(Config{})
	if _, err := s.Update(context.Background(), mustParse(t, splitYAML)); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, s)
	a := dialADS(t, addr, &core.Node{Id: "a1", Cluster: "group-a"})
	b := dialADS(t, addr, &core.Node{Id: "b1"})
	for _, c := range []*adsClient{a, b} {
		c.send(resource.ClusterType, nil, "", "", nil)
		if r := c.next(); len(r.GetResources()) != 2 || r.GetVersionInfo() != s.Version() {
			t.Fatalf("%s: %d clusters at %q", c.node.GetId(), len(r.GetResources()), r.GetVersionInfo())
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// versionAfter reports whether version a is newer than b: same epoch and
// a higher serial, or a later epoch.
func versionAfter(a, b string) bool {
	ea, sa, _ := strings.Cut(a, "-")
	eb, sb, _ := strings.Cut(b, "-")
	na, _ := strconv.ParseInt(ea, 36, 64)
	nb, _ := strconv.ParseInt(eb, 36, 64)
	ia, _ := strconv.ParseUint(sa, 10, 64)
	ib, _ := strconv.ParseUint(sb, 10, 64)
	return na > nb || na == nb && ia > ib
}

// TestNamedRequests: a node with no metadata that names resources, as a
// gRPC client does, gets exactly those, for two models on one stream; a
// listener that does not exist is answered at once without it (and logged
// with the node id); a model that leaves the config leaves the listener
// and cluster responses.
func TestNamedRequests(t *testing.T) {
	logs := &logRecords{}
	s := New(Config{Logger: slog.New(logs)})
	if _, err := s.Update(context.Background(), mustParse(t, threeModelsYAML)); err != nil {
		t.Fatal(err)
	}
	c := dialADS(t, startServer(t, s), &core.Node{Id: "g1", Cluster: "apps"})
	names := map[string][]string{
		resource.ListenerType: {"bert"}, resource.RouteType: {ProxylessRouteName("bert")},
		resource.ClusterType: {"batchmesh|bert|1"}, resource.EndpointType: {"batchmesh|bert|1"},
	}
	for _, typ := range allTypes {
		c.send(typ, names[typ], "", "", nil)
	}
	rs := c.nextN(4)
	for _, typ := range allTypes {
		if got := resourceNames(t, rs[typ]); !slices.Equal(got, names[typ]) || rs[typ].GetVersionInfo() != s.Version() {
			t.Errorf("%s: %v at %q, want %v at %q", typ, got, rs[typ].GetVersionInfo(), names[typ], s.Version())
		}
	}
	l := unpack[*listener.Listener](t, rs[resource.ListenerType].GetResources())["bert"]
	var manager hcm.HttpConnectionManager
	if err := l.GetApiListener().GetApiListener().UnmarshalTo(&manager); err != nil {
		t.Fatal(err)
	}
	if got := manager.GetRds().GetRouteConfigName(); got != ProxylessRouteName("bert") {
		t.Errorf("api_listener RDS name = %q", got)
	}
	rc := unpack[*route.RouteConfiguration](t, rs[resource.RouteType].GetResources())[ProxylessRouteName("bert")]
	if r := rc.GetVirtualHosts()[0].GetRoutes()[0]; r.GetMatch().GetPrefix() != "/" || !slices.Equal(weights(r.GetRoute()), []string{"batchmesh|bert|1=1"}) {
		t.Errorf("route = %v", r)
	}
	for _, typ := range allTypes {
		c.send(typ, names[typ], rs[typ].GetVersionInfo(), rs[typ].GetNonce(), nil)
	}
	c.quiet(100 * time.Millisecond)

	// A second model on the same stream, and a listener that does not
	// exist: the listeners are answered at once, without "nope".
	names[resource.ListenerType] = []string{"bert", "embed", "nope"}
	c.send(resource.ListenerType, names[resource.ListenerType], rs[resource.ListenerType].GetVersionInfo(), rs[resource.ListenerType].GetNonce(), nil)
	r := c.next()
	if got := resourceNames(t, r); r.GetTypeUrl() != resource.ListenerType || !slices.Equal(got, []string{"bert", "embed"}) {
		t.Fatalf("%s response %v, want listeners bert and embed", r.GetTypeUrl(), got)
	}
	waitFor(t, func() bool { return logs.find("xds resource does not exist") != nil })
	if m := logs.find("xds resource does not exist"); m["node"] != "g1" || m["names"] != "[nope]" || m["type"] != "listeners" {
		t.Errorf("log = %v, want node g1, listeners [nope]", m)
	}
	c.send(resource.ListenerType, names[resource.ListenerType], r.GetVersionInfo(), r.GetNonce(), nil)
	c.quiet(100 * time.Millisecond) // the ACK gets no answer: no loop

	// bert leaves the config: listeners and clusters (full state) are sent
	// without it.
	cfg := mustParse(t, threeModelsYAML)
	cfg.Models = cfg.Models[1:]
	if _, err := s.Update(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	got := c.nextN(2)
	if l := resourceNames(t, got[resource.ListenerType]); !slices.Equal(l, []string{"embed"}) {
		t.Errorf("listeners after removal = %v, want embed", l)
	}
	if cs := got[resource.ClusterType]; cs == nil || len(cs.GetResources()) != 0 || cs.GetVersionInfo() != s.Version() {
		t.Errorf("clusters after removal = %v", cs)
	}
}

// resourceNames returns the sorted names of the resources of r.
func resourceNames(t *testing.T, r *discovery.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	switch r.GetTypeUrl() {
	case resource.ListenerType:
		out = slices.Collect(maps.Keys(unpack[*listener.Listener](t, r.GetResources())))
	case resource.RouteType:
		out = slices.Collect(maps.Keys(unpack[*route.RouteConfiguration](t, r.GetResources())))
	case resource.ClusterType:
		out = slices.Collect(maps.Keys(unpack[*cluster.Cluster](t, r.GetResources())))
	case resource.EndpointType:
		out = slices.Collect(maps.Keys(unpack[*endpoint.ClusterLoadAssignment](t, r.GetResources())))
	}
	slices.Sort(out)
	return out
}
