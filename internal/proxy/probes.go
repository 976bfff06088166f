package proxy

import (
	"context"
	"slices"

	"github.com/batchmesh/batchmesh/internal/config"
)

// Probe checks every endpoint of the applied configuration once, at the
// same time, and records the results in the health table. Call it before
// serving so that /readyz tells the truth from the start, and after
// applying a configuration with new endpoints.
func (p *Proxy) Probe(ctx context.Context) { p.health.Probe(ctx, p.endpoints()) }

// RunProbes probes every endpoint each ProbeInterval until ctx ends.
func (p *Proxy) RunProbes(ctx context.Context) { p.health.Run(ctx, p.endpoints) }

// endpoints lists the applied configuration's endpoint addresses, once
// each.
func (p *Proxy) endpoints() []string {
	st := p.st.Load()
	seen := map[string]bool{}
	var out []string
	for _, name := range st.names {
		for _, v := range st.models[name].versions {
			for _, e := range v.cfg.Endpoints {
				if !seen[e.Address] {
					seen[e.Address] = true
					out = append(out, e.Address)
				}
			}
		}
	}
	return out
}

// healthChanged hands a change of the health table to every lane of the
// applied configuration that sends to address. The table calls it in the
// order of the changes.
func (p *Proxy) healthChanged(address string, up bool) {
	p.st.Load().eachLane(func(l laneEndpoint) {
		if l.address == address {
			l.lane.SetHealthy(address, up)
		}
	})
}

// syncHealth brings the lanes of a newly applied st up to the table, so
// that a change the table made while st was being built is not missed.
func (p *Proxy) syncHealth(st *state) {
	p.health.Sync(func(up func(string) bool) {
		st.eachLane(func(l laneEndpoint) { l.lane.SetHealthy(l.address, up(l.address)) })
	})
}

// peers lists the endpoints that share a version with address, itself
// included: outlier detection keeps one of them in rotation. It reads the
// applied configuration without a lock (the health table calls it with its
// own held).
func (p *Proxy) peers(address string) []string {
	st := p.st.Load()
	if st == nil {
		return []string{address}
	}
	seen := map[string]bool{address: true}
	out := []string{address}
	for _, name := range st.names {
		for _, v := range st.models[name].versions {
			if !slices.ContainsFunc(v.cfg.Endpoints, func(e config.Endpoint) bool { return e.Address == address }) {
				continue
			}
			for _, e := range v.cfg.Endpoints {
				if !seen[e.Address] {
					seen[e.Address] = true
					out = append(out, e.Address)
				}
			}
		}
	}
	return out
}
