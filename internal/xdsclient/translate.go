package xdsclient

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"

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
	// clusterPrefix starts the name of every batchmesh cluster:
	// batchmesh|{model}|{version}. Other clusters are ignored.
	clusterPrefix = "batchmesh|"
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
// clusters' "weights" metadata (static when absent).
func translate(v *view) (*config.Config, error) {
	if err := checkListener(v.listeners); err != nil {
		return nil, err
	}
	rc, ok := v.routes[RouteName]
	if !ok {
		return nil, incomplete(fmt.Sprintf("no RouteConfiguration %q", RouteName), typeRoute)
	}
	type versionKey struct{ model, version string }
	var (
		order   []string                  // models in order of first route
		routed  = map[versionKey]int{}    // weight
		byModel = map[string][]string{}   // model → routed versions, in order
		models  = map[string]*clusterMD{} // cluster name → its metadata
	)
	for name, c := range v.clusters {
		if !strings.HasPrefix(name, clusterPrefix) {
			continue
		}
		md, err := clusterMetadata(c)
		if err != nil {
			return nil, err
		}
		models[name] = md
	}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			for _, cw := range routeClusters(r) {
				name, weight := cw.name, cw.weight
				c, ok := v.clusters[name]
				if !ok {
					return nil, incomplete(fmt.Sprintf("route %q refers to cluster %q, which is not known", r.GetName(), name), typeCluster, typeRoute)
				}
				md := models[c.GetName()]
				if md == nil {
					return nil, fmt.Errorf("xdsclient: route %q refers to cluster %q, which is not a batchmesh cluster", r.GetName(), name)
				}
				k := versionKey{md.model, md.version}
				if w, seen := routed[k]; seen {
					if w != weight {
						return nil, fmt.Errorf("xdsclient: routes give cluster %q weights %d and %d", name, w, weight)
					}
					continue
				}
				routed[k] = weight
				if _, seen := byModel[md.model]; !seen {
					order = append(order, md.model)
				}
				byModel[md.model] = append(byModel[md.model], md.version)
			}
		}
	}

	// Versions no route names, sorted, after the routed ones.
	unrouted := map[string][]string{}
	byVersion := map[versionKey]*clusterMD{}
	for _, name := range slices.Sorted(maps.Keys(models)) {
		md := models[name]
		k := versionKey{md.model, md.version}
		if prev, dup := byVersion[k]; dup {
			return nil, fmt.Errorf("xdsclient: clusters %q and %q are both version %q of model %q", prev.name, name, md.version, md.model)
		}
		byVersion[k] = md
		if _, ok := routed[k]; !ok {
			unrouted[md.model] = append(unrouted[md.model], md.version)
		}
	}

	cfg := &config.Config{CacheBytes: config.DefaultCacheBytes, Weights: config.WeightsStatic}
	var weightsFrom string // the cluster that set cfg.Weights
	for _, model := range order {
		var m config.Model
		for i, version := range append(byModel[model], unrouted[model]...) {
			k := versionKey{model, version}
			md := byVersion[k]
			if weightsFrom == "" {
				cfg.Weights, weightsFrom = md.weights, md.name
			} else if md.weights != cfg.Weights {
				return nil, fmt.Errorf("xdsclient: cluster %q has weights %q but cluster %q has %q: one control plane sets one mode", md.name, md.weights, weightsFrom, cfg.Weights)
			}
			if i == 0 {
				m = config.Model{Name: model, Protocol: md.protocol, Batching: md.batching, Cache: md.cache}
			} else if md.protocol != m.Protocol || md.batching != m.Batching || md.cache != m.Cache {
				return nil, fmt.Errorf("xdsclient: model %q: the metadata of cluster %q disagrees with its other versions", model, md.name)
			}
			cla, ok := v.loads[md.load]
			if !ok {
				return nil, incomplete(fmt.Sprintf("cluster %q has no ClusterLoadAssignment %q yet", md.name, md.load), typeEndpoint)
			}
			eps, err := endpoints(cla)
			if err != nil {
				return nil, err
			}
			m.Versions = append(m.Versions, config.Version{Version: version, Weight: routed[k], Endpoints: eps})
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

// clusterMD is what a batchmesh cluster says about its model version.
type clusterMD struct {
	name, load     string
	model, version string
	protocol       string
	weights        string
	batching       config.Batching
	cache          config.Cache
}

// clusterMetadata reads a batchmesh cluster's name and its
// filter_metadata["batchmesh"]. Keys absent there take their defaults.
func clusterMetadata(c *cluster.Cluster) (*clusterMD, error) {
	name := c.GetName()
	model, version, ok := strings.Cut(strings.TrimPrefix(name, clusterPrefix), "|")
	if !ok || model == "" || version == "" {
		return nil, fmt.Errorf("xdsclient: cluster %q: the name is not batchmesh|{model}|{version}", name)
	}
	if c.GetType() != cluster.Cluster_EDS {
		return nil, fmt.Errorf("xdsclient: cluster %q: type %v; want EDS", name, c.GetType())
	}
	s := c.GetMetadata().GetFilterMetadata()[MetadataKey]
	if s == nil {
		return nil, fmt.Errorf("xdsclient: cluster %q has no %q metadata", name, MetadataKey)
	}
	md := &clusterMD{
		name: name, load: loadName(c), model: model, version: version,
		protocol: config.DefaultProtocol, batching: config.DefaultBatching(), cache: config.DefaultCache(),
	}
	r := &mdReader{at: "cluster " + strconv.Quote(name) + " metadata"}
	f := s.GetFields()
	if m := r.str(f, "model", model); m != model {
		r.fail("model", fmt.Errorf("%q disagrees with the cluster name", m))
	}
	if v := r.str(f, "version", version); v != version {
		r.fail("version", fmt.Errorf("%q disagrees with the cluster name", v))
	}
	md.protocol = r.str(f, "protocol", md.protocol)
	switch md.weights = r.str(f, "weights", config.WeightsStatic); md.weights {
	case config.WeightsStatic, config.WeightsAdaptive:
	default:
		r.fail("weights", fmt.Errorf("%q is not one of %s, %s", md.weights, config.WeightsStatic, config.WeightsAdaptive))
	}
	if b := r.sub(f, "batching"); b != nil {
		md.batching.MaxBatchSize = r.int(b, "max_batch_size", md.batching.MaxBatchSize)
		md.batching.MaxQueueSize = r.int(b, "max_queue_size", md.batching.MaxQueueSize)
		md.batching.MaxQueueDelay = r.duration(b, "max_queue_delay", md.batching.MaxQueueDelay)
		md.batching.Timeout = r.duration(b, "timeout", md.batching.Timeout)
	}
	if cm := r.sub(f, "cache"); cm != nil {
		md.cache.Enabled = r.bool(cm, "enabled", md.cache.Enabled)
		md.cache.TTL = r.duration(cm, "ttl", md.cache.TTL)
		md.cache.Granularity = r.str(cm, "granularity", md.cache.Granularity)
		md.cache.Scope = r.str(cm, "scope", md.cache.Scope)
	}
	if r.err != nil {
		return nil, r.err
	}
	return md, nil
}

// mdReader reads typed fields of a metadata Struct and keeps the first
// error.
type mdReader struct {
	at  string
	err error
}

func (r *mdReader) fail(key string, err error) {
	if r.err == nil {
		r.err = fmt.Errorf("xdsclient: %s: %s: %w", r.at, key, err)
	}
}

var errType = errors.New("wrong type")

func (r *mdReader) sub(f map[string]*structpb.Value, key string) map[string]*structpb.Value {
	v, ok := f[key]
	if !ok {
		return nil
	}
	s := v.GetStructValue()
	if s == nil {
		r.fail(key, errType)
		return nil
	}
	return s.GetFields()
}

func (r *mdReader) str(f map[string]*structpb.Value, key, def string) string {
	v, ok := f[key]
	if !ok {
		return def
	}
	s, ok := v.GetKind().(*structpb.Value_StringValue)
	if !ok {
		r.fail(key, errType)
		return def
	}
	return s.StringValue
}

func (r *mdReader) bool(f map[string]*structpb.Value, key string, def bool) bool {
	v, ok := f[key]
	if !ok {
		return def
	}
	b, ok := v.GetKind().(*structpb.Value_BoolValue)
	if !ok {
		r.fail(key, errType)
		return def
	}
	return b.BoolValue
}

func (r *mdReader) int(f map[string]*structpb.Value, key string, def int) int {
	v, ok := f[key]
	if !ok {
		return def
	}
	n, err := wholeNumber(v)
	if err != nil {
		r.fail(key, err)
		return def
	}
	return n
}

func (r *mdReader) duration(f map[string]*structpb.Value, key string, def time.Duration) time.Duration {
	s := r.str(f, key, "")
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		r.fail(key, err)
		return def
	}
	return d
}

// wholeNumber returns a Struct number that is an integer an int holds.
func wholeNumber(v *structpb.Value) (int, error) {
	n, ok := v.GetKind().(*structpb.Value_NumberValue)
	if !ok {
		return 0, errType
	}
	f := n.NumberValue
	if f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxUint32 {
		return 0, fmt.Errorf("%v is not a whole number in range", f)
	}
	return int(f), nil
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
				if r.err != nil {
					return nil, r.err
				}
			}
			out = append(out, e)
		}
	}
	return out, nil
}
