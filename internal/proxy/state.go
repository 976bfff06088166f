package proxy

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"time"

	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/health"
)

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
	grpc   map[string]bool // addresses of the endpoints served over gRPC
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
	p.health.SetOutlier(outlierOf(cfg))
	p.syncHealth(st)
	p.track(st)
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
	st := &state{cfg: cfg, models: make(map[string]*model), grpc: grpcEndpoints(cfg)}
	var reweigh []func()
	for i, mc := range cfg.Models {
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
				c := &caller{up: p.up, m: p.m, model: mc.Name, prop: p.cfg.Propagator, protocol: mc.Protocol,
					load: p.cfg.Load, cluster: config.ClusterName(mc.Name, vc.Version), health: p.health,
					grpc: p.grpcUp, isGRPC: p.isGRPC}
				adaptive := cfg.Weights == config.WeightsAdaptive
				var err error
				v.lane, err = batch.NewLane(batch.Config{
					Model: mc.Name, Version: vc.Version,
					MaxBatchSize: mc.Batching.MaxBatchSize, MaxQueueDelay: mc.Batching.MaxQueueDelay,
					MaxQueueSize: mc.Batching.MaxQueueSize, Timeout: mc.Batching.Timeout, Endpoints: eps,
					Policy: batchPolicy(mc.Batching.Policy),
					Caller: c, Tracer: p.cfg.Tracer, AdaptiveSlots: adaptive, Health: p.health,
					Meter: p.cfg.Meter, Picker: p.newPicker(vc, uint64(i*1000+j+1)),
					Hedge: hedgeOf(mc.Hedging), RetryBudget: budgetOf(mc.CircuitBreakers), Breakers: breakersOf(mc.CircuitBreakers),
				})
				if err != nil {
					return nil, nil, fmt.Errorf("proxy: %w", err)
				}
				if adaptive {
					c.lane = v.lane
				}
				for _, e := range vc.Endpoints {
					if !p.health.Up(e.Address) {
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

// reusable returns old's version of mc with the same settings and
// endpoints, weights aside (a weight change, as adaptive weights push every
// few seconds, keeps the lane and what it learned: Apply hands it the new
// weights), or nil.
func (old *state) reusable(cfg *config.Config, mc config.Model, vc config.Version) *version {
	if old == nil || old.cfg == nil || old.cfg.Weights != cfg.Weights {
		return nil
	}
	om := old.models[mc.Name]
	if om == nil || om.cfg.Batching != mc.Batching || om.cfg.Cache != mc.Cache ||
		om.cfg.CircuitBreakers != mc.CircuitBreakers || om.cfg.Hedging != mc.Hedging || om.cfg.Protocol != mc.Protocol {
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

// versionsAvailable lists whether each version of the applied
// configuration takes its share of the split, for the
// batchmesh_version_available gauge.
func (p *Proxy) versionsAvailable() []versionAvailable {
	st := p.st.Load()
	if st == nil {
		return nil
	}
	var out []versionAvailable
	for _, name := range st.names {
		for _, v := range st.models[name].versions {
			out = append(out, versionAvailable{model: name, version: v.cfg.Version, available: p.versionUp(v)})
		}
	}
	return out
}

// outlierOf returns cfg's outlier detection settings for the health
// table: the zero value is the defaults; consecutive_failures 0 and
// enforcing_failure_percentage 0 turn their ejections off.
func outlierOf(cfg *config.Config) health.Outlier {
	if cfg == nil || cfg.OutlierDetection == (config.OutlierDetection{}) {
		return health.Outlier{}
	}
	o := cfg.OutlierDetection
	off := func(n int) int {
		if n == 0 {
			return -1
		}
		return n
	}
	return health.Outlier{
		ConsecutiveFailures: off(o.ConsecutiveFailures), BaseEjectionTime: o.BaseEjectionTime,
		MaxEjectionTime: o.MaxEjectionTime, MaxEjectionPercent: o.MaxEjectionPercent,
		Interval: o.Interval, FailurePercentageThreshold: o.FailurePercentageThreshold,
		FailurePercentageMinimumHosts:  o.FailurePercentageMinimumHosts,
		FailurePercentageRequestVolume: o.FailurePercentageRequestVolume,
		EnforcingFailurePercentage:     off(o.EnforcingFailurePercentage),
	}
}

// laneEndpoint is one endpoint of one lane.
type laneEndpoint struct {
	lane    *batch.Lane
	address string
}

// eachLane calls f for every endpoint of every lane of st.
func (st *state) eachLane(f func(laneEndpoint)) {
	for _, name := range st.names {
		for _, v := range st.models[name].versions {
			if v.lane == nil {
				continue
			}
			for _, e := range v.cfg.Endpoints {
				f(laneEndpoint{v.lane, e.Address})
			}
		}
	}
}

// batchPolicy is the lane policy of a batching.batch_policy value; "" (a
// Config built in code) is the default.
func batchPolicy(p string) batch.Policy {
	if p == "" {
		p = config.DefaultBatchPolicy
	}
	return batch.Policy(p)
}
