package proxy

import (
	"math/rand/v2"

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

// pickVersion chooses a version by weight, or the one the route names.
func pickVersion(m *model, want string) (*version, error) {
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
	r := rand.IntN(m.totalWeight) // the runtime's per-thread generator: no lock
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

// ModelEndpoints returns the endpoint addresses of every version of the
// named model in the applied configuration, or nil when the proxy does not
// serve that model. The transparent listener matches captured requests
// against them.
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
	}
	return out
}
