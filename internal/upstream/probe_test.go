package upstream_test

import (
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

// TestProbeFallsBackToHealth: a runtime that is not v2 (404 on
// /v2/health/ready) is probed on GET /health, as OpenAI-compatible runtimes
// (text-embeddings-inference, vLLM) answer; its status decides.
func TestProbeFallsBackToHealth(t *testing.T) {
	for _, tt := range []struct {
		name   string
		health int // status of GET /health; 0: the route does not exist either
		want   inference.Kind
	}{
		{name: "healthy", health: fasthttp.StatusOK, want: 0},
		{name: "loading", health: fasthttp.StatusServiceUnavailable, want: inference.KindUnavailable},
		{name: "no health route", health: 0, want: inference.KindUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := serve(t, func(ctx *fasthttp.RequestCtx) {
				switch string(ctx.Path()) {
				case "/health":
					if tt.health != 0 {
						ctx.SetStatusCode(tt.health)
						return
					}
				}
				ctx.SetStatusCode(fasthttp.StatusNotFound)
				ctx.SetBodyString(`{"error":"not found"}`)
			})
			c := upstream.New(upstream.Config{})
			defer c.Close()
			err := c.Probe(t.Context(), addr)
			switch {
			case tt.want == 0 && err != nil:
				t.Errorf("Probe: %v, want ready", err)
			case tt.want != 0 && inference.KindOf(err) != tt.want:
				t.Errorf("Probe: %v, want kind %d", err, tt.want)
			}
		})
	}
}
