package xdsclient

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/xdsserver"
)

// testConfig is a resolved config of two models: bert (v2, three versions,
// the last of weight 0, endpoints in two zones) and emb (openai).
func testConfig(w1, w2, epWeight int) *config.Config {
	bert := config.Model{
		Name:     "bert",
		Protocol: config.ProtocolV2,
		Batching: config.Batching{MaxBatchSize: 32, MaxQueueSize: 100, MaxQueueDelay: 3 * time.Millisecond, Policy: config.BatchPolicyTransit, Timeout: 2 * time.Second},
		Cache:    config.Cache{Enabled: true, TTL: time.Minute, Granularity: config.GranularityRequest, Scope: config.ScopeTenant},
		Versions: []config.Version{
			{Version: "1", Weight: w1, Endpoints: []config.Endpoint{
				{Address: "127.0.0.1:8000", Weight: epWeight, Slots: 2, Zone: "a"},
				{Address: "127.0.0.1:8001", Weight: 1, Slots: 1, Zone: "b", Protocol: config.EndpointGRPC},
			}, ServiceAddresses: []string{"10.96.0.10:8000", "[fd00::10]:8000"}},
			{Version: "2", Weight: w2, Endpoints: []config.Endpoint{{Address: "127.0.0.1:8002", Weight: 1, Slots: 1}}},
			{Version: "3", Weight: 0, Endpoints: []config.Endpoint{{Address: "[::1]:8003", Weight: 5, Slots: 4, Zone: "a"}}},
		},
	}
	emb := config.Model{
		Name:     "emb",
		Protocol: config.ProtocolOpenAI,
		Batching: config.DefaultBatching(),
		Cache:    config.DefaultCache(),
		Versions: []config.Version{{Version: "v1", Weight: 1, Endpoints: []config.Endpoint{{Address: "10.0.0.1:9000", Weight: 1, Slots: 1}}}},
	}
	return &config.Config{CacheBytes: config.DefaultCacheBytes, Weights: config.WeightsStatic, Models: []config.Model{bert, emb}}
}

// diffConfig compares what xDS carries of two configs: models, protocols,
// batching and cache settings, versions and their weights and service
// addresses, and endpoints
// with weight, slots, zone and protocol (in any order; endpoints of weight 0, which
// xDS leaves out, are ignored). It returns "" when they match.
func diffConfig(got, want *config.Config) string {
	norm := func(c *config.Config) string {
		var b strings.Builder
		for _, m := range c.Models {
			fmt.Fprintf(&b, "model %s %s %+v %+v\n", m.Name, m.Protocol, m.Batching, m.Cache)
			for _, v := range m.Versions {
				fmt.Fprintf(&b, "  version %s weight %d service addresses %q\n", v.Version, v.Weight, v.ServiceAddresses)
				var eps []string
				for _, e := range v.Endpoints {
					if e.Weight > 0 {
						eps = append(eps, fmt.Sprintf("    %s weight %d slots %d zone %q protocol %q\n", e.Address, e.Weight, e.Slots, e.Zone, cmp.Or(e.Protocol, config.EndpointHTTP)))
					}
				}
				slices.Sort(eps)
				b.WriteString(strings.Join(eps, ""))
			}
		}
		return b.String()
	}
	g, w := norm(got), norm(want)
	if g == w {
		return ""
	}
	return "got:\n" + g + "want:\n" + w
}

// viewOf makes a view of the resources of a served config.
func viewOf(t testing.TB, rs map[resource.Type][]types.Resource) *view {
	t.Helper()
	v := &view{
		listeners: map[string]*listener.Listener{},
		routes:    map[string]*route.RouteConfiguration{},
		clusters:  map[string]*cluster.Cluster{},
		loads:     map[string]*endpoint.ClusterLoadAssignment{},
	}
	for _, r := range rs[resource.ListenerType] {
		l := r.(*listener.Listener)
		v.listeners[l.GetName()] = l
	}
	for _, r := range rs[resource.RouteType] {
		rc := r.(*route.RouteConfiguration)
		v.routes[rc.GetName()] = rc
	}
	for _, r := range rs[resource.ClusterType] {
		c := r.(*cluster.Cluster)
		v.clusters[c.GetName()] = c
	}
	for _, r := range rs[resource.EndpointType] {
		cla := r.(*endpoint.ClusterLoadAssignment)
		v.loads[cla.GetClusterName()] = cla
	}
	return v
}

func served(t testing.TB, cfg *config.Config) *view {
	t.Helper()
	rs, err := xdsserver.Resources(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return viewOf(t, rs)
}

func TestNamesMatchServer(t *testing.T) {
	pairs := []struct{ got, want string }{
		{OutboundListener, xdsserver.OutboundListener},
		{RouteName, xdsserver.RouteName},
		{MetadataKey, xdsserver.MetadataKey},
		{config.ClusterName("m", "v"), xdsserver.ClusterName("m", "v")},
		{typeListener, resource.ListenerType},
		{typeRoute, resource.RouteType},
		{typeCluster, resource.ClusterType},
		{typeEndpoint, resource.EndpointType},
	}
	for _, p := range pairs {
		if p.got != p.want {
			t.Errorf("%q, want %q", p.got, p.want)
		}
	}
}

func TestTranslateRoundTrip(t *testing.T) {
	want := testConfig(90, 10, 3)
	got, err := translate(served(t, want))
	if err != nil {
		t.Fatal(err)
	}
	if d := diffConfig(got, want); d != "" {
		t.Fatal(d)
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
	if got.CacheBytes != config.DefaultCacheBytes || got.Weights != config.WeightsStatic {
		t.Errorf("CacheBytes %d, Weights %q: want the defaults", got.CacheBytes, got.Weights)
	}
	adaptive := testConfig(90, 10, 3)
	adaptive.Weights = config.WeightsAdaptive
	if got, err := translate(served(t, adaptive)); err != nil || got.Weights != config.WeightsAdaptive {
		t.Errorf("weights: adaptive came back as %v, %v", got, err)
	}
	if names := loadNames(served(t, want).clusters); len(names) != 4 {
		t.Errorf("load names %q, want the 4 clusters", names)
	}
}

func TestTranslateErrors(t *testing.T) {
	tests := []struct {
		name       string
		edit       func(v *view)
		incomplete []string // the types that may supply what is missing; nil for a plain error
		contains   string
	}{
		{name: "no listener", edit: func(v *view) { clear(v.listeners) }, incomplete: []string{typeListener}},
		{name: "no route", edit: func(v *view) { clear(v.routes) }, incomplete: []string{typeRoute}},
		{
			name:       "routed cluster unknown",
			edit:       func(v *view) { delete(v.clusters, "batchmesh|emb|v1") },
			incomplete: []string{typeCluster, typeRoute},
		},
		{
			name:       "no load assignment",
			edit:       func(v *view) { delete(v.loads, "batchmesh|bert|3") },
			incomplete: []string{typeEndpoint},
		},
		{
			name: "listener routes elsewhere",
			edit: func(v *view) {
				l := proto.Clone(v.listeners[OutboundListener]).(*listener.Listener)
				tc := l.GetFilterChains()[0].GetFilters()[0]
				m := &hcm.HttpConnectionManager{}
				if err := tc.GetTypedConfig().UnmarshalTo(m); err != nil {
					panic(err)
				}
				m.GetRds().RouteConfigName = "other"
				a, _ := anypb.New(m)
				tc.ConfigType = &listener.Filter_TypedConfig{TypedConfig: a}
				v.listeners[OutboundListener] = l
			},
			contains: `routes with "other"`,
		},
		{
			name: "bad batching metadata",
			edit: func(v *view) {
				c := proto.Clone(v.clusters["batchmesh|bert|1"]).(*cluster.Cluster)
				b := c.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()["batching"].GetStructValue()
				b.GetFields()["max_batch_size"] = structpb.NewNumberValue(1.5)
				v.clusters[c.GetName()] = c
			},
			contains: "max_batch_size",
		},
		{
			name: "versions disagree",
			edit: func(v *view) {
				c := proto.Clone(v.clusters["batchmesh|bert|2"]).(*cluster.Cluster)
				c.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()["protocol"] = structpb.NewStringValue("openai")
				v.clusters[c.GetName()] = c
			},
			contains: "disagrees",
		},
		{
			name: "unknown weights mode",
			edit: func(v *view) {
				c := proto.Clone(v.clusters["batchmesh|bert|1"]).(*cluster.Cluster)
				c.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()["weights"] = structpb.NewStringValue("measured")
				v.clusters[c.GetName()] = c
			},
			contains: `weights: "measured" is not one of static, adaptive`,
		},
		{
			name: "weights modes disagree",
			edit: func(v *view) {
				c := proto.Clone(v.clusters["batchmesh|emb|v1"]).(*cluster.Cluster)
				c.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()["weights"] = structpb.NewStringValue("adaptive")
				v.clusters[c.GetName()] = c
			},
			contains: "one control plane sets one mode",
		},
		{
			name: "service addresses not a list",
			edit: func(v *view) {
				c := proto.Clone(v.clusters["batchmesh|bert|1"]).(*cluster.Cluster)
				c.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()["service_addresses"] = structpb.NewStringValue("10.96.0.10:8000")
				v.clusters[c.GetName()] = c
			},
			contains: `cluster "batchmesh|bert|1" metadata: service_addresses: wrong type`,
		},
		{
			name: "service address not a string",
			edit: func(v *view) {
				c := proto.Clone(v.clusters["batchmesh|bert|1"]).(*cluster.Cluster)
				l, _ := structpb.NewList([]any{"10.96.0.10:8000", 8000.0})
				c.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()["service_addresses"] = structpb.NewListValue(l)
				v.clusters[c.GetName()] = c
			},
			contains: "service_addresses[1]: wrong type",
		},
		{
			name: "model name mismatch",
			edit: func(v *view) {
				c := proto.Clone(v.clusters["batchmesh|emb|v1"]).(*cluster.Cluster)
				c.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()["model"] = structpb.NewStringValue("other")
				v.clusters[c.GetName()] = c
			},
			contains: "disagrees with the cluster name",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := served(t, testConfig(90, 10, 3))
			tt.edit(v)
			_, err := translate(v)
			if err == nil {
				t.Fatal("no error")
			}
			inc, isInc := errors.AsType[*incompleteError](err)
			switch {
			case tt.incomplete != nil && !isInc:
				t.Fatalf("%v: want an incomplete error", err)
			case tt.incomplete != nil && !slices.Equal(inc.types, tt.incomplete):
				t.Fatalf("%v: types %q, want %q", err, inc.types, tt.incomplete)
			case tt.incomplete == nil && isInc:
				t.Fatalf("%v: want a plain error", err)
			case !strings.Contains(err.Error(), tt.contains):
				t.Fatalf("%v: want %q in it", err, tt.contains)
			}
		})
	}
}

// An unrouted model (its clusters arrived before its route) is left out,
// not an error.
func TestTranslateUnroutedModel(t *testing.T) {
	v := served(t, testConfig(90, 10, 3))
	rc := proto.Clone(v.routes[RouteName]).(*route.RouteConfiguration)
	vh := rc.GetVirtualHosts()[0]
	vh.Routes = slices.DeleteFunc(vh.Routes, func(r *route.Route) bool { return strings.HasPrefix(r.GetName(), "emb|") })
	v.routes[RouteName] = rc
	got, err := translate(v)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Models) != 1 || got.Models[0].Name != "bert" {
		t.Fatalf("models %+v, want bert alone", got.Models)
	}
}

// TestTranslateDraining checks that an endpoint the control plane sends
// DRAINING (a terminating Kubernetes endpoint) leaves the sidecar's
// config: no new batch or pass-through call goes to it, and the lane that
// held it is retired, finishing what it has in flight.
func TestTranslateDraining(t *testing.T) {
	cfg := testConfig(90, 10, 3)
	cfg.Models[0].Versions[0].Endpoints[1].Draining = true
	got, err := translate(served(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, e := range got.Models[0].Versions[0].Endpoints {
		addrs = append(addrs, e.Address)
	}
	if !slices.Equal(addrs, []string{"127.0.0.1:8000"}) {
		t.Errorf("version 1's endpoints %v, want only the one not draining", addrs)
	}
	if err := got.Validate(); err != nil {
		t.Error(err)
	}
}
