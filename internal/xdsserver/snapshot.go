package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/batchmesh/batchmesh/internal/config"
)

// DefaultGroup is the node group of nodes that send no node.cluster.
const DefaultGroup = "default"

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
}

// Server serves the snapshot of the last good config over ADS (SotW and
// delta) to every node group. Nodes are grouped by node.cluster, so every
// sidecar of a group shares one snapshot; today every group gets the same
// resources.
//
// Its methods are safe for concurrent use. Create it with New, feed it with
// Update, and Register it on a grpc.Server.
type Server struct {
	log   *slog.Logger
	epoch int64
	cache cache.SnapshotCache

	mu      sync.Mutex // guards the fields below, and orders SetSnapshot calls
	serial  uint64
	current *cache.Snapshot
	version string
	groups  map[string]bool

	nackMu sync.Mutex
	nacks  map[string]uint64           // by type URL
	sent   map[int64]map[string]string // stream → type URL → version last sent
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
	s := &Server{
		log:    lg,
		epoch:  epoch,
		groups: map[string]bool{DefaultGroup: true},
		nacks:  map[string]uint64{},
		sent:   map[int64]map[string]string{},
	}
	s.cache = cache.NewSnapshotCache(true, groupHash{}, cacheLogger(lg))
	return s
}

// groupHash keys the snapshot cache by node group: node.cluster, or
// DefaultGroup.
type groupHash struct{}

func (groupHash) ID(node *core.Node) string { return group(node) }

func group(node *core.Node) string {
	if c := node.GetCluster(); c != "" {
		return c
	}
	return DefaultGroup
}

// Update validates cfg, builds its resources and a consistent snapshot
// under the next version, and sets it for every known group. On error
// nothing changes: clients keep the last good snapshot. It returns the new
// version.
func (s *Server) Update(ctx context.Context, cfg *config.Config) (string, error) {
	rs, err := Resources(cfg)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	version := s.epoch36() + "-" + strconv.FormatUint(s.serial+1, 10)
	snap, err := cache.NewSnapshot(version, rs)
	if err != nil {
		return "", fmt.Errorf("xdsserver: %w", err)
	}
	if err := snap.Consistent(); err != nil {
		return "", fmt.Errorf("xdsserver: inconsistent snapshot: %w", err)
	}
	s.serial++
	s.current, s.version = snap, version
	for _, g := range slices.Sorted(maps.Keys(s.groups)) {
		if err := s.cache.SetSnapshot(ctx, g, snap); err != nil {
			return version, fmt.Errorf("xdsserver: group %q: %w", g, err)
		}
	}
	s.log.Info("xds snapshot set", "version", version, "groups", len(s.groups))
	return version, nil
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
	s.nackMu.Lock()
	defer s.nackMu.Unlock()
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
		StreamRequestFunc:      s.onStreamRequest,
		StreamResponseFunc:     s.onStreamResponse,
		StreamClosedFunc:       func(id int64, _ *core.Node) { s.forget(id) },
		StreamDeltaRequestFunc: s.onDeltaRequest,
		DeltaStreamClosedFunc:  func(id int64, _ *core.Node) { s.forget(id) },
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
		if err := s.cache.SetSnapshot(context.Background(), g, s.current); err != nil {
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
func (s *Server) onStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	s.join(req.GetNode())
	if req.GetErrorDetail() == nil {
		return nil
	}
	typ := req.GetTypeUrl()
	s.nackMu.Lock()
	s.nacks[typ]++
	rejected := s.sent[id][typ]
	s.nackMu.Unlock()
	s.log.Warn("xds NACK",
		"node", req.GetNode().GetId(), "group", group(req.GetNode()), "type", typ,
		"rejected", rejected, "kept", req.GetVersionInfo(), "nonce", req.GetResponseNonce(),
		"reason", req.GetErrorDetail().GetMessage())
	if rejected != "" {
		req.VersionInfo = rejected
	}
	return nil
}

func (s *Server) onStreamResponse(_ context.Context, id int64, req *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	s.nackMu.Lock()
	defer s.nackMu.Unlock()
	m := s.sent[id]
	if m == nil {
		m = map[string]string{}
		s.sent[id] = m
	}
	m[resp.GetTypeUrl()] = resp.GetVersionInfo()
}

// onDeltaRequest counts and logs delta NACKs. The delta cache tracks the
// resource versions it sent, not the ones the client accepted, so it does
// not re-send a rejected resource until it changes.
func (s *Server) onDeltaRequest(_ int64, req *discovery.DeltaDiscoveryRequest) error {
	s.join(req.GetNode())
	if req.GetErrorDetail() == nil {
		return nil
	}
	s.nackMu.Lock()
	s.nacks[req.GetTypeUrl()]++
	s.nackMu.Unlock()
	s.log.Warn("xds delta NACK",
		"node", req.GetNode().GetId(), "group", group(req.GetNode()), "type", req.GetTypeUrl(),
		"nonce", req.GetResponseNonce(), "reason", req.GetErrorDetail().GetMessage())
	return nil
}

func (s *Server) forget(id int64) {
	s.nackMu.Lock()
	defer s.nackMu.Unlock()
	delete(s.sent, id)
}

// cacheLogger passes go-control-plane's warnings and errors to lg; its
// debug and info lines are per request and too chatty.
func cacheLogger(lg *slog.Logger) log.Logger {
	return log.LoggerFuncs{
		WarnFunc:  func(f string, a ...any) { lg.Warn("go-control-plane: " + fmt.Sprintf(f, a...)) },
		ErrorFunc: func(f string, a ...any) { lg.Error("go-control-plane: " + fmt.Sprintf(f, a...)) },
	}
}
