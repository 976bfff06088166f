package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchmesh/batchmesh/internal/cache"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/health"
	"github.com/batchmesh/batchmesh/internal/loadreport"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

// Config configures a Proxy. Zero values are the defaults noted.
type Config struct {
	Models       *config.Config // required, validated
	Source       string         // where Models came from, for /config_dump (e.g. the file name)
	MaxBodyBytes int            // largest application request body; default 64 MiB
	// MaxBodyBytesInFlight is the budget of request body bytes read and
	// not yet answered, over every connection; a request past it gets 429.
	// Default 4 × MaxBodyBytes; at least MaxBodyBytes.
	MaxBodyBytesInFlight int
	// HeaderTimeout, BodyTimeout and IdleTimeout bound the listeners' reads
	// (see DefaultHeaderTimeout and the others); MaxConns is the inference
	// listener's connection limit, default DefaultMaxConns (the sidecar
	// sets ConnLimit of its file-descriptor limit).
	HeaderTimeout, BodyTimeout, IdleTimeout time.Duration
	MaxConns                                int
	ProbeInterval                           time.Duration // health probes of every endpoint; default 1s
	Meter                                   metric.Meter  // nil records nothing
	Metrics                                 http.Handler  // served at the admin /metrics when set
	Logger                                  *slog.Logger  // nil discards
	Upstream                                upstream.Config
	// Tracer and Propagator trace requests and batches; a nil Tracer traces
	// nothing and costs nothing.
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
	// Balancer is the endpoint policy: BalancerP2C (default), BalancerWRR or
	// BalancerRingHash. Zone, when set, prefers endpoints of that zone.
	Balancer string
	Zone     string
	// XDS, when set, reports the xDS versions and nonces per type for
	// /config_dump.
	XDS func() any
	// AllowAdaptive accepts configs with weights: adaptive: set it when the
	// configuration comes from the control plane, which sets the endpoint
	// weights from load reports. Without it such a config is refused.
	AllowAdaptive bool
	// Load, when set, receives every upstream batch call (rows, latency,
	// failure and the runtime's ORCA report) for the LRS client.
	Load *loadreport.Aggregator
}

// Proxy is the sidecar's data plane: the HTTP handlers, the applied
// configuration with its batch lanes, the row cache and the endpoints'
// health. Build it with New; the sidecar package runs it (Probe once,
// RunProbes, serve Handler and AdminHandler, Apply from xDS, Drain on
// shutdown). Its methods are safe for concurrent use.
type Proxy struct {
	cfg      Config
	up       *upstream.Client
	grpcUp   *upstream.GRPC // the endpoints of protocol grpc
	st       atomic.Pointer[state]
	applyMu  sync.Mutex     // serialises Apply and Drain
	retiring sync.WaitGroup // lanes draining after a configuration change
	m        *metrics
	draining atomic.Bool
	health   *health.Table // the one view of endpoint health: probes and dispatch failures
	admin    fasthttp.RequestHandler
	cache    *cache.Cache
	tracing  bool
	body     *bodyBudget // request body bytes in flight
}

// New builds the proxy from a validated config. It starts nothing. With
// Models nil the proxy serves no model (and is not ready) until Apply.
func New(cfg Config) (*Proxy, error) {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 64 << 20
	}
	if cfg.MaxBodyBytesInFlight == 0 {
		cfg.MaxBodyBytesInFlight = 4 * cfg.MaxBodyBytes
	}
	if cfg.MaxBodyBytesInFlight < cfg.MaxBodyBytes {
		return nil, fmt.Errorf("proxy: max body bytes in flight %d: want at least the body limit, %d", cfg.MaxBodyBytesInFlight, cfg.MaxBodyBytes)
	}
	cfg.HeaderTimeout = cmp.Or(cfg.HeaderTimeout, DefaultHeaderTimeout)
	cfg.BodyTimeout = cmp.Or(cfg.BodyTimeout, DefaultBodyTimeout)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.MaxConns = cmp.Or(cfg.MaxConns, DefaultMaxConns)
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = time.Second
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Upstream.Logger = cfg.Logger
	if cfg.Tracer != nil && cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	switch cfg.Balancer {
	case "":
		cfg.Balancer = BalancerP2C
	case BalancerP2C, BalancerWRR, BalancerRingHash:
	default:
		return nil, fmt.Errorf("proxy: balancer %q: want %s, %s or %s", cfg.Balancer, BalancerP2C, BalancerWRR, BalancerRingHash)
	}
	p := &Proxy{
		cfg:     cfg,
		up:      upstream.New(cfg.Upstream),
		grpcUp:  &upstream.GRPC{MaxMessageBytes: cfg.Upstream.MaxResponseBytes, Timeout: cfg.Upstream.Timeout},
		tracing: cfg.Tracer != nil,
		body:    &bodyBudget{limit: int64(cfg.MaxBodyBytesInFlight)},
	}
	p.health = health.New(health.Config{
		Probe: p.probe, Timeout: cfg.Upstream.ProbeTimeout, Interval: cfg.ProbeInterval,
		OnChange: p.healthChanged, Logger: cfg.Logger, Peers: p.peers, Outlier: outlierOf(cfg.Models),
	})
	var err error
	if p.m, err = newMetrics(cfg.Meter, p.currentWeights, p.versionsAvailable); err != nil {
		return nil, err
	}
	cacheBytes := config.DefaultCacheBytes
	if cfg.Models != nil {
		cacheBytes = cfg.Models.CacheBytes
	}
	if p.cache, err = cache.New(cache.Config{MaxBytes: cacheBytes, Meter: cfg.Meter}); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	st := &state{models: map[string]*model{}}
	if cfg.Models != nil {
		if st, _, err = p.buildState(cfg.Models, nil); err != nil {
			return nil, err
		}
	}
	p.st.Store(st)
	p.track(st)
	p.admin = p.newAdmin()
	return p, nil
}

// StartDrain makes /readyz fail from now on; requests are still served.
func (p *Proxy) StartDrain() {
	if !p.draining.Swap(true) {
		p.cfg.Logger.Info("draining: /readyz now fails")
	}
}

// Drain marks the proxy draining and waits until every queued and in-flight
// batch has answered its callers, or ctx ends. Call it after the listener
// has stopped accepting requests.
func (p *Proxy) Drain(ctx context.Context) error {
	p.StartDrain()
	p.applyMu.Lock() // no configuration change from now on
	defer p.applyMu.Unlock()
	var errs []error
	st := p.st.Load()
	for _, name := range st.names {
		for _, v := range st.models[name].versions {
			if v.lane != nil {
				errs = append(errs, v.lane.Close(ctx))
			}
		}
	}
	retired := make(chan struct{})
	go func() { p.retiring.Wait(); close(retired) }()
	select {
	case <-retired:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("proxy: retired lanes: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// MaxBodyBytesInFlight is the budget of request body bytes in flight,
// defaults applied.
func (p *Proxy) MaxBodyBytesInFlight() int { return p.cfg.MaxBodyBytesInFlight }

// Close releases the upstream connections.
func (p *Proxy) Close() { p.up.Close(); p.grpcUp.Close() }

// ready returns "" when ready, or why not.
func (p *Proxy) ready() string {
	switch {
	case p.draining.Load():
		return "draining"
	case !p.health.Probed():
		return "endpoints not probed yet"
	}
	st := p.st.Load()
	if st.cfg == nil {
		return "no configuration yet (waiting for the control plane)"
	}
	for _, name := range st.names {
		m := st.models[name]
		if !p.modelHealthy(m) {
			return fmt.Sprintf("model %q has no healthy endpoint", name)
		}
	}
	return ""
}

func (p *Proxy) modelHealthy(m *model) bool {
	return slices.ContainsFunc(m.versions, p.versionUp)
}
