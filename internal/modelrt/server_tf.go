package modelrt

import (
	"encoding/binary"
	"math"
	"net/http"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// handleTF serves TensorFlow Serving's model status (GET /v1/models/{m})
// and predict (POST /v1/models/{m}[/versions/{v}]:predict). Errors are
// {"error": "..."}, as TensorFlow Serving writes them.
func (s *Server) handleTF(ctx *fasthttp.RequestCtx, route codec.Route) {
	m, err := s.model(route)
	if err != nil {
		writeError(ctx, err)
		return
	}
	if route.Kind == codec.RouteTFModel {
		state := "AVAILABLE"
		if !s.Ready() {
			state = "LOADING"
		}
		type status struct {
			Version string `json:"version"`
			State   string `json:"state"`
		}
		writeJSON(ctx, http.StatusOK, map[string][]status{"model_version_status": {{Version: s.cfg.Version, State: state}}})
		return
	}
	if !ctx.IsPost() {
		writeError(ctx, inference.Errorf(inference.KindMethod, "modelrt: %s needs POST, got %s", ctx.Path(), ctx.Method()))
		return
	}
	if !s.Ready() {
		ctx.Response.Header.Set("Retry-After", "1")
		writeError(ctx, inference.Errorf(inference.KindUnavailable, "modelrt: not ready"))
		return
	}
	p, err := codec.DecodePredictRequest(ctx.PostBody())
	if err != nil {
		writeError(ctx, err)
		return
	}
	req := inference.Request{Model: route.Model, Version: s.cfg.Version, Inputs: tfInputs(m, p.Inputs)}
	rows, err := req.Rows()
	if err == nil {
		err = m.Validate(&req)
	}
	if err == nil && rows > s.cfg.MaxBatch {
		err = inference.Errorf(inference.KindInvalid, "modelrt: batch of %d rows is over this runtime's limit of %d (-max-batch)", rows, s.cfg.MaxBatch)
	}
	if err != nil {
		writeError(ctx, err)
		return
	}
	outs, err := s.run(work(ctx), m, &req, route.Model, rows)
	if err != nil {
		writeError(ctx, err)
		return
	}
	body, err := codec.AppendPredictResponse(ctx.Response.Body()[:0], outs, p.Columnar)
	if err != nil {
		writeError(ctx, err)
		return
	}
	ctx.Response.SetBodyRaw(body)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("endpoint-load-metrics", s.load.orca(s.cfg.Slots, len(s.slots), s.backlog()))
}

// tfInputs fits a predict request's inputs to the model: a single unnamed
// input takes the name of the model's single input, and numbers (FP64 on
// the wire) take the datatype the model declares for them (FP32 for mlp).
func tfInputs(m Model, ins []inference.Tensor) []inference.Tensor {
	specs := m.Inputs()
	out := make([]inference.Tensor, len(ins))
	for i, t := range ins {
		if t.Name == codec.TFUnnamed && len(specs) == 1 {
			t.Name = specs[0].Name
		}
		for _, sp := range specs {
			if sp.Name == t.Name && sp.DataType == "FP32" && t.DataType == inference.FP64 {
				data := make([]byte, 0, len(t.Data)/2)
				for j := 0; j+8 <= len(t.Data); j += 8 {
					f := math.Float64frombits(binary.LittleEndian.Uint64(t.Data[j:]))
					data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(f)))
				}
				t.DataType, t.Data = inference.FP32, data
			}
		}
		out[i] = t
	}
	return out
}
