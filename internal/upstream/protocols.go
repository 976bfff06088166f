package upstream

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// Embed sends req — one codec.EmbedInputText or codec.EmbedInputTokens
// tensor of shape [n], and maybe the codec.ParamDimensions parameter — to
// endpoint as an OpenAI embeddings call (POST /v1/embeddings, model
// req.Model, encoding_format float) and decodes the answer into two
// outputs: codec.EmbedOutput, FP32 [n, dim] in input order, and
// codec.EmbedOutputTokens, INT64 [n], the runtime's prompt_tokens total
// apportioned over the rows (see Apportion). Errors are classified as for
// Infer; an answer with another number of vectors is KindUpstream.
func (c *Client) Embed(ctx context.Context, endpoint string, req *inference.Request, headers []Header) (Reply, error) {
	if len(req.Inputs) != 1 {
		return Reply{}, inference.Errorf(inference.KindInternal, "upstream %s: an embeddings batch has %d inputs, want 1", endpoint, len(req.Inputs))
	}
	in := &req.Inputs[0]
	dims, _ := req.Parameters.Int(codec.ParamDimensions)
	return c.call(ctx, endpoint, "/v1/embeddings", headers, func(dst []byte) ([]byte, error) {
		return codec.AppendEmbeddingsRequest(dst, req.Model, in, int(dims))
	}, func(body []byte) ([]inference.Tensor, error) {
		r, err := codec.DecodeEmbeddingsResponse(body)
		if err != nil {
			return nil, err
		}
		rows, err := codec.BytesElements(in.Data)
		if err != nil {
			return nil, err
		}
		if got := int(r.Embedding.Shape[0]); got != len(rows) {
			return nil, fmt.Errorf("%d vectors for %d inputs", got, len(rows))
		}
		weights := make([]int64, len(rows))
		for i, row := range rows {
			weights[i] = RowWeight(in.Name, row)
		}
		shares := Apportion(r.PromptTokens, weights)
		tokens := make([]byte, 0, 8*len(shares))
		for _, s := range shares {
			tokens = binary.LittleEndian.AppendUint64(tokens, uint64(s))
		}
		return []inference.Tensor{r.Embedding, {
			Name: codec.EmbedOutputTokens, DataType: inference.Int64, Shape: []int64{int64(len(rows))}, Data: tokens,
		}}, nil
	})
}

// RowWeight is a row's share of a batch's prompt tokens before scaling: its
// token ids, or one per 4 bytes of text, rounded up.
func RowWeight(input string, row []byte) int64 {
	if input == codec.EmbedInputTokens {
		return int64(len(row) / 4)
	}
	return int64(max(1, (len(row)+3)/4))
}

// Apportion splits total over rows in proportion to weights by the largest
// remainder method: the shares sum to total, and when total equals the sum
// of the weights each row gets exactly its weight. A total of 0 or less
// gives each row its weight (the runtime reported no usage).
func Apportion(total int64, weights []int64) []int64 {
	out := make([]int64, len(weights))
	var sum int64
	for _, w := range weights {
		sum += w
	}
	if total <= 0 || sum <= 0 {
		copy(out, weights)
		return out
	}
	type rem struct {
		i int
		r int64
	}
	rems := make([]rem, len(weights))
	var given int64
	for i, w := range weights {
		q := total * w // rows and tokens are far below overflow
		out[i] = q / sum
		given += out[i]
		rems[i] = rem{i, q % sum}
	}
	for left := total - given; left > 0; left-- {
		best := -1
		for k := range rems {
			if rems[k].r >= 0 && (best < 0 || rems[k].r > rems[best].r) {
				best = k
			}
		}
		out[rems[best].i]++
		rems[best].r = -1
	}
	return out
}

// Predict sends req's inputs to endpoint as a TensorFlow Serving predict
// call in the columnar format (POST /v1/models/{req.Model}[/versions/
// {req.Version}]:predict) and decodes the runtime's outputs (one named
// codec.TFUnnamed when it names none). Errors are classified as for Infer.
func (c *Client) Predict(ctx context.Context, endpoint string, req *inference.Request, headers []Header) (Reply, error) {
	path := appendSegment([]byte("/v1/models/"), req.Model)
	if req.Version != "" {
		path = appendSegment(append(path, "/versions/"...), req.Version)
	}
	path = append(path, ":predict"...)
	return c.call(ctx, endpoint, string(path), headers, func(dst []byte) ([]byte, error) {
		return codec.AppendPredictRequest(dst, req.Inputs)
	}, codec.DecodePredictResponse)
}

// call POSTs the JSON body that encode appends to endpoint's path and
// decodes a 200's body with decode, classifying failures as Infer does.
func (c *Client) call(ctx context.Context, endpoint, path string, headers []Header,
	encode func([]byte) ([]byte, error), decode func([]byte) ([]inference.Tensor, error)) (Reply, error) {
	if err := ctx.Err(); err != nil {
		return Reply{}, contextError(endpoint, err)
	}
	ep := c.pool(endpoint)
	bufp := c.getBuf()
	defer c.putBuf(bufp)
	hreq := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(hreq)
	hreq.SetRequestURI(path)
	hreq.Header.SetMethod(fasthttp.MethodPost)
	hreq.Header.SetHost(endpoint)
	hreq.Header.SetContentType("application/json")
	for _, h := range headers {
		hreq.Header.Set(h.Key, h.Value)
	}
	buf, err := encode((*bufp)[:0])
	*bufp = buf
	if err != nil {
		return Reply{}, inference.Errorf(inference.KindInternal, "upstream %s: encode: %w", endpoint, err)
	}
	hreq.SetBodyRaw(buf)
	hresp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(hresp)
	if err := ep.hc.DoDeadline(hreq, hresp, c.deadline(ctx)); err != nil {
		return Reply{}, transportError(endpoint, err)
	}
	reply := Reply{Status: hresp.StatusCode()}
	if lr := hresp.Header.Peek(HeaderLoadReport); len(lr) > 0 {
		reply.LoadReport = string(lr)
	}
	if ra := hresp.Header.Peek("Retry-After"); len(ra) > 0 {
		reply.RetryAfter = string(ra)
	}
	if reply.Status != fasthttp.StatusOK {
		return reply, statusError(endpoint, reply.Status, hresp.Body())
	}
	outs, err := decode(hresp.Body()) // decoders copy what they keep
	if err != nil {
		return reply, inference.Errorf(inference.KindUpstream, "upstream %s: bad response: %w", endpoint, err)
	}
	reply.Response = inference.Response{ModelName: "", Outputs: outs}
	return reply, nil
}
