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
	"sync/atomic"
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
	"google.golang.org/protobuf/proto"

	"github.com/batchmesh/batchmesh/internal/config"
)

// ErrNoConfig is returned by Server methods that need a config before the
// first successful Update.
var ErrNoConfig = errors.New("xdsserver: no config yet")

// Config configures a Server. The zero value is valid.
type Config struct {
	// Logger receives NACKs, updates and go-control-plane's own warnings
	// and errors; at debug, requests for resources that do not exist.
	// Nil discards them.
	Logger *slog.Logger

	// Epoch prefixes every version, so that versions keep moving forward
	// across restarts of the control plane: a client reconnecting with a
	// version of an earlier run must never match new content. Zero means
	// the time of New, in Unix milliseconds.
	Epoch int64

	// Meter records the metrics of the package doc. Nil records nothing.
	Meter metric.Meter
}

// updateOrder is the order in which an Update changes the four types:
// clusters and their endpoints before the listeners and routes that refer
// to them (make before break).
var updateOrder = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// Server serves the resources of the last good config over ADS (SotW and
// delta) to any node: one go-control-plane LinearCache per type, chosen by
// a MuxCache on the request's type URL. A request is answered with the
// resources it names (every resource of the type for a wildcard request),
// whatever its node says.
//
// Its methods are safe for concurrent use. Create it with New, feed it with
// Update, and Register it on a grpc.Server.
type Server struct {
	log   *slog.Logger
	epoch int64
	mux   *cache.MuxCache
	lin   map[string]*cache.LinearCache // by type URL

	in *instruments

	mu     sync.Mutex // orders Updates
	serial uint64
	served atomic.Pointer[served] // of the last good Update; nil before

	streamMu  sync.Mutex
	nacks     map[string]uint64                  // by type URL
	sent      map[int64]map[string]*sentResponse // SotW stream → type URL → last response
	deltaSent map[int64]map[string]*sentResponse // delta stream → type URL → last response
	asked     map[int64]map[string][]string      // SotW stream → type URL → names of its last request
	// deltaNodes is each delta stream's node: a delta client (Envoy) sets
	// it on the first request only, and go-control-plane fills it into
	// later requests only after the callbacks ran.
	deltaNodes map[int64]*core.Node
}

// served is what one Update set: its version and every resource by type
// URL and name. It is never modified.
type served struct {
	version  string
	byType   map[string]map[string]types.Resource
	versions map[string]string // by type URL: of the Update that last changed it
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
		lin:        map[string]*cache.LinearCache{},
		nacks:      map[string]uint64{},
		sent:       map[int64]map[string]*sentResponse{},
		deltaSent:  map[int64]map[string]*sentResponse{},
		asked:      map[int64]map[string][]string{},
		deltaNodes: map[int64]*core.Node{},
	}
	caches := map[string]cache.Cache{}
	for _, typ := range updateOrder {
		// Every Update calls UpdateResources once on each cache, so the
		// four counters move together and a type's version is that of
		// the Update that last changed it: epoch36-serial.
		lc := cache.NewLinearCache(typ, cache.WithVersionPrefix(s.epoch36()+"-"), cache.WithLogger(cacheLogger(lg)))
		s.lin[typ], caches[typ] = lc, lc
	}
	s.mux = &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        caches,
	}
	return s
}

// Update validates cfg, builds its resources and sets them under the next
// version: in the order of updateOrder, each type's changed and new
// resources are set and its removed ones deleted, so that a client is sent
// only what changed (all the resources it subscribes to of a type where
// SotW needs the full state: listeners and clusters). On error nothing
// changes: clients keep the last good resources. It returns the new
// version.
func (s *Server) Update(_ context.Context, cfg *config.Config) (string, error) {
	rs, err := Resources(cfg)
	if err != nil {
		return "", err
	}
	next := &served{byType: map[string]map[string]types.Resource{}, versions: map[string]string{}}
	for _, typ := range updateOrder {
		byName := make(map[string]types.Resource, len(rs[typ]))
		for _, r := range rs[typ] {
			byName[cache.GetResourceName(r)] = r
		}
		next.byType[typ] = byName
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serial++
	next.version = s.epoch36() + "-" + strconv.FormatUint(s.serial, 10)
	prev := s.served.Load()
	changed := 0
	var errs []error
	for _, typ := range updateOrder {
		var old map[string]types.Resource
		if prev != nil {
			old = prev.byType[typ]
		}
		upd, del := diff(old, next.byType[typ])
		changed += len(upd) + len(del)
		next.versions[typ] = next.version
		if prev != nil && len(upd)+len(del) == 0 {
			next.versions[typ] = prev.versions[typ]
		}
		if err := s.lin[typ].UpdateResources(upd, del); err != nil {
			errs = append(errs, fmt.Errorf("xdsserver: %s: %w", typeLabel(typ), err))
		}
	}
	// The caches hold the new resources even where notifying a watch
	// failed, so the new state is the one served.
	s.served.Store(next)
	if err := errors.Join(errs...); err != nil {
		return next.version, err
	}
	s.log.Info("xds resources set", "version", next.version, "changed", changed)
	return next.version, nil
}

// diff returns the resources of next that are new or differ from old, and
// the names of old that next lacks.
func diff(old, next map[string]types.Resource) (map[string]types.Resource, []string) {
	upd := map[string]types.Resource{}
	for name, r := range next {
		if o, ok := old[name]; !ok || !proto.Equal(o, r) {
			upd[name] = r
		}
	}
	var del []string
	for name := range old {
		if _, ok := next[name]; !ok {
			del = append(del, name)
		}
	}
	slices.Sort(del)
	return upd, del
}

func (s *Server) epoch36() string { return strconv.FormatInt(s.epoch, 36) }

// Version returns the version of the last successful Update, or "" before
// the first. A type an Update did not change keeps, on the wire, the
// version of the Update that last changed it.
func (s *Server) Version() string {
	if sv := s.served.Load(); sv != nil {
		return sv.version
	}
	return ""
}

// TypeState is what is served of one resource type.
type TypeState struct {
	// Version is the version a client is sent now: that of the Update
	// that last changed the type.
	Version string `json:"version"`
	// Names lists the resources, sorted.
	Names []string `json:"names"`
}

// Served returns the state of each resource type by short type
// (listeners, routes, clusters, endpoints); empty before the first
// Update. The result is the caller's.
func (s *Server) Served() map[string]TypeState {
	out := map[string]TypeState{}
	sv := s.served.Load()
	if sv == nil {
		return out
	}
	for short, typ := range shortTypes {
		out[short] = TypeState{
			Version: sv.versions[typ],
			Names:   slices.Sorted(maps.Keys(sv.byType[typ])),
		}
	}
	return out
}

var shortTypes = map[string]string{
	"listeners": resource.ListenerType,
	"routes":    resource.RouteType,
	"clusters":  resource.ClusterType,
	"endpoints": resource.EndpointType,
}

// resourcesOf returns the resources of type typ now served, by name; nil
// before the first Update. The result must not be modified.
func (s *Server) resourcesOf(typ string) map[string]types.Resource {
	if sv := s.served.Load(); sv != nil {
		return sv.byType[typ]
	}
	return nil
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
	xds := server.NewServer(ctx, s.mux, s.callbacks(), sotw.WithLogger(cacheLogger(s.log)))
	discovery.RegisterAggregatedDiscoveryServiceServer(g, xds)
}

// cacheLogger passes go-control-plane's warnings and errors to lg; its
// debug and info lines are per request and too chatty.
func cacheLogger(lg *slog.Logger) log.Logger {
	return log.LoggerFuncs{
		WarnFunc:  func(f string, a ...any) { lg.Warn("go-control-plane: " + fmt.Sprintf(f, a...)) },
		ErrorFunc: func(f string, a ...any) { lg.Error("go-control-plane: " + fmt.Sprintf(f, a...)) },
	}
}
