package xdsclient

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/batchmesh/batchmesh/internal/config"
)

// Names the control plane uses. They match the constants of
// internal/xdsserver, which a test checks; the sidecar does not link the
// server.
const (
	// OutboundListener is the Listener the client subscribes to.
	OutboundListener = "batchmesh-outbound"
	// RouteName is the RouteConfiguration OutboundListener must use over RDS.
	RouteName = "batchmesh"
	// MetadataKey is the filter_metadata key of the batching and cache
	// settings of a cluster and of the slots of an endpoint.
	MetadataKey = "batchmesh"
)

// view is one resource of each kind the config is built from, by name.
// Nothing in it is modified.
type view struct {
	listeners map[string]*listener.Listener
	routes    map[string]*route.RouteConfiguration
	clusters  map[string]*cluster.Cluster
	loads     map[string]*endpoint.ClusterLoadAssignment
}

// incompleteError says that the view misses resources that responses of
// the listed types may still bring: the client waits rather than NACKs.
type incompleteError struct {
	types []string // type URLs that can supply what is missing
	what  string
}

func (e *incompleteError) Error() string { return "xdsclient: incomplete config: " + e.what }

func incomplete(what string, types ...string) error {
	return &incompleteError{types: types, what: what}
}

// loadNames returns the sorted names of the ClusterLoadAssignments of the
// EDS clusters of clusters: the EDS subscription. It lists those of other
// clusters than batchmesh ones too, since go-control-plane answers an ADS
// request only if it names every resource of the type in the snapshot.
func loadNames(clusters map[string]*cluster.Cluster) []string {
	var names []string
	for _, c := range clusters {
		if c.GetType() == cluster.Cluster_EDS {
			names = append(names, loadName(c))
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func loadName(c *cluster.Cluster) string {
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return c.GetName()
}

// translate builds a config from v. It returns an *incompleteError while v
// lacks a resource the others refer to, and any other error when v cannot
// be used. The result is new and the caller's; it is not validated.
//
// Only models that the route sends traffic to are included, so a model
// whose clusters arrive before its routes (or whose routes leave before its
// clusters) is not a half-built model. Versions of a routed model that no
// route names get weight 0. The settings xDS does not carry take their
// defaults: CacheBytes is config.DefaultCacheBytes; Weights is the
// clusters' "weights" metadata (static when absent); OutlierDetection is
// the clusters' outlier_detection (outlier.go).
func translate(v *view) (*config.Config, error) {
	if err := checkListener(v.listeners); err != nil {
		return nil, err
	}
	rc, ok := v.routes[RouteName]
	if !ok {
		return nil, incomplete(fmt.Sprintf("no RouteConfiguration %q", RouteName), typeRoute)
	}
	models, err := batchmeshClusters(v.clusters)
	if err != nil {
		return nil, err
	}
	rt, err := routeVersions(rc, v.clusters, models)
	if err != nil {
		return nil, err
	}
	byVersion, unrouted, err := indexVersions(models, rt.routed)
	if err != nil {
		return nil, err
	}
	cfg, err := buildConfig(v.loads, rt, byVersion, unrouted)
	if err != nil {
		return nil, err
	}
	if cfg.OutlierDetection, err = outlierOfClusters(v.clusters, models); err != nil {
		return nil, err
	}
	return cfg, nil
}

// versionKey names one version of one model.
type versionKey struct{ model, version string }

// routing is what the routes say about the batchmesh clusters.
type routing struct {
	order   []string            // models in order of first route
	routed  map[versionKey]int  // weight
	byModel map[string][]string // model → routed versions, in order
}

// batchmeshClusters reads the metadata of the batchmesh clusters among
// clusters, by cluster name.
func batchmeshClusters(clusters map[string]*cluster.Cluster) (map[string]*clusterMD, error) {
	models := map[string]*clusterMD{} // cluster name → its metadata
	for name, c := range clusters {
		if !strings.HasPrefix(name, config.ClusterPrefix) { // not batchmesh's: ignored
			continue
		}
		md, err := clusterMetadata(c)
		if err != nil {
			return nil, err
		}
		models[name] = md
	}
	return models, nil
}

// routeVersions lists the model versions that rc sends traffic to, with
// their weights; models holds the metadata of the batchmesh clusters.
func routeVersions(rc *route.RouteConfiguration, clusters map[string]*cluster.Cluster, models map[string]*clusterMD) (*routing, error) {
	rt := &routing{routed: map[versionKey]int{}, byModel: map[string][]string{}}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			for _, cw := range routeClusters(r) {
				name, weight := cw.name, cw.weight
				c, ok := clusters[name]
				if !ok {
					return nil, incomplete(fmt.Sprintf("route %q refers to cluster %q, which is not known", r.GetName(), name), typeCluster, typeRoute)
				}
				md := models[c.GetName()]
				if md == nil {
					return nil, fmt.Errorf("xdsclient: route %q refers to cluster %q, which is not a batchmesh cluster", r.GetName(), name)
				}
				k := versionKey{md.model, md.version}
				if w, seen := rt.routed[k]; seen {
					if w != weight {
						return nil, fmt.Errorf("xdsclient: routes give cluster %q weights %d and %d", name, w, weight)
					}
					continue
				}
				rt.routed[k] = weight
				if _, seen := rt.byModel[md.model]; !seen {
					rt.order = append(rt.order, md.model)
				}
				rt.byModel[md.model] = append(rt.byModel[md.model], md.version)
			}
		}
	}
	return rt, nil
}

// indexVersions returns the batchmesh clusters by model version, refusing
// two clusters of one version, and by model the versions no route names.
func indexVersions(models map[string]*clusterMD, routed map[versionKey]int) (map[versionKey]*clusterMD, map[string][]string, error) {
	// Versions no route names, sorted, after the routed ones.
	unrouted := map[string][]string{}
	byVersion := map[versionKey]*clusterMD{}
	for _, name := range slices.Sorted(maps.Keys(models)) {
		md := models[name]
		k := versionKey{md.model, md.version}
		if prev, dup := byVersion[k]; dup {
			return nil, nil, fmt.Errorf("xdsclient: clusters %q and %q are both version %q of model %q", prev.name, name, md.version, md.model)
		}
		byVersion[k] = md
		if _, ok := routed[k]; !ok {
			unrouted[md.model] = append(unrouted[md.model], md.version)
		}
	}
	return byVersion, unrouted, nil
}

// buildConfig builds the config of the routed models: each with its routed
// versions in route order, then its unrouted ones, and their endpoints.
func buildConfig(loads map[string]*endpoint.ClusterLoadAssignment, rt *routing, byVersion map[versionKey]*clusterMD, unrouted map[string][]string) (*config.Config, error) {
	cfg := &config.Config{CacheBytes: config.DefaultCacheBytes, Weights: config.WeightsStatic}
	var weightsFrom string // the cluster that set cfg.Weights
	for _, model := range rt.order {
		var m config.Model
		for i, version := range append(rt.byModel[model], unrouted[model]...) {
			k := versionKey{model, version}
			md := byVersion[k]
			if weightsFrom == "" {
				cfg.Weights, weightsFrom = md.weights, md.name
			} else if md.weights != cfg.Weights {
				return nil, fmt.Errorf("xdsclient: cluster %q has weights %q but cluster %q has %q: one control plane sets one mode", md.name, md.weights, weightsFrom, cfg.Weights)
			}
			if i == 0 {
				m = config.Model{Name: model, Protocol: md.protocol, Batching: md.batching, Cache: md.cache,
					CircuitBreakers: md.breakers, Hedging: md.hedging}
			} else if md.protocol != m.Protocol || md.batching != m.Batching || md.cache != m.Cache ||
				md.breakers != m.CircuitBreakers || md.hedging != m.Hedging {
				return nil, fmt.Errorf("xdsclient: model %q: the metadata of cluster %q disagrees with its other versions", model, md.name)
			}
			cla, ok := loads[md.load]
			if !ok {
				return nil, incomplete(fmt.Sprintf("cluster %q has no ClusterLoadAssignment %q yet", md.name, md.load), typeEndpoint)
			}
			eps, err := endpoints(cla)
			if err != nil {
				return nil, err
			}
			m.Versions = append(m.Versions, config.Version{Version: version, Weight: rt.routed[k], Endpoints: eps, ServiceAddresses: md.serviceAddrs})
		}
		cfg.Models = append(cfg.Models, m)
	}
	return cfg, nil
}

// checkListener checks that OutboundListener exists and takes its routes
// from RouteName over RDS.
func checkListener(ls map[string]*listener.Listener) error {
	l, ok := ls[OutboundListener]
	if !ok {
		return incomplete(fmt.Sprintf("no Listener %q", OutboundListener), typeListener)
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc == nil {
				continue
			}
			m := &hcm.HttpConnectionManager{}
			if tc.MessageIs(m) {
				if err := tc.UnmarshalTo(m); err != nil {
					return fmt.Errorf("xdsclient: listener %q: %w", OutboundListener, err)
				}
				if name := m.GetRds().GetRouteConfigName(); name != RouteName {
					return fmt.Errorf("xdsclient: listener %q routes with %q over RDS; want %q", OutboundListener, name, RouteName)
				}
				return nil
			}
		}
	}
	return fmt.Errorf("xdsclient: listener %q has no HttpConnectionManager", OutboundListener)
}

type clusterWeight struct {
	name   string
	weight int
}

// routeClusters returns the clusters a route sends traffic to, in order,
// with their weights: a single cluster has weight 1.
func routeClusters(r *route.Route) []clusterWeight {
	a := r.GetRoute()
	if a == nil {
		return nil
	}
	if c := a.GetCluster(); c != "" {
		return []clusterWeight{{c, 1}}
	}
	var out []clusterWeight
	for _, cw := range a.GetWeightedClusters().GetClusters() {
		w := 1
		if cw.GetWeight() != nil {
			w = int(cw.GetWeight().GetValue())
		}
		out = append(out, clusterWeight{cw.GetName(), w})
	}
	return out
}

// endpoints lists a ClusterLoadAssignment's endpoints that may take traffic
// (health HEALTHY or UNKNOWN), with the zone of their locality.
func endpoints(cla *endpoint.ClusterLoadAssignment) ([]config.Endpoint, error) {
	var out []config.Endpoint
	for _, loc := range cla.GetEndpoints() {
		zone := loc.GetLocality().GetZone()
		for _, lb := range loc.GetLbEndpoints() {
			switch lb.GetHealthStatus() {
			case core.HealthStatus_HEALTHY, core.HealthStatus_UNKNOWN:
			default:
				continue
			}
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, fmt.Errorf("xdsclient: load assignment %q: an endpoint has no socket address", cla.GetClusterName())
			}
			addr := net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
			e := config.Endpoint{Address: addr, Weight: config.DefaultWeight, Slots: config.DefaultSlots, Zone: zone}
			if w := lb.GetLoadBalancingWeight(); w != nil {
				e.Weight = int(w.GetValue())
			}
			if s := lb.GetMetadata().GetFilterMetadata()[MetadataKey]; s != nil {
				r := &mdReader{at: "endpoint " + addr + " of " + strconv.Quote(cla.GetClusterName())}
				e.Slots = r.int(s.GetFields(), "slots", e.Slots)
				e.Protocol = r.str(s.GetFields(), "protocol", e.Protocol)
				if r.err != nil {
					return nil, r.err
				}
			}
			out = append(out, e)
		}
	}
	return out, nil
}
