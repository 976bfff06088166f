package proxy

import (
	"context"
	"math/rand/v2"
	"slices"

	"github.com/batchmesh/batchmesh/internal/balancer"
	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/inference"
)

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

// pickVersion chooses a version by weight among those that can serve (a
// version with no healthy endpoint drops out of the split and its weight
// goes to the others), or the one the route names, which must be able to
// serve. When no version can serve, the configured split applies and the
// request meets the unhealthy version's 503.
func (p *Proxy) pickVersion(m *model, want string) (*version, error) {
	if want != "" {
		for _, v := range m.versions {
			if v.cfg.Version != want {
				continue
			}
			if !p.versionUp(v) {
				return nil, inference.Errorf(inference.KindUnavailable, "proxy: version %q of model %q has no healthy endpoint", want, m.cfg.Name)
			}
			return v, nil
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
	total := 0
	for _, v := range m.versions {
		if p.versionUp(v) {
			total += v.cfg.Weight
		}
	}
	if total == 0 { // none can serve (or only weight-0 ones): the configured split
		return weighted(m.versions, m.totalWeight, func(*version) bool { return true }), nil
	}
	return weighted(m.versions, total, p.versionUp), nil
}

// weighted picks one of the versions for which ok holds, by weight; total
// is the sum of their weights and is above 0.
func weighted(vs []*version, total int, ok func(*version) bool) *version {
	r := rand.IntN(total) // the runtime's per-thread generator: no lock
	var last *version
	for _, v := range vs {
		if !ok(v) {
			continue
		}
		if r < v.cfg.Weight {
			return v
		}
		r -= v.cfg.Weight
		last = v
	}
	return last
}

// failover calls serve with v and, for a request that did not name its
// version (pinned false), again with other versions of the split while the
// last one could not serve it (inference.KindUnavailable), ctx is live and
// failoverVersion finds one. It returns the version of the last call.
func (p *Proxy) failover(ctx context.Context, m *model, v *version, pinned bool, serve func(*version) error) *version {
	err := serve(v)
	for tried := []*version{v}; err != nil && !pinned && inference.KindOf(err) == inference.KindUnavailable && ctx.Err() == nil; {
		next := p.failoverVersion(m, tried)
		if next == nil {
			break
		}
		v, tried = next, append(tried, next)
		err = serve(v)
	}
	return v
}

// failoverVersion picks, by weight, a version of m to serve a request that
// named no version after the versions in tried could not: one in the split
// (weight above 0), batched, with a healthy endpoint, and not tried yet. It
// returns nil when there is none. Rows queued on a version whose last
// endpoint went down are failed by its lane at once, so they have their
// deadline left to spend here.
func (p *Proxy) failoverVersion(m *model, tried []*version) *version {
	ok := func(v *version) bool {
		return v.cfg.Weight > 0 && v.lane != nil && !slices.Contains(tried, v) && p.versionUp(v)
	}
	total := 0
	for _, v := range m.versions {
		if ok(v) {
			total += v.cfg.Weight
		}
	}
	if total == 0 {
		return nil
	}
	return weighted(m.versions, total, ok)
}

// versionUp reports whether some endpoint of v is healthy: the version
// takes its share of the split. It reads the health table without a lock.
func (p *Proxy) versionUp(v *version) bool {
	for _, e := range v.cfg.Endpoints {
		if p.health.Up(e.Address) {
			return true
		}
	}
	return false
}

// pickEndpoint chooses a healthy endpoint of v for a pass-through call, by
// weight.
func (p *Proxy) pickEndpoint(v *version) (string, error) {
	total := 0
	for _, e := range v.cfg.Endpoints {
		if p.health.Up(e.Address) {
			total += e.Weight
		}
	}
	if total == 0 {
		return "", inference.Errorf(inference.KindUnavailable, "proxy: version %q has no healthy endpoint", v.cfg.Version)
	}
	r := rand.IntN(total)
	for _, e := range v.cfg.Endpoints {
		if !p.health.Up(e.Address) {
			continue
		}
		if r < e.Weight {
			return e.Address, nil
		}
		r -= e.Weight
	}
	return "", inference.Errorf(inference.KindUnavailable, "proxy: version %q has no healthy endpoint", v.cfg.Version)
}

// ModelEndpoints returns the endpoint addresses and the service addresses
// (config.Version.ServiceAddresses: a Kubernetes Service's ClusterIP) of
// every version of the named model in the applied configuration, or nil
// when the proxy does not serve that model. The transparent listener
// matches captured requests against them.
func (p *Proxy) ModelEndpoints(name string) []string {
	m := p.st.Load().models[name]
	if m == nil {
		return nil
	}
	var out []string
	for _, v := range m.versions {
		for _, e := range v.cfg.Endpoints {
			out = append(out, e.Address)
		}
		out = append(out, v.cfg.ServiceAddresses...)
	}
	return out
}
