package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"

	"github.com/batchmesh/batchmesh/internal/config"
)

// DefaultGroup is the node group of nodes that send no node.cluster.
const DefaultGroup = "default"

// ModelMetadataKey is the node metadata field by which a gRPC proxyless
// client names the model it dials (xds:///{model}); its bootstrap sets
//
//	"node": {"metadata": {"batchmesh.model": "bert"}}
//
// Such a node belongs to the group ProxylessGroupPrefix+model, whose
// snapshot holds exactly what that client subscribes to: the model's
// api_listener and the clusters and endpoints of its weighted versions.
const ModelMetadataKey = "batchmesh.model"

// ProxylessGroupPrefix starts the group of every proxyless client; the
// model follows it.
const ProxylessGroupPrefix = "proxyless/"

// ErrNoConfig is returned by Server methods that need a config before the
// first successful Update.
var ErrNoConfig = errors.New("xdsserver: no config yet")

// Config configures a Server. The zero value is valid.
type Config struct {
	// Logger receives NACKs, updates and go-control-plane's own warnings
	// and errors. Nil discards them.
	Logger *slog.Logger

	// Epoch prefixes every snapshot version, so that versions keep moving
	// forward across restarts of the control plane: a client reconnecting
	// with a version of an earlier run must never match a new snapshot of
	// different content. Zero means the time of New, in Unix milliseconds.
	Epoch int64

	// Meter records the metrics of the package doc. Nil records nothing.
	Meter metric.Meter
}

// Server serves the snapshot of the last good config over ADS (SotW and
// delta) to every node group. Nodes are grouped by node.cluster, so every
// sidecar of a group shares one snapshot of all resources; gRPC proxyless
// clients are grouped by model (ModelMetadataKey) and get only that model's
// resources (see the package doc).
//
// Its methods are safe for concurrent use. Create it with New, feed it with
// Update, and Register it on a grpc.Server.
type Server struct {
	log   *slog.Logger
	epoch int64
	cache cache.SnapshotCache

	in *instruments

	mu      sync.Mutex // guards the fields below, and orders SetSnapshot calls
	serial  uint64
	current *cache.Snapshot            // every resource: sidecars and Envoy
	models  map[string]*cache.Snapshot // per model: its proxyless group
	empty   *cache.Snapshot            // proxyless groups of unknown models
	version string
	groups  map[string]bool

	streamMu  sync.Mutex
	nacks     map[string]uint64                  // by type URL
	sent      map[int64]map[string]*sentResponse // SotW stream → type URL → last response
	deltaSent map[int64]map[string]*sentResponse // delta stream → type URL → last response
	// deltaNodes is each delta stream's node: a delta client (Envoy) sets
	// it on the first request only, and go-control-plane fills it into
	// later requests only after the callbacks ran.
	deltaNodes map[int64]*core.Node
}

// New returns a Server with no config; nodes that connect before the first
// Update wait for it. It starts no goroutine.
func New(cfg Config) *Server {
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	epoch := cfg.Epoch
	if epoch == 0 {
		epoch = time.Now().UnixMilli()
	}
	m := cfg.Meter
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	in, err := newInstruments(m)
	if err != nil {
		// Only a meter that rejects these constant names gets here.
		lg.Error("xds metrics disabled", "err", err)
		in, _ = newInstruments(noop.NewMeterProvider().Meter(""))
	}
	s := &Server{
		log:        lg,
		epoch:      epoch,
		in:         in,
		groups:     map[string]bool{DefaultGroup: true},
		nacks:      map[string]uint64{},
		sent:       map[int64]map[string]*sentResponse{},
		deltaSent:  map[int64]map[string]*sentResponse{},
		deltaNodes: map[int64]*core.Node{},
	}
	s.cache = cache.NewSnapshotCache(true, groupHash{}, cacheLogger(lg))
	return s
}

// groupHash keys the snapshot cache by node group: ProxylessGroupPrefix
// and the model for a node that names one in its metadata, else
// node.cluster, or DefaultGroup.
type groupHash struct{}

func (groupHash) ID(node *core.Node) string { return group(node) }

func group(node *core.Node) string {
	if m := node.GetMetadata().GetFields()[ModelMetadataKey].GetStringValue(); m != "" {
		return ProxylessGroupPrefix + m
	}
	if c := node.GetCluster(); c != "" {
		return c
	}
	return DefaultGroup
}

// Update validates cfg, builds its resources and consistent snapshots
// under the next version (one of every resource, and one per model for its
// proxyless group), and sets them for every known group. On error nothing
// changes: clients keep the last good snapshot. It returns the new version.
func (s *Server) Update(ctx context.Context, cfg *config.Config) (string, error) {
	rs, err := Resources(cfg)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	version := s.epoch36() + "-" + strconv.FormatUint(s.serial+1, 10)
	snap, err := newSnapshot(version, rs)
	if err != nil {
		return "", err
	}
	proxyless, err := proxylessResources(cfg, rs)
	if err != nil {
		return "", err
	}
	models := map[string]*cache.Snapshot{}
	for model, mr := range proxyless {
		if models[model], err = newSnapshot(version, mr); err != nil {
			return "", fmt.Errorf("xdsserver: model %q: %w", model, err)
		}
	}
	empty, err := newSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: {}, resource.RouteType: {}, resource.ClusterType: {}, resource.EndpointType: {},
	})
	if err != nil {
		return "", err
	}
	s.serial++
	s.current, s.models, s.empty, s.version = snap, models, empty, version
	for _, g := range slices.Sorted(maps.Keys(s.groups)) {
		if err := s.cache.SetSnapshot(ctx, g, s.snapshotOf(g)); err != nil {
			return version, fmt.Errorf("xdsserver: group %q: %w", g, err)
		}
	}
	s.log.Info("xds snapshot set", "version", version, "groups", len(s.groups))
	return version, nil
}

// newSnapshot builds a snapshot and checks that it is consistent.
func newSnapshot(version string, rs map[resource.Type][]types.Resource) (*cache.Snapshot, error) {
	snap, err := cache.NewSnapshot(version, rs)
	if err != nil {
		return nil, fmt.Errorf("xdsserver: %w", err)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("xdsserver: inconsistent snapshot: %w", err)
	}
	return snap, nil
}

// snapshotOf returns the current snapshot of group g: its model's for a
// proxyless group (an empty one if the config has no such model, so that
// its clients see the listener removed), every resource otherwise. s.mu
// must be held, and s.current set.
func (s *Server) snapshotOf(g string) *cache.Snapshot {
	model, ok := strings.CutPrefix(g, ProxylessGroupPrefix)
	if !ok {
		return s.current
	}
	if snap, ok := s.models[model]; ok {
		return snap
	}
	return s.empty
}

func (s *Server) epoch36() string { return strconv.FormatInt(s.epoch, 36) }

// Version returns the version of the current snapshot, or "" before the
// first successful Update.
func (s *Server) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// GroupState is what one node group is served.
type GroupState struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	// Resources lists resource names by short type (listeners, routes,
	// clusters, endpoints), sorted.
	Resources map[string][]string `json:"resources"`
}

// Groups returns the state of every known group, sorted by group. The
// result is the caller's.
func (s *Server) Groups() []GroupState {
	s.mu.Lock()
	groups := slices.Sorted(maps.Keys(s.groups))
	s.mu.Unlock()
	out := make([]GroupState, 0, len(groups))
	for _, g := range groups {
		gs := GroupState{Group: g, Resources: map[string][]string{}}
		snap, err := s.cache.GetSnapshot(g)
		if err == nil {
			gs.Version = snap.GetVersion(resource.ListenerType)
			for short, typ := range shortTypes {
				gs.Resources[short] = slices.Sorted(maps.Keys(snap.GetResources(typ)))
			}
		}
		out = append(out, gs)
	}
	return out
}

var shortTypes = map[string]string{
	"listeners": resource.ListenerType,
	"routes":    resource.RouteType,
	"clusters":  resource.ClusterType,
	"endpoints": resource.EndpointType,
}

// NACKs returns the number of NACKs received so far, by type URL. The
// result is the caller's.
func (s *Server) NACKs() map[string]uint64 {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	return maps.Clone(s.nacks)
}

// Register serves ADS (SotW and delta) on g until ctx ends. Call it once,
// before g.Serve.
func (s *Server) Register(ctx context.Context, g *grpc.Server) {
	xds := server.NewServer(ctx, s.cache, s.callbacks(), sotw.WithLogger(cacheLogger(s.log)))
	discovery.RegisterAggregatedDiscoveryServiceServer(g, xds)
}

func (s *Server) callbacks() server.CallbackFuncs {
	return server.CallbackFuncs{
		StreamRequestFunc:       s.onStreamRequest,
		StreamResponseFunc:      s.onStreamResponse,
		StreamClosedFunc:        func(id int64, _ *core.Node) { s.forget(s.sent, id) },
		StreamDeltaRequestFunc:  s.onDeltaRequest,
		StreamDeltaResponseFunc: s.onDeltaResponse,
		DeltaStreamClosedFunc: func(id int64, _ *core.Node) {
			s.forget(s.deltaSent, id)
			s.streamMu.Lock()
			delete(s.deltaNodes, id)
			s.streamMu.Unlock()
		},
	}
}

// join makes sure the node's group has the current snapshot before the
// request reaches the cache, so a new group is answered at once.
func (s *Server) join(node *core.Node) {
	g := group(node)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups[g] {
		return
	}
	s.groups[g] = true
	if s.current != nil {
		// No watch of this group exists yet, so nothing is sent here.
		if err := s.cache.SetSnapshot(context.Background(), g, s.snapshotOf(g)); err != nil {
			s.log.Error("xds set snapshot", "group", g, "err", err)
		}
	}
}

// onStreamRequest runs on the stream's goroutine before the request reaches
// the cache.
//
// A NACK carries the last version the client accepted, so the snapshot cache
// would answer it at once with the rejected snapshot again, and again on
// every NACK after it (go-control-plane#962; v0.14.0 still reads no
// error_detail). So a NACK is rewritten to carry the rejected version: the
// cache then sees a client that is up to date and parks the watch until the
// next Update.
//
// A request that names the nonce and version of the last response of its
// type, without error_detail, is that response's ACK: the time since the
// response is recorded as push-to-ACK latency.
func (s *Server) onStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	s.join(req.GetNode())
	typ := req.GetTypeUrl()
	now := time.Now()
	s.streamMu.Lock()
	last := s.sent[id][typ]
	if req.GetErrorDetail() == nil {
		acked := last.ackOf(req.GetResponseNonce(), req.GetVersionInfo(), true)
		if acked {
			last.acked = true
		}
		s.streamMu.Unlock()
		if acked {
			s.in.pushAck.Record(context.Background(), now.Sub(last.at).Seconds(), s.in.attrs(typ))
		}
		return nil
	}
	s.nacks[typ]++
	var rejected string
	if last != nil {
		rejected = last.version
		if req.GetResponseNonce() == last.nonce {
			last.acked = true
		}
	}
	s.streamMu.Unlock()
	s.in.nacks.Add(context.Background(), 1, s.in.attrs(typ))
	s.log.Warn("xds NACK",
		"node", req.GetNode().GetId(), "group", group(req.GetNode()), "type", typ,
		"rejected", rejected, "kept", req.GetVersionInfo(), "nonce", req.GetResponseNonce(),
		"reason", req.GetErrorDetail().GetMessage())
	if rejected != "" {
		req.VersionInfo = rejected
	}
	return nil
}

// onStreamResponse runs just before a SotW response is sent.
func (s *Server) onStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	s.record(s.sent, id, resp.GetTypeUrl(), &sentResponse{version: resp.GetVersionInfo(), nonce: resp.GetNonce(), at: time.Now()})
}

// onDeltaResponse runs just before a delta response is sent.
func (s *Server) onDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	s.record(s.deltaSent, id, resp.GetTypeUrl(), &sentResponse{nonce: resp.GetNonce(), at: time.Now()})
}

// record keeps r as the last response of its type on stream id, and
// counts it.
func (s *Server) record(sent map[int64]map[string]*sentResponse, id int64, typ string, r *sentResponse) {
	s.streamMu.Lock()
	m := sent[id]
	if m == nil {
		m = map[string]*sentResponse{}
		sent[id] = m
	}
	m[typ] = r
	s.streamMu.Unlock()
	s.in.updates.Add(context.Background(), 1, s.in.attrs(typ))
}

// onDeltaRequest counts and logs delta NACKs. The delta cache tracks the
// resource versions it sent, not the ones the client accepted, so it does
// not re-send a rejected resource until it changes.
func (s *Server) onDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	s.streamMu.Lock()
	node := req.GetNode()
	if node != nil {
		s.deltaNodes[id] = node
	} else {
		node = s.deltaNodes[id]
	}
	s.streamMu.Unlock()
	s.join(node)
	typ := req.GetTypeUrl()
	now := time.Now()
	s.streamMu.Lock()
	last := s.deltaSent[id][typ]
	if req.GetErrorDetail() == nil {
		acked := last.ackOf(req.GetResponseNonce(), "", false)
		if acked {
			last.acked = true
		}
		s.streamMu.Unlock()
		if acked {
			s.in.pushAck.Record(context.Background(), now.Sub(last.at).Seconds(), s.in.attrs(typ))
		}
		return nil
	}
	s.nacks[typ]++
	if last != nil && req.GetResponseNonce() == last.nonce {
		last.acked = true
	}
	s.streamMu.Unlock()
	s.in.nacks.Add(context.Background(), 1, s.in.attrs(typ))
	s.log.Warn("xds delta NACK",
		"node", node.GetId(), "group", group(node), "type", req.GetTypeUrl(),
		"nonce", req.GetResponseNonce(), "reason", req.GetErrorDetail().GetMessage())
	return nil
}

// forget drops what was recorded of a closed stream.
func (s *Server) forget(sent map[int64]map[string]*sentResponse, id int64) {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	delete(sent, id)
}

// cacheLogger passes go-control-plane's warnings and errors to lg; its
// debug and info lines are per request and too chatty.
func cacheLogger(lg *slog.Logger) log.Logger {
	return log.LoggerFuncs{
		WarnFunc:  func(f string, a ...any) { lg.Warn("go-control-plane: " + fmt.Sprintf(f, a...)) },
		ErrorFunc: func(f string, a ...any) { lg.Error("go-control-plane: " + fmt.Sprintf(f, a...)) },
	}
}
