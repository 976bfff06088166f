package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchmesh/batchmesh/internal/balancer"
	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/cache"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/loadreport"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

// Config configures a Proxy. Zero values are the defaults noted.
type Config struct {
	Models        *config.Config // required, validated
	Source        string         // where Models came from, for /config_dump (e.g. the file name)
	MaxBodyBytes  int            // largest application request body; default 64 MiB
	ProbeInterval time.Duration  // health probes of every endpoint; default 1s
	Meter         metric.Meter   // nil records nothing
	Metrics       http.Handler   // served at the admin /metrics when set
	Logger        *slog.Logger   // nil discards
	Upstream      upstream.Config
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

// Proxy is the sidecar's data plane. Build it with New, call Probe once,
// run the health checker with Run, serve Handler and AdminHandler, and call
// Drain on shutdown. Its methods are safe for concurrent use.
type Proxy struct {
	cfg        Config
	up         *upstream.Client
	st         atomic.Pointer[state]
	applyMu    sync.Mutex     // serialises Apply and Drain
	retiring   sync.WaitGroup // lanes draining after a configuration change
	m          *metrics
	draining   atomic.Bool
	probed     atomic.Bool
	health     sync.Map // endpoint address → bool (absent: not probed yet, assumed healthy)
	probeMu    sync.Mutex
	probeFails map[string]int // consecutive failed probes per endpoint
	rndMu      sync.Mutex
	rnd        *rand.Rand
	admin      fasthttp.RequestHandler
	cache      *cache.Cache
	tracing    bool
}

// model is one configured model: its settings and a lane per version.
type model struct {
	cfg         config.Model
	versions    []*version
	totalWeight int
}

type version struct {
	cfg  config.Version
	lane *batch.Lane // nil when batching is off
}

// state is one applied configuration: its models, their versions and
// lanes. It is immutable once built and swapped atomically, so a request
// sees one configuration from start to end and goes to exactly one version.
type state struct {
	cfg    *config.Config
	models map[string]*model
	names  []string
}

// New builds the proxy from a validated config. It starts nothing. With
// Models nil the proxy serves no model (and is not ready) until Apply.
func New(cfg Config) (*Proxy, error) {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 64 << 20
	}
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
		cfg:        cfg,
		up:         upstream.New(cfg.Upstream),
		probeFails: make(map[string]int),
		rnd:        rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)),
		tracing:    cfg.Tracer != nil,
	}
	var err error
	if p.m, err = newMetrics(cfg.Meter, p.currentWeights); err != nil {
		return nil, err
	}
	cacheBytes := int64(config.DefaultCacheBytes)
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
	p.admin = p.newAdmin()
	return p, nil
}

// Apply swaps in a new configuration (from xDS). Versions whose settings
// and endpoints did not change keep their lane, queue and in-flight
// batches; the others get new lanes, and the old ones drain in the
// background (Drain waits for them). A config the proxy cannot serve is
// refused with the reason, and the current one stays.
func (p *Proxy) Apply(cfg *config.Config) error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	old := p.st.Load()
	st, reweigh, err := p.buildState(cfg, old)
	if err != nil {
		return err
	}
	p.st.Store(st)
	for _, f := range reweigh {
		f()
	}
	for _, name := range old.names {
		for _, v := range old.models[name].versions {
			if v.lane == nil || st.hasLane(v.lane) {
				continue
			}
			p.retiring.Add(1)
			go func(l *batch.Lane) {
				defer p.retiring.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := l.Close(ctx); err != nil {
					p.cfg.Logger.Warn("retired lane did not drain", "err", err)
				}
			}(v.lane)
		}
	}
	p.cfg.Logger.Info("configuration applied", "models", len(st.names))
	return nil
}

func (st *state) hasLane(l *batch.Lane) bool {
	for _, m := range st.models {
		for _, v := range m.versions {
			if v.lane == l {
				return true
			}
		}
	}
	return false
}

// buildState turns cfg into a state, reusing old's versions that did not
// change. The funcs it also returns hand reused lanes their new endpoint
// weights: Apply runs them once the state is swapped in, so a refused
// config changes nothing.
func (p *Proxy) buildState(cfg *config.Config, old *state) (*state, []func(), error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("proxy: %w", err)
	}
	if cfg.Weights == config.WeightsAdaptive && !p.cfg.AllowAdaptive {
		return nil, nil, errors.New("proxy: weights: adaptive needs the control plane's load reports: run the sidecar with -xds, or use weights: static")
	}
	st := &state{cfg: cfg, models: make(map[string]*model)}
	var reweigh []func()
	for i, mc := range cfg.Models {
		if mc.Protocol != config.ProtocolV2 {
			return nil, nil, fmt.Errorf("proxy: model %q: protocol %q is not supported yet; only v2 (the Open Inference Protocol) is", mc.Name, mc.Protocol)
		}
		if mc.Cache.Enabled && !mc.Batching.Enabled() {
			return nil, nil, fmt.Errorf("proxy: model %q: the cache needs batching (max_batch_size > 0): pass-through requests are not decoded", mc.Name)
		}
		m := &model{cfg: mc}
		for j, vc := range mc.Versions {
			m.totalWeight += vc.Weight
			if v := old.reusable(cfg, mc, vc); v != nil {
				m.versions = append(m.versions, &version{cfg: vc, lane: v.lane})
				if !sameWeights(v.cfg.Endpoints, vc.Endpoints) {
					weights := make([]int, len(vc.Endpoints))
					for k, e := range vc.Endpoints {
						weights[k] = e.Weight
					}
					lane, picker := v.lane, p.newPicker(vc, uint64(i*1000+j+1))
					reweigh = append(reweigh, func() { lane.SetWeights(weights, picker) })
				}
				continue
			}
			v := &version{cfg: vc}
			if mc.Batching.Enabled() {
				eps := make([]batch.Endpoint, len(vc.Endpoints))
				for k, e := range vc.Endpoints {
					eps[k] = batch.Endpoint{Address: e.Address, Weight: e.Weight, Slots: e.Slots}
				}
				c := &caller{up: p.up, m: p.m, model: mc.Name, prop: p.cfg.Propagator,
					load: p.cfg.Load, cluster: clusterName(mc.Name, vc.Version)}
				adaptive := cfg.Weights == config.WeightsAdaptive
				var err error
				v.lane, err = batch.NewLane(batch.Config{
					Model: mc.Name, Version: vc.Version,
					MaxBatchSize: mc.Batching.MaxBatchSize, MaxQueueDelay: mc.Batching.MaxQueueDelay,
					MaxQueueSize: mc.Batching.MaxQueueSize, Endpoints: eps,
					Caller: c, Tracer: p.cfg.Tracer, AdaptiveSlots: adaptive,
					Meter: p.cfg.Meter, Picker: p.newPicker(vc, uint64(i*1000+j+1)),
				})
				if err != nil {
					return nil, nil, fmt.Errorf("proxy: %w", err)
				}
				if adaptive {
					c.lane = v.lane
				}
				for _, e := range vc.Endpoints {
					if !p.isHealthy(e.Address) {
						v.lane.SetHealthy(e.Address, false)
					}
				}
			}
			m.versions = append(m.versions, v)
		}
		st.models[mc.Name] = m
		st.names = append(st.names, mc.Name)
	}
	sort.Strings(st.names)
	return st, reweigh, nil
}

// Balancer policies (proxy.Config.Balancer).
const (
	BalancerP2C      = "p2c"       // weighted least-request, power of two choices (default)
	BalancerWRR      = "wrr"       // earliest-deadline-first weighted round robin
	BalancerRingHash = "ring_hash" // consistent hashing on X-Batchmesh-Tenant, bounded load
)

// newPicker builds the configured policy for one version's endpoints, with
// zone preference when the sidecar knows its zone and the endpoints have
// zones.
func (p *Proxy) newPicker(vc config.Version, seed uint64) batch.Picker {
	var inner balancer.Policy
	switch p.cfg.Balancer {
	case BalancerWRR:
		inner = &balancer.EDF{}
	case BalancerRingHash:
		addrs := make([]string, len(vc.Endpoints))
		weights := make([]int, len(vc.Endpoints))
		for i, e := range vc.Endpoints {
			addrs[i], weights[i] = e.Address, e.Weight
		}
		inner = balancer.NewRingHash(addrs, weights, 0)
	default:
		inner = balancer.NewPicker(rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)))
	}
	if p.cfg.Zone == "" {
		return inner
	}
	zones := make([]string, len(vc.Endpoints))
	local := false
	for i, e := range vc.Endpoints {
		zones[i] = e.Zone
		local = local || e.Zone == p.cfg.Zone
	}
	if !local {
		return inner
	}
	z := &balancer.Zoned{Local: p.cfg.Zone, Zones: zones, Inner: inner}
	if kp, ok := inner.(batch.KeyPicker); ok {
		return zonedKey{z, kp}
	}
	return z
}

// zonedKey keeps a ring hash's key when zone preference wraps it: a local
// endpoint is chosen by zone first, else the ring decides.
type zonedKey struct {
	*balancer.Zoned
	ring batch.KeyPicker
}

func (z zonedKey) PickKey(key string, loads []inference.EndpointLoad) int {
	if i := z.Zoned.Pick(loads); i >= 0 && z.Zones[i] == z.Local {
		return i
	}
	return z.ring.PickKey(key, loads)
}

// reusable returns old's version of mc with the same settings and
// endpoints, weights aside (a weight change, as adaptive weights push every
// few seconds, keeps the lane and what it learned: Apply hands it the new
// weights), or nil.
func (old *state) reusable(cfg *config.Config, mc config.Model, vc config.Version) *version {
	if old == nil || old.cfg == nil || old.cfg.Weights != cfg.Weights {
		return nil
	}
	om := old.models[mc.Name]
	if om == nil || om.cfg.Batching != mc.Batching || om.cfg.Cache != mc.Cache || om.cfg.Protocol != mc.Protocol {
		return nil
	}
	for _, v := range om.versions {
		if v.cfg.Version == vc.Version && sameEndpoints(v.cfg.Endpoints, vc.Endpoints) {
			return v
		}
	}
	return nil
}

// sameEndpoints reports whether a and b list the same endpoints in the same
// order, with the same settings but maybe different weights.
func sameEndpoints(a, b []config.Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y config.Endpoint) bool {
		x.Weight, y.Weight = 0, 0
		return reflect.DeepEqual(x, y)
	})
}

// sameWeights reports whether a and b, the same endpoints, have the same
// weights.
func sameWeights(a, b []config.Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y config.Endpoint) bool { return x.Weight == y.Weight })
}

// currentWeights lists the endpoint weights of the applied configuration,
// for the batchmesh_endpoint_weight gauge.
func (p *Proxy) currentWeights() []endpointWeight {
	st := p.st.Load()
	if st == nil {
		return nil
	}
	var out []endpointWeight
	for _, name := range st.names {
		for _, v := range st.models[name].versions {
			for _, e := range v.cfg.Endpoints {
				out = append(out, endpointWeight{model: name, version: v.cfg.Version, endpoint: e.Address, weight: int64(e.Weight)})
			}
		}
	}
	return out
}

// Probe checks every endpoint once and records its health. Call it before
// serving so that /readyz tells the truth from the start. An endpoint that
// was healthy turns unhealthy after two failed probes in a row (a busy
// runtime may miss one); a connection failure on the data path marks it at
// once.
func (p *Proxy) Probe(ctx context.Context) {
	seen := map[string]bool{}
	st := p.st.Load()
	for _, name := range st.names {
		for _, v := range st.models[name].versions {
			for _, e := range v.cfg.Endpoints {
				ok, done := seen[e.Address]
				if !done {
					ok = p.probeOne(ctx, name, e.Address)
					seen[e.Address] = ok
				}
				p.setHealthy(v, e.Address, ok)
			}
		}
	}
	p.probed.Store(true)
}

func (p *Proxy) probeOne(ctx context.Context, model, addr string) bool {
	timeout := p.cfg.Upstream.ProbeTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	err := p.up.Probe(pctx, addr)
	cancel()
	p.probeMu.Lock()
	defer p.probeMu.Unlock()
	if err == nil {
		p.probeFails[addr] = 0
		return true
	}
	p.probeFails[addr]++
	if ctx.Err() == nil {
		p.cfg.Logger.Warn("endpoint probe failed", "model", model, "endpoint", addr, "failures", p.probeFails[addr], "err", err)
	}
	wasHealthy := p.isHealthy(addr) && p.probed.Load()
	return wasHealthy && p.probeFails[addr] < 2
}

func (p *Proxy) setHealthy(v *version, addr string, ok bool) {
	if v.lane != nil {
		v.lane.SetHealthy(addr, ok)
	}
	p.health.Store(addr, ok)
}

// Run probes every endpoint each ProbeInterval until ctx ends.
func (p *Proxy) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			p.Probe(ctx)
		}
	}
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

// Close releases the upstream connections.
func (p *Proxy) Close() { p.up.Close() }

// ready returns "" when ready, or why not.
func (p *Proxy) ready() string {
	switch {
	case p.draining.Load():
		return "draining"
	case !p.probed.Load():
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
	for _, v := range m.versions {
		if v.lane != nil && v.lane.Healthy() {
			return true
		}
		if v.lane == nil {
			for _, e := range v.cfg.Endpoints {
				if p.isHealthy(e.Address) {
					return true
				}
			}
		}
	}
	return false
}

// pickVersion chooses a version by weight, or the one the route names.
func (p *Proxy) pickVersion(m *model, want string) (*version, error) {
	if want != "" {
		for _, v := range m.versions {
			if v.cfg.Version == want {
				return v, nil
			}
		}
		names := make([]string, len(m.versions))
		for i, v := range m.versions {
			names[i] = v.cfg.Version
		}
		return nil, inference.Errorf(inference.KindNotFound, "proxy: model %q has no version %q; versions: %v", m.cfg.Name, want, names)
	}
	if len(m.versions) == 1 {
		return m.versions[0], nil
	}
	p.rndMu.Lock()
	r := p.rnd.IntN(m.totalWeight)
	p.rndMu.Unlock()
	for _, v := range m.versions {
		if r < v.cfg.Weight {
			return v, nil
		}
		r -= v.cfg.Weight
	}
	return m.versions[len(m.versions)-1], nil
}

// pickEndpoint chooses a healthy endpoint of v for a pass-through call, by
// weight.
func (p *Proxy) pickEndpoint(v *version) (string, error) {
	total := 0
	for _, e := range v.cfg.Endpoints {
		if p.isHealthy(e.Address) {
			total += e.Weight
		}
	}
	if total == 0 {
		return "", inference.Errorf(inference.KindUnavailable, "proxy: version %q has no healthy endpoint", v.cfg.Version)
	}
	p.rndMu.Lock()
	r := p.rnd.IntN(total)
	p.rndMu.Unlock()
	for _, e := range v.cfg.Endpoints {
		if !p.isHealthy(e.Address) {
			continue
		}
		if r < e.Weight {
			return e.Address, nil
		}
		r -= e.Weight
	}
	return "", inference.Errorf(inference.KindUnavailable, "proxy: version %q has no healthy endpoint", v.cfg.Version)
}

func (p *Proxy) isHealthy(addr string) bool {
	v, ok := p.health.Load(addr)
	return !ok || v.(bool)
}
