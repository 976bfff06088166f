package xdsclient

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/batchmesh/batchmesh/internal/config"
)

// clusterMD is what a batchmesh cluster says about its model version.
type clusterMD struct {
	name, load     string
	model, version string
	protocol       string
	weights        string
	batching       config.Batching
	cache          config.Cache
	breakers       config.CircuitBreakers
	hedging        config.Hedging
	serviceAddrs   []string // the version's Service addresses, ip:port
}

// clusterMetadata reads a batchmesh cluster's name and its
// filter_metadata["batchmesh"]. Keys absent there take their defaults.
func clusterMetadata(c *cluster.Cluster) (*clusterMD, error) {
	name := c.GetName()
	model, version, ok := config.ParseClusterName(name)
	if !ok {
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
		md.batching.Policy = r.str(b, "batch_policy", md.batching.Policy)
	}
	if cm := r.sub(f, "cache"); cm != nil {
		md.cache.Enabled = r.bool(cm, "enabled", md.cache.Enabled)
		md.cache.TTL = r.duration(cm, "ttl", md.cache.TTL)
		md.cache.Granularity = r.str(cm, "granularity", md.cache.Granularity)
		md.cache.Scope = r.str(cm, "scope", md.cache.Scope)
	}
	md.breakers, md.hedging = resilience(c, f, r)
	md.serviceAddrs = r.strs(f, "service_addresses")
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

// strs reads a list of strings; absent is nil.
func (r *mdReader) strs(f map[string]*structpb.Value, key string) []string {
	v, ok := f[key]
	if !ok {
		return nil
	}
	l := v.GetListValue()
	if l == nil {
		r.fail(key, errType)
		return nil
	}
	out := make([]string, 0, len(l.GetValues()))
	for i, e := range l.GetValues() {
		s, ok := e.GetKind().(*structpb.Value_StringValue)
		if !ok {
			r.fail(fmt.Sprintf("%s[%d]", key, i), errType)
			return nil
		}
		out = append(out, s.StringValue)
	}
	return out
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
