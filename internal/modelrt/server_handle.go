package modelrt

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

func (s *Server) handleTransportError(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		writeError(ctx, inference.Errorf(inference.KindTooLarge,
			"modelrt: request body is over the limit of %d bytes", s.cfg.MaxBodyBytes))
		return
	}
	writeError(ctx, inference.Errorf(inference.KindInvalid, "modelrt: cannot read request: %v", err))
}

// writeError writes the v2 error shape with the status of err's kind.
func writeError(ctx *fasthttp.RequestCtx, err error) {
	ctx.Response.Reset()
	ctx.SetStatusCode(inference.HTTPStatus(err))
	ctx.SetContentType("application/json")
	ctx.SetBody(codec.AppendError(nil, err.Error()))
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(ctx, fmt.Errorf("modelrt: encode %T: %w", v, err))
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	if path == "/metrics" && s.metrics != nil {
		s.metrics(ctx)
		return
	}
	if path == "/health" {
		status := http.StatusOK
		if !s.Ready() {
			status = http.StatusServiceUnavailable
		}
		writeJSON(ctx, status, codec.Ready{Ready: s.Ready()})
		return
	}
	route := codec.ParseRoute(path)
	switch route.Kind {
	case codec.RouteEmbeddings, codec.RouteOpenAIModels:
		s.handleOpenAI(ctx, route)
		return
	case codec.RoutePredict, codec.RouteTFModel:
		s.handleTF(ctx, route)
		return
	}
	if route.Kind == codec.RouteUnknown {
		writeError(ctx, inference.Errorf(inference.KindNotFound, "modelrt: no route %s %s", ctx.Method(), path))
		return
	}
	wantMethod := fasthttp.MethodGet
	if route.Kind == codec.RouteInfer {
		wantMethod = fasthttp.MethodPost
	}
	if string(ctx.Method()) != wantMethod && !(wantMethod == fasthttp.MethodGet && ctx.IsHead()) {
		writeError(ctx, inference.Errorf(inference.KindMethod, "modelrt: %s needs %s, got %s", path, wantMethod, ctx.Method()))
		return
	}
	switch route.Kind {
	case codec.RouteServer:
		writeJSON(ctx, http.StatusOK, codec.ServerMetadata{
			Name: "batchmesh-model", Version: s.cfg.Version,
			Extensions: []string{codec.ExtensionBinaryTensorData},
		})
	case codec.RouteLive:
		writeJSON(ctx, http.StatusOK, codec.Live{Live: true})
	case codec.RouteReady:
		status := http.StatusOK
		if !s.Ready() {
			status = http.StatusServiceUnavailable
		}
		writeJSON(ctx, status, codec.Ready{Ready: s.Ready()})
	case codec.RouteModel, codec.RouteModelReady, codec.RouteInfer:
		m, err := s.model(route)
		if err != nil {
			writeError(ctx, err)
			return
		}
		switch route.Kind {
		case codec.RouteModel:
			writeJSON(ctx, http.StatusOK, s.metadata(route.Model, m))
		case codec.RouteModelReady:
			status := http.StatusOK
			if !s.Ready() {
				status = http.StatusServiceUnavailable
			}
			writeJSON(ctx, status, codec.ModelReady{Name: route.Model, Ready: s.Ready()})
		default:
			s.infer(ctx, route.Model, m)
		}
	}
}

func (s *Server) model(r codec.Route) (Model, error) {
	m, ok := s.cfg.Models[r.Model]
	if !ok {
		return nil, inference.Errorf(inference.KindNotFound, "modelrt: unknown model %q; this runtime serves %v", r.Model, s.names)
	}
	if r.Version != "" && r.Version != s.cfg.Version {
		return nil, inference.Errorf(inference.KindNotFound, "modelrt: model %q has no version %q; versions: [%s]", r.Model, r.Version, s.cfg.Version)
	}
	return m, nil
}

func (s *Server) metadata(name string, m Model) codec.ModelMetadata {
	conv := func(specs []TensorSpec) []codec.TensorMetadata {
		out := make([]codec.TensorMetadata, len(specs))
		for i, t := range specs {
			out[i] = codec.TensorMetadata{Name: t.Name, Datatype: t.DataType, Shape: t.Shape}
		}
		return out
	}
	return codec.ModelMetadata{
		Name: name, Versions: []string{s.cfg.Version}, Platform: "batchmesh_go",
		Inputs: conv(m.Inputs()), Outputs: conv(m.Outputs()),
	}
}
