package modelrt

import (
	"encoding/binary"
	"net/http"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// writeOpenAIError writes OpenAI's error shape with the status of err's
// kind.
func writeOpenAIError(ctx *fasthttp.RequestCtx, err error) {
	status := inference.HTTPStatus(err)
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(codec.AppendOpenAIError(nil, err.Error(), codec.OpenAIErrorType(status), codec.ParamOf(err), ""))
}

// handleOpenAI serves GET /v1/models and POST /v1/embeddings.
func (s *Server) handleOpenAI(ctx *fasthttp.RequestCtx, route codec.Route) {
	if route.Kind == codec.RouteOpenAIModels {
		if !ctx.IsGet() {
			writeOpenAIError(ctx, inference.Errorf(inference.KindMethod, "modelrt: %s needs GET, got %s", ctx.Path(), ctx.Method()))
			return
		}
		type entry struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			OwnedBy string `json:"owned_by"`
		}
		list := struct {
			Object string  `json:"object"`
			Data   []entry `json:"data"`
		}{Object: "list", Data: []entry{}}
		for _, n := range s.names {
			list.Data = append(list.Data, entry{ID: n, Object: "model", OwnedBy: "batchmesh"})
		}
		writeJSON(ctx, http.StatusOK, list)
		return
	}
	if !ctx.IsPost() {
		writeOpenAIError(ctx, inference.Errorf(inference.KindMethod, "modelrt: %s needs POST, got %s", ctx.Path(), ctx.Method()))
		return
	}
	if !s.Ready() {
		ctx.Response.Header.Set("Retry-After", "1")
		writeOpenAIError(ctx, inference.Errorf(inference.KindUnavailable, "modelrt: not ready"))
		return
	}
	r, err := codec.DecodeEmbeddingsRequest(ctx.PostBody())
	if err != nil {
		writeOpenAIError(ctx, err)
		return
	}
	m, ok := s.cfg.Models[r.Model].(*Embed)
	if !ok {
		writeOpenAIError(ctx, &inference.Error{Kind: inference.KindNotFound,
			Msg: "modelrt: model " + r.Model + " is not an embedding model this runtime serves; embedding models: " + joinNames(embedModels(s.cfg.Models, s.names)),
			Err: &codec.ParamError{Param: "model"}})
		return
	}
	req := inference.Request{Model: r.Model, Version: s.cfg.Version, Inputs: []inference.Tensor{r.Input}}
	if r.Dimensions > 0 {
		req.Parameters = inference.Parameters{codec.ParamDimensions: int64(r.Dimensions)}
	}
	rows := int(r.Input.Shape[0])
	if err = m.Validate(&req); err == nil && rows > s.cfg.MaxBatch {
		err = inference.Errorf(inference.KindInvalid, "modelrt: batch of %d inputs is over this runtime's limit of %d (-max-batch)", rows, s.cfg.MaxBatch)
	}
	if err != nil {
		writeOpenAIError(ctx, &inference.Error{Kind: inference.KindOf(err), Msg: err.Error(), Err: &codec.ParamError{Param: "input"}})
		return
	}
	outs, err := s.run(work(ctx), m, &req, r.Model, rows)
	if err != nil {
		writeOpenAIError(ctx, err)
		return
	}
	var tokens int64
	for i := 0; i+8 <= len(outs[1].Data); i += 8 {
		tokens += int64(binary.LittleEndian.Uint64(outs[1].Data[i:]))
	}
	body, err := codec.AppendEmbeddingsResponse(ctx.Response.Body()[:0], r.Model, &outs[0], tokens, r.EncodingFormat)
	if err != nil {
		writeOpenAIError(ctx, err)
		return
	}
	ctx.Response.SetBodyRaw(body)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("endpoint-load-metrics", s.load.orca(s.cfg.Slots, len(s.slots), s.backlog()))
}

func joinNames(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	out := names[0]
	for _, n := range names[1:] {
		out += ", " + n
	}
	return out
}
