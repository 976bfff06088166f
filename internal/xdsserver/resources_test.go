package xdsserver

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"

	"github.com/batchmesh/batchmesh/internal/config"
)

// splitYAML has two versions 90/10; version 1 has endpoints in zones a and
// b, version 2 one endpoint without zone, and a weight-0 endpoint.
const splitYAML = `
models:
  - name: bert
    batching: {max_batch_size: 32, max_queue_delay: 3ms, max_queue_size: 100, batch_policy: transit, timeout: 2s}
    cache: {enabled: true, ttl: 5m, scope: tenant}
    versions:
      - version: "1"
        weight: 90
        endpoints:
          - {address: 127.0.0.1:8000, weight: 1, slots: 2, zone: a}
          - {address: 127.0.0.1:8001, weight: 2, zone: a}
          - {address: 127.0.0.1:8002, weight: 3, zone: b}
      - version: "2"
        weight: 10
        endpoints:
          - {address: 127.0.0.1:8003}
          - {address: 127.0.0.1:8004, weight: 0}
`

const threeModelsYAML = `
models:
  - name: bert
    versions:
      - version: "1"
        endpoints: [{address: 127.0.0.1:8000}]
      - version: "2"
        weight: 0
        endpoints: [{address: 127.0.0.1:8001}]
  - name: embed
    protocol: openai
    versions:
      - version: v1
        endpoints: [{address: 10.0.0.1:9000, zone: z}]
  - name: tf
    protocol: tfserving
    versions:
      - version: "7"
        endpoints: [{address: "[::1]:8500"}]
`

func mustParse(t testing.TB, yaml string) *config.Config {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return c
}

// locality is a flat view of a LocalityLbEndpoints for comparisons.
type locality struct {
	zone      string
	weight    uint32
	endpoints []string // address:port=weight
}

func flatten(cla *endpoint.ClusterLoadAssignment) []locality {
	var out []locality
	for _, l := range cla.GetEndpoints() {
		fl := locality{zone: l.GetLocality().GetZone(), weight: l.GetLoadBalancingWeight().GetValue()}
		for _, e := range l.GetLbEndpoints() {
			a := e.GetEndpoint().GetAddress().GetSocketAddress()
			fl.endpoints = append(fl.endpoints, a.GetAddress()+":"+itoa(a.GetPortValue())+"="+itoa(e.GetLoadBalancingWeight().GetValue()))
		}
		out = append(out, fl)
	}
	return out
}

func itoa(u uint32) string { return strconv.FormatUint(uint64(u), 10) }

func byName[T types.Resource](rs []types.Resource) map[string]T {
	out := map[string]T{}
	for _, r := range rs {
		out[cache.GetResourceName(r)] = r.(T)
	}
	return out
}

// weights flattens weighted_clusters into name=weight.
func weights(a *route.RouteAction) []string {
	var out []string
	for _, c := range a.GetWeightedClusters().GetClusters() {
		out = append(out, c.GetName()+"="+itoa(c.GetWeight().GetValue()))
	}
	return out
}

func TestResources(t *testing.T) {
	tests := []struct {
		name          string
		yaml          string
		wantListeners []string
		wantClusters  []string
		wantLocal     map[string][]locality // by cluster name
		wantRoutes    map[string][]string   // route name → weighted clusters
		wantPaths     map[string]string     // route name → prefix or path
	}{
		{
			name:          "two versions 90/10 with zones and no zone",
			yaml:          splitYAML,
			wantListeners: []string{"batchmesh-outbound", "bert"},
			wantClusters:  []string{"batchmesh|bert|1", "batchmesh|bert|2"},
			wantLocal: map[string][]locality{
				"batchmesh|bert|1": {
					{zone: "a", weight: 3, endpoints: []string{"127.0.0.1:8000=1", "127.0.0.1:8001=2"}},
					{zone: "b", weight: 3, endpoints: []string{"127.0.0.1:8002=3"}},
				},
				"batchmesh|bert|2": {
					{zone: "", weight: 1, endpoints: []string{"127.0.0.1:8003=1"}},
				},
			},
			wantRoutes: map[string][]string{"bert|v2": {"batchmesh|bert|1=90", "batchmesh|bert|2=10"}},
			wantPaths:  map[string]string{"bert|v2": "/v2/models/bert/"},
		},
		{
			name:          "three protocols, a version of weight 0",
			yaml:          threeModelsYAML,
			wantListeners: []string{"batchmesh-outbound", "bert", "embed", "tf"},
			wantClusters:  []string{"batchmesh|bert|1", "batchmesh|bert|2", "batchmesh|embed|v1", "batchmesh|tf|7"},
			wantLocal: map[string][]locality{
				"batchmesh|embed|v1": {{zone: "z", weight: 1, endpoints: []string{"10.0.0.1:9000=1"}}},
				"batchmesh|tf|7":     {{zone: "", weight: 1, endpoints: []string{"::1:8500=1"}}},
			},
			wantRoutes: map[string][]string{
				"bert|v2":               {"batchmesh|bert|1=1"},
				"embed|openai":          {"batchmesh|embed|v1=1"},
				"tf|tfserving":          {"batchmesh|tf|7=1"},
				"tf|tfserving-versions": {"batchmesh|tf|7=1"},
			},
			wantPaths: map[string]string{
				"embed|v2":              "/v2/models/embed/",
				"embed|openai":          "/v1/embeddings",
				"tf|tfserving":          "/v1/models/tf:predict",
				"tf|tfserving-versions": "/v1/models/tf/",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Resources(mustParse(t, tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			for typ, list := range rs {
				for _, r := range list {
					if err := validate(r); err != nil {
						t.Errorf("%s %s: Validate: %v", typ, cache.GetResourceName(r), err)
					}
				}
			}
			ls := byName[*listener.Listener](rs[resource.ListenerType])
			rcs := byName[*route.RouteConfiguration](rs[resource.RouteType])
			if got := slices.Sorted(maps.Keys(ls)); !slices.Equal(got, tt.wantListeners) {
				t.Errorf("listeners = %v, want %v", got, tt.wantListeners)
			}
			checkOutbound(t, ls[OutboundListener])
			for _, name := range tt.wantListeners[1:] {
				checkAPIListener(t, ls[name], rcs)
			}
			if len(rcs) != len(tt.wantListeners) {
				t.Errorf("%d route configs, want one per listener", len(rcs))
			}

			cs := byName[*cluster.Cluster](rs[resource.ClusterType])
			if got := slices.Sorted(maps.Keys(cs)); !slices.Equal(got, tt.wantClusters) {
				t.Errorf("clusters = %v, want %v", got, tt.wantClusters)
			}
			for name, c := range cs {
				if c.GetType() != cluster.Cluster_EDS || c.GetLbPolicy() != cluster.Cluster_LEAST_REQUEST {
					t.Errorf("%s: type %v lb %v, want EDS LEAST_REQUEST", name, c.GetType(), c.GetLbPolicy())
				}
				if c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil || c.GetEdsClusterConfig().GetServiceName() != name {
					t.Errorf("%s: eds config %v, want ads and service name = cluster name", name, c.GetEdsClusterConfig())
				}
			}

			cla := byName[*endpoint.ClusterLoadAssignment](rs[resource.EndpointType])
			for name, want := range tt.wantLocal {
				got := flatten(cla[name])
				if !slices.EqualFunc(got, want, func(a, b locality) bool {
					return a.zone == b.zone && a.weight == b.weight && slices.Equal(a.endpoints, b.endpoints)
				}) {
					t.Errorf("%s localities = %+v, want %+v", name, got, want)
				}
				for _, l := range cla[name].GetEndpoints() {
					for _, e := range l.GetLbEndpoints() {
						if e.GetHealthStatus() != core.HealthStatus_HEALTHY {
							t.Errorf("%s: health %v, want HEALTHY", name, e.GetHealthStatus())
						}
					}
				}
			}

			rc := byName[*route.RouteConfiguration](rs[resource.RouteType])[RouteName]
			if rc == nil || len(rc.GetVirtualHosts()) != 1 || !slices.Equal(rc.GetVirtualHosts()[0].GetDomains(), []string{"*"}) {
				t.Fatalf("route config %s: want one virtual host with domains [*], got %v", RouteName, rc)
			}
			routes := map[string]*route.Route{}
			for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
				routes[r.GetName()] = r
			}
			for name, want := range tt.wantRoutes {
				if got := weights(routes[name].GetRoute()); !slices.Equal(got, want) {
					t.Errorf("route %s weights = %v, want %v", name, got, want)
				}
			}
			for name, want := range tt.wantPaths {
				m := routes[name].GetMatch()
				if got := m.GetPrefix() + m.GetPath(); got != want {
					t.Errorf("route %s matches %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestResourcesMetadata(t *testing.T) {
	rs, err := Resources(mustParse(t, splitYAML))
	if err != nil {
		t.Fatal(err)
	}
	c := byName[*cluster.Cluster](rs[resource.ClusterType])["batchmesh|bert|1"]
	md := c.GetMetadata().GetFilterMetadata()[MetadataKey].AsMap()
	b := md["batching"].(map[string]any)
	ch := md["cache"].(map[string]any)
	for _, tc := range []struct {
		key       string
		got, want any
	}{
		{"model", md["model"], "bert"},
		{"version", md["version"], "1"},
		{"protocol", md["protocol"], "v2"},
		{"batching.max_batch_size", b["max_batch_size"], 32.0},
		{"batching.max_queue_size", b["max_queue_size"], 100.0},
		{"batching.max_queue_delay", b["max_queue_delay"], "3ms"},
		{"batching.timeout", b["timeout"], "2s"},
		{"batching.batch_policy", b["batch_policy"], "transit"},
		{"cache.enabled", ch["enabled"], true},
		{"cache.ttl", ch["ttl"], "5m0s"},
		{"cache.granularity", ch["granularity"], "row"},
		{"cache.scope", ch["scope"], "tenant"},
	} {
		if tc.got != tc.want {
			t.Errorf("metadata %s = %v (%T), want %v", tc.key, tc.got, tc.got, tc.want)
		}
	}
	cla := byName[*endpoint.ClusterLoadAssignment](rs[resource.EndpointType])["batchmesh|bert|1"]
	slots := cla.GetEndpoints()[0].GetLbEndpoints()[0].GetMetadata().GetFilterMetadata()[MetadataKey].AsMap()["slots"]
	if slots != 2.0 {
		t.Errorf("endpoint slots = %v, want 2", slots)
	}
}

func TestResourcesRejects(t *testing.T) {
	c := mustParse(t, splitYAML)
	c.Models[0].Name = OutboundListener
	if _, err := Resources(c); err == nil {
		t.Error("a model named like the outbound listener: no error")
	}
	c = mustParse(t, splitYAML)
	c.Models[0].Versions[0].Weight, c.Models[0].Versions[1].Weight = 0, 0
	if _, err := Resources(c); err == nil {
		t.Error("versions summing to weight 0: no error")
	}
	if _, err := Resources(nil); err == nil {
		t.Error("nil config: no error")
	}
}

func checkOutbound(t *testing.T, l *listener.Listener) {
	t.Helper()
	if l == nil {
		t.Fatal("no outbound listener")
	}
	if p := l.GetAddress().GetSocketAddress().GetPortValue(); p != OutboundPort {
		t.Errorf("outbound port = %d", p)
	}
	m := hcmOf(t, l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().GetValue(), l.GetName())
	if m.GetRds().GetConfigSource().GetAds() == nil || m.GetRds().GetRouteConfigName() != RouteName {
		t.Errorf("outbound rds = %v, want ads and %s", m.GetRds(), RouteName)
	}
	checkRouterLast(t, m, l.GetName())
}

// checkAPIListener checks a model's api_listener and the route config it
// names over RDS: prefix "/" to weighted clusters of that model only.
func checkAPIListener(t *testing.T, l *listener.Listener, rcs map[string]*route.RouteConfiguration) {
	t.Helper()
	if l == nil {
		t.Fatal("missing api listener")
	}
	m := hcmOf(t, l.GetApiListener().GetApiListener().GetValue(), l.GetName())
	if m.GetRds().GetConfigSource().GetAds() == nil || m.GetRds().GetRouteConfigName() != ProxylessRouteName(l.GetName()) {
		t.Fatalf("%s: rds = %v, want ads and %s", l.GetName(), m.GetRds(), ProxylessRouteName(l.GetName()))
	}
	checkRouterLast(t, m, l.GetName())
	vh := rcs[ProxylessRouteName(l.GetName())].GetVirtualHosts()
	if len(vh) != 1 || len(vh[0].GetRoutes()) != 1 || vh[0].GetRoutes()[0].GetMatch().GetPrefix() != "/" {
		t.Fatalf("%s: route config = %v, want one route with prefix /", l.GetName(), rcs[ProxylessRouteName(l.GetName())])
	}
	cs := vh[0].GetRoutes()[0].GetRoute().GetWeightedClusters().GetClusters()
	if len(cs) == 0 {
		t.Errorf("%s: no weighted clusters", l.GetName())
	}
	for _, c := range cs {
		if !strings.HasPrefix(c.GetName(), "batchmesh|"+l.GetName()+"|") {
			t.Errorf("%s routes to %s", l.GetName(), c.GetName())
		}
	}
}

func hcmOf(t *testing.T, b []byte, name string) *hcm.HttpConnectionManager {
	t.Helper()
	m := &hcm.HttpConnectionManager{}
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatalf("%s: hcm: %v", name, err)
	}
	return m
}

func checkRouterLast(t *testing.T, m *hcm.HttpConnectionManager, name string) {
	t.Helper()
	fs := m.GetHttpFilters()
	if len(fs) == 0 || fs[len(fs)-1].GetName() != wellknown.Router {
		t.Errorf("%s: http filters %v, want router last", name, fs)
	}
}

// TestResourcesDraining checks that a draining endpoint (Kubernetes
// discovery's serving and terminating) is sent with health DRAINING and
// the others HEALTHY.
func TestResourcesDraining(t *testing.T) {
	cfg := mustParse(t, "models: [{name: m, versions: [{version: 1, endpoints: [{address: 10.0.0.1:80}, {address: 10.0.0.2:80}]}]}]\n")
	cfg.Models[0].Versions[0].Endpoints[1].Draining = true
	rs, err := Resources(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cla := byName[*endpoint.ClusterLoadAssignment](rs[resource.EndpointType])[ClusterName("m", "1")]
	got := map[string]core.HealthStatus{}
	for _, loc := range cla.GetEndpoints() {
		for _, e := range loc.GetLbEndpoints() {
			got[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = e.GetHealthStatus()
		}
	}
	want := map[string]core.HealthStatus{"10.0.0.1": core.HealthStatus_HEALTHY, "10.0.0.2": core.HealthStatus_DRAINING}
	if !maps.Equal(got, want) {
		t.Errorf("health by address %v, want %v", got, want)
	}
}
