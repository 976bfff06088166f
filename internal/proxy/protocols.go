package proxy

import (
	"context"
	"encoding/binary"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/cache"
	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// routeProtocol is the protocol a route belongs to.
func routeProtocol(k codec.RouteKind) string {
	switch k {
	case codec.RoutePredict, codec.RouteTFModel:
		return config.ProtocolTFServing
	case codec.RouteEmbeddings, codec.RouteOpenAIModels:
		return config.ProtocolOpenAI
	}
	return config.ProtocolV2
}

// protocolRoutes says where a model of a protocol is served.
func protocolRoutes(protocol string) string {
	switch protocol {
	case config.ProtocolOpenAI:
		return "send POST /v1/embeddings with the model in the body"
	case config.ProtocolTFServing:
		return "send POST /v1/models/{model}[/versions/{version}]:predict"
	}
	return "send POST /v2/models/{model}[/versions/{version}]/infer"
}

// replyIn is replyCache in the error shape of protocol: OpenAI's nested
// {"error": {"message", "type", "param", "code"}} for openai, {"error":
// "..."} for v2 and tfserving.
func (p *Proxy) replyIn(rc *fasthttp.RequestCtx, protocol, model, cacheResult string, start time.Time, err error) {
	p.replyCache(rc, model, cacheResult, start, err)
	if protocol == config.ProtocolOpenAI {
		setOpenAIError(rc, err)
	}
}

func setOpenAIError(rc *fasthttp.RequestCtx, err error) {
	status := inference.HTTPStatus(err)
	code := ""
	if status == fasthttp.StatusTooManyRequests {
		code = "rate_limit_exceeded"
	}
	rc.SetBody(codec.AppendOpenAIError(nil, err.Error(), codec.OpenAIErrorType(status), codec.ParamOf(err), code))
}

// openAIModels answers GET /v1/models with the models of protocol openai.
func (p *Proxy) openAIModels(rc *fasthttp.RequestCtx) {
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
	st := p.st.Load()
	for _, n := range st.names {
		if st.models[n].cfg.Protocol == config.ProtocolOpenAI {
			list.Data = append(list.Data, entry{ID: n, Object: "model", OwnedBy: "batchmesh"})
		}
	}
	writeJSON(rc, list)
}

// serveEmbeddings serves POST /v1/embeddings: the model is the body's.
func (p *Proxy) serveEmbeddings(rc *fasthttp.RequestCtx, start time.Time) {
	fail := func(model string, err error) {
		p.replyIn(rc, config.ProtocolOpenAI, model, cacheBypass, start, err)
	}
	if !rc.IsPost() {
		fail("", inference.Errorf(inference.KindMethod, "proxy: %s needs POST, got %s", rc.Path(), rc.Method()))
		return
	}
	req, err := codec.DecodeEmbeddingsRequest(rc.PostBody())
	if err != nil {
		fail("", err)
		return
	}
	st := p.st.Load()
	m := st.models[req.Model]
	if m == nil || m.cfg.Protocol != config.ProtocolOpenAI {
		var names []string
		for _, n := range st.names {
			if st.models[n].cfg.Protocol == config.ProtocolOpenAI {
				names = append(names, n)
			}
		}
		fail("", &inference.Error{Kind: inference.KindNotFound, Err: &codec.ParamError{Param: "model"},
			Msg: "proxy: model " + strconv.Quote(req.Model) + " is not an embeddings model served here; models with protocol openai: " + strconv.Quote(joinComma(names))})
		return
	}
	v, err := p.pickVersion(m, "")
	if err != nil {
		fail(m.cfg.Name, err)
		return
	}
	timeout, err := requestTimeout(rc, m.cfg.Batching.Timeout)
	if err != nil {
		fail(m.cfg.Name, err)
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(timeout))
	defer cancel()
	if v.lane == nil {
		p.forward(ctx, rc, m, v, start)
		return
	}
	p.infer(ctx, rc, m, v, false, start, func(ctx context.Context, rc *fasthttp.RequestCtx, m *model, v *version) (cachedResult, int, batch.Priority, error) {
		return p.embed(ctx, rc, m, v, &req)
	})
}

func joinComma(names []string) string {
	out := ""
	for i, n := range names {
		if i > 0 {
			out += ", "
		}
		out += n
	}
	return out
}

// embed runs one decoded embeddings request through the cache and the
// lane: each input is a row. Rows share a batch when they are of the same
// kind (text or token ids) and ask for the same dimensions; encoding_format
// and user never split batches (the runtime is always asked for float, and
// each caller's answer is encoded its own way).
func (p *Proxy) embed(ctx context.Context, rc *fasthttp.RequestCtx, m *model, v *version, req *codec.EmbeddingsRequest) (res cachedResult, rows int, prio batch.Priority, err error) {
	rows = int(req.Input.Shape[0])
	if prio, err = batch.ParsePriority(string(rc.Request.Header.Peek(HeaderPriority))); err != nil {
		return res, rows, batch.PriorityNormal, err
	}
	br := &batch.Request{
		Inputs: []inference.Tensor{req.Input}, Rows: rows, Priority: prio,
		Group:    req.Input.Name + "|" + strconv.Itoa(req.Dimensions),
		Affinity: string(rc.Request.Header.Peek(HeaderTenant)),
	}
	if req.Dimensions > 0 {
		br.Parameters = inference.Parameters{codec.ParamDimensions: int64(req.Dimensions)}
	}
	tenant := br.Affinity + "\x00" + req.User // the cache key's tenant: header and user
	if res, err = p.runBatched(ctx, rc, m, v, br, tenant, "embeddings"); err != nil {
		return res, rows, prio, err
	}
	var emb, tok *inference.Tensor
	for i := range res.outputs {
		switch res.outputs[i].Name {
		case codec.EmbedOutput:
			emb = &res.outputs[i]
		case codec.EmbedOutputTokens:
			tok = &res.outputs[i]
		}
	}
	if emb == nil || tok == nil {
		return res, rows, prio, inference.Errorf(inference.KindUpstream, "proxy: the embeddings answer lacks %q or %q", codec.EmbedOutput, codec.EmbedOutputTokens)
	}
	var tokens int64
	for i := 0; i+8 <= len(tok.Data); i += 8 {
		tokens += int64(binary.LittleEndian.Uint64(tok.Data[i:]))
	}
	body, err := codec.AppendEmbeddingsResponse(rc.Response.Body()[:0], req.Model, emb, tokens, req.EncodingFormat)
	if err != nil {
		return res, rows, prio, inference.Errorf(inference.KindUpstream, "proxy: %w", err)
	}
	rc.Response.SetBodyRaw(body)
	rc.SetContentType("application/json")
	setResultHeaders(rc, &res)
	return res, rows, prio, nil
}

// servePredict is serveInfer for TF Serving predict: the instances (or dim
// 0 of the columnar inputs) are rows, and requests share a batch as v2
// requests do (same input names, kinds and row shapes).
func (p *Proxy) servePredict(ctx context.Context, rc *fasthttp.RequestCtx, m *model, v *version) (res cachedResult, rows int, prio batch.Priority, err error) {
	prio = batch.PriorityNormal
	pr, err := codec.DecodePredictRequest(rc.PostBody())
	if err != nil {
		return res, 0, prio, err
	}
	req := inference.Request{Inputs: pr.Inputs}
	if rows, err = req.Rows(); err != nil {
		return res, 0, prio, err
	}
	if prio, err = batch.ParsePriority(string(rc.Request.Header.Peek(HeaderPriority))); err != nil {
		return res, rows, batch.PriorityNormal, err
	}
	br := &batch.Request{
		Inputs: req.Inputs, Rows: rows, Priority: prio, Group: groupKey(&req, nil, nil),
		Affinity: string(rc.Request.Header.Peek(HeaderTenant)),
	}
	if res, err = p.runBatched(ctx, rc, m, v, br, br.Affinity, "predict"); err != nil {
		return res, rows, prio, err
	}
	body, err := codec.AppendPredictResponse(rc.Response.Body()[:0], res.outputs, pr.Columnar)
	if err != nil {
		return res, rows, prio, inference.Errorf(inference.KindUpstream, "proxy: %w", err)
	}
	rc.Response.SetBodyRaw(body)
	rc.SetContentType("application/json")
	setResultHeaders(rc, &res)
	return res, rows, prio, nil
}

// runBatched sends br through the cache (when the model has it on and
// Cache-Control does not skip it) or straight to the lane.
func (p *Proxy) runBatched(ctx context.Context, rc *fasthttp.RequestCtx, m *model, v *version, br *batch.Request, tenant, route string) (cachedResult, error) {
	noCache, noStore := cacheControl(rc.Request.Header.Peek(fasthttp.HeaderCacheControl))
	if m.cfg.Cache.Enabled && !(noCache && noStore) {
		return p.inferCachedRoute(ctx, m, v, br, tenant, route, cache.Options{NoLookup: noCache, NoStore: noStore})
	}
	out, err := v.lane.Submit(ctx, br)
	return cachedResult{outputs: out.Outputs, status: cacheBypass, batchRows: out.BatchRows, endpoint: out.Endpoint, queueWait: out.QueueWait}, err
}

// setResultHeaders sets X-Batchmesh-Cache, and -Batch-Size and -Upstream
// when something went upstream.
func setResultHeaders(rc *fasthttp.RequestCtx, res *cachedResult) {
	if res.batchRows > 0 {
		rc.Response.Header.Set(HeaderBatchSize, strconv.Itoa(res.batchRows))
		rc.Response.Header.Set(HeaderUpstream, res.endpoint)
	}
	rc.Response.Header.Set(HeaderCache, res.status)
}
