package proxy

import (
	"context"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// grpcEndpoints lists the addresses of cfg's endpoints of protocol grpc.
func grpcEndpoints(cfg *config.Config) map[string]bool {
	var out map[string]bool
	for _, m := range cfg.Models {
		for _, v := range m.Versions {
			for _, e := range v.Endpoints {
				if e.Protocol == config.EndpointGRPC {
					if out == nil {
						out = map[string]bool{}
					}
					out[e.Address] = true
				}
			}
		}
	}
	return out
}

// isGRPC reports whether the applied configuration reaches address over
// gRPC.
func (p *Proxy) isGRPC(address string) bool {
	st := p.st.Load()
	return st != nil && st.grpc[address]
}

// probe checks one endpoint's readiness for the health table: ServerReady
// over gRPC for an endpoint of protocol grpc, the HTTP probe otherwise.
func (p *Proxy) probe(ctx context.Context, address string) error {
	if p.isGRPC(address) {
		return p.grpcUp.Probe(ctx, address, p.cfg.Upstream.ProbeTimeout)
	}
	return p.up.Probe(ctx, address)
}

// errGRPCPassThrough is the error of a REST request that would pass
// through to an endpoint of protocol grpc: only inference (through the
// lanes) and the gRPC surface's own calls reach such an endpoint.
func errGRPCPassThrough(m *model, ep string, path []byte) error {
	return inference.Errorf(inference.KindNotFound,
		"proxy: %s is not supported for model %q: its endpoint %s speaks gRPC (protocol: grpc), which serves inference through the batching lanes and the gRPC calls only",
		path, m.cfg.Name, ep)
}
