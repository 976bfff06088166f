package proxy

import (
	"encoding/json"
	"fmt"
	"net/http/pprof"
	"strings"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// AdminHandler serves the admin listener: /healthz, /readyz, /metrics,
// /config_dump, /clusters, POST /drain and Go's /debug/pprof/ profiles.
func (p *Proxy) AdminHandler(ctx *fasthttp.RequestCtx) { p.admin(ctx) }

func (p *Proxy) newAdmin() fasthttp.RequestHandler {
	var metricsHandler fasthttp.RequestHandler
	if p.cfg.Metrics != nil {
		metricsHandler = fasthttpadaptor.NewFastHTTPHandler(p.cfg.Metrics)
	}
	pprofHandler := fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Index)
	profileHandler := fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Profile)
	return func(ctx *fasthttp.RequestCtx) {
		path := string(ctx.Path())
		switch {
		case path == "/debug/pprof/profile":
			profileHandler(ctx)
			return
		case strings.HasPrefix(path, "/debug/pprof/"):
			pprofHandler(ctx)
			return
		}
		switch path {
		case "/healthz":
			ctx.SetContentType("text/plain")
			ctx.SetBodyString("ok\n")
		case "/readyz":
			if why := p.ready(); why != "" {
				ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
				writeJSON(ctx, map[string]any{"ready": false, "reason": why})
				return
			}
			writeJSON(ctx, map[string]any{"ready": true})
		case "/metrics":
			if metricsHandler == nil {
				writeAdminError(ctx, inference.Errorf(inference.KindNotFound, "proxy: metrics are not enabled"))
				return
			}
			metricsHandler(ctx)
		case "/config_dump":
			writeJSON(ctx, p.configDump())
		case "/clusters":
			writeJSON(ctx, p.clusters())
		case "/drain":
			if !ctx.IsPost() {
				writeAdminError(ctx, inference.Errorf(inference.KindMethod, "proxy: /drain needs POST"))
				return
			}
			p.StartDrain()
			writeJSON(ctx, map[string]any{"draining": true})
		default:
			writeAdminError(ctx, inference.Errorf(inference.KindNotFound,
				"proxy: no admin route %s; routes: /healthz /readyz /metrics /config_dump /clusters POST /drain /debug/pprof/", path))
		}
	}
}

type dumpEndpoint struct {
	Address  string `json:"address"`
	Weight   int    `json:"weight"`
	Slots    int    `json:"slots"`
	Zone     string `json:"zone,omitempty"`
	Protocol string `json:"protocol,omitempty"` // "grpc", or absent for http
	Healthy  bool   `json:"healthy"`
}

type dumpVersion struct {
	Version   string         `json:"version"`
	Weight    int            `json:"weight"`
	Endpoints []dumpEndpoint `json:"endpoints"`
	// ServiceAddresses: config.Version.ServiceAddresses, when any.
	ServiceAddresses []string `json:"service_addresses,omitempty"`
}

type dumpModel struct {
	Name     string         `json:"name"`
	Protocol string         `json:"protocol"`
	Batching map[string]any `json:"batching"`
	Cache    map[string]any `json:"cache"`
	Versions []dumpVersion  `json:"versions"`
}

func (p *Proxy) configDump() map[string]any {
	st := p.st.Load()
	models := make([]dumpModel, 0, len(st.names))
	for _, name := range st.names {
		m := st.models[name]
		b, c := m.cfg.Batching, m.cfg.Cache
		dm := dumpModel{
			Name: name, Protocol: m.cfg.Protocol,
			Batching: map[string]any{
				"enabled": b.Enabled(), "max_batch_size": b.MaxBatchSize, "max_queue_delay": b.MaxQueueDelay.String(),
				"max_queue_size": b.MaxQueueSize, "batch_policy": b.Policy, "timeout": b.Timeout.String(),
			},
			Cache: map[string]any{
				"enabled": c.Enabled, "ttl": c.TTL.String(), "granularity": c.Granularity, "scope": c.Scope,
			},
		}
		for _, v := range m.versions {
			dv := dumpVersion{Version: v.cfg.Version, Weight: v.cfg.Weight, ServiceAddresses: v.cfg.ServiceAddresses}
			for _, e := range v.cfg.Endpoints {
				dv.Endpoints = append(dv.Endpoints, dumpEndpoint{Address: e.Address, Weight: e.Weight, Slots: e.Slots, Zone: e.Zone, Protocol: e.Protocol, Healthy: p.health.Up(e.Address)})
			}
			dm.Versions = append(dm.Versions, dv)
		}
		models = append(models, dm)
	}
	entries, bytes := p.cache.Usage()
	maxBytes, maxEntries := p.cache.Limits()
	enabled := false
	for _, m := range st.models {
		enabled = enabled || m.cfg.Cache.Enabled
	}
	cacheUsage := map[string]any{"enabled": enabled, "max_bytes": maxBytes, "max_entries": maxEntries, "bytes": bytes, "entries": entries}
	weights := ""
	if st.cfg != nil {
		weights = st.cfg.Weights
	}
	xds := map[string]any{"mode": "static", "note": "configuration from -config"}
	if p.cfg.XDS != nil {
		xds = map[string]any{"mode": "xds", "versions": p.cfg.XDS()}
	}
	return map[string]any{
		"source":   p.cfg.Source,
		"weights":  weights,
		"cache":    cacheUsage,
		"xds":      xds,
		"draining": p.draining.Load(),
		"models":   models,
	}
}

type clusterStatus struct {
	Cluster   string                 `json:"cluster"`
	Batching  bool                   `json:"batching"`
	Available bool                   `json:"available"` // some endpoint healthy: in the split
	Queued    int                    `json:"queued_rows"`
	Policy    *batch.PolicyStatus    `json:"policy,omitempty"` // batched versions only
	Endpoints []batch.EndpointStatus `json:"endpoints"`
}

func (p *Proxy) clusters() []clusterStatus {
	var out []clusterStatus
	st := p.st.Load()
	for _, name := range st.names {
		for _, v := range st.models[name].versions {
			cs := clusterStatus{Cluster: config.ClusterName(name, v.cfg.Version), Batching: v.lane != nil, Available: p.versionUp(v)}
			if v.lane != nil {
				cs.Endpoints, cs.Queued = v.lane.Status()
				ps := v.lane.PolicyStatus()
				cs.Policy = &ps
			} else {
				for _, e := range v.cfg.Endpoints {
					cs.Endpoints = append(cs.Endpoints, batch.EndpointStatus{Address: e.Address, Weight: e.Weight, Slots: e.Slots, Healthy: p.health.Up(e.Address)})
				}
			}
			out = append(out, cs)
		}
	}
	return out
}

func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeAdminError(ctx, fmt.Errorf("proxy: encode: %w", err))
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

func writeAdminError(ctx *fasthttp.RequestCtx, err error) {
	ctx.SetStatusCode(inference.HTTPStatus(err))
	ctx.SetContentType("application/json")
	ctx.SetBody(codec.AppendError(nil, err.Error()))
}
