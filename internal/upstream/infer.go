package upstream

import (
	"context"
	"fmt"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// Header is one extra request header to send upstream, such as traceparent.
type Header struct {
	Key, Value string
}

// Reply is what a runtime answered to Infer.
type Reply struct {
	// Response is the decoded answer of a 200. It owns its bytes: binary
	// outputs share one buffer made for this call, JSON outputs own theirs.
	Response inference.Response
	// Status is the HTTP status, or 0 when no answer arrived.
	Status int
	// LoadReport is the raw ORCA endpoint-load-metrics header, "" if absent.
	LoadReport string
	// RetryAfter is the runtime's Retry-After header, "" if absent.
	RetryAfter string
}

// HeaderLoadReport is the ORCA per-response load report header.
const HeaderLoadReport = "endpoint-load-metrics"

// maxPooledBuf bounds the request buffers kept for reuse, so that one huge
// batch does not pin its memory for the life of the process.
const maxPooledBuf = 16 << 20

// Infer sends req as a v2 infer request to endpoint (host:port), to
// /v2/models/{req.Model}[/versions/{req.Version}]/infer, and decodes the
// answer. It sends binary tensors, asking for binary outputs, when Binary
// reports the endpoint speaks the extension, and JSON otherwise; the decoded
// outputs are the same bytes either way. headers are added to the request.
// Infer reads req only during the call and does not modify it.
//
// The call ends at ctx's deadline (Config.Timeout when ctx has none).
// The error is nil exactly when Status is 200 and the body decoded; otherwise
// it is an *inference.Error:
//   - a 404 is KindNotFound, a 429 or 503 KindUnavailable, any other 4xx
//     KindInvalid, any other status KindUpstream; the message is
//     "upstream ADDR: STATUS: " and the runtime's own error text;
//   - a 200 whose body does not decode is KindUpstream;
//   - a runtime that cannot be reached, or closes the connection before
//     answering, is KindUnavailable and matches ErrConnect;
//   - a deadline that passes is KindDeadline (and matches ErrConnect if it
//     passed while dialing).
//
// Reply carries Status and LoadReport whenever an answer arrived, error or
// not.
func (c *Client) Infer(ctx context.Context, endpoint string, req *inference.Request, headers []Header) (Reply, error) {
	if err := ctx.Err(); err != nil {
		return Reply{}, contextError(endpoint, err)
	}
	if req.Model == "" {
		return Reply{}, inference.Errorf(inference.KindInternal, "upstream %s: infer request names no model", endpoint)
	}
	ep := c.pool(endpoint)
	binary := ep.binary.Load()

	bufp := c.getBuf()
	defer c.putBuf(bufp)
	hreq := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(hreq)

	// The path first, through the same buffer; the request copies it.
	buf := appendInferPath((*bufp)[:0], req.Model, req.Version)
	hreq.SetRequestURIBytes(buf)
	hreq.Header.SetMethod(fasthttp.MethodPost)
	hreq.Header.SetHost(endpoint)
	for _, h := range headers {
		hreq.Header.Set(h.Key, h.Value)
	}

	buf, err := c.setBody(hreq, buf, req, binary)
	*bufp = buf // keep the grown buffer for the pool
	if err != nil {
		return Reply{}, fmt.Errorf("upstream %s: encode: %w", endpoint, err)
	}

	hresp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(hresp)
	if err := ep.hc.DoDeadline(hreq, hresp, c.deadline(ctx)); err != nil {
		return Reply{}, transportError(endpoint, err)
	}
	return decodeReply(endpoint, hresp)
}

// setBody encodes req into buf[:0] as the body of hreq, binary or JSON,
// with its content headers, and returns the grown buffer, which hreq's body
// then is. On an error it sets nothing.
func (c *Client) setBody(hreq *fasthttp.Request, buf []byte, req *inference.Request, binary bool) ([]byte, error) {
	var headerLen int
	var err error
	if binary {
		wire := *req
		wire.Parameters = c.binParams
		if len(req.Parameters) > 0 {
			wire.Parameters = make(inference.Parameters, len(req.Parameters)+1)
			for k, v := range req.Parameters {
				wire.Parameters[k] = v
			}
			wire.Parameters[inference.ParamBinaryDataOutput] = true
		}
		buf, headerLen, err = codec.EncodeRequest(buf[:0], &wire, true)
	} else {
		buf, headerLen, err = codec.EncodeRequest(buf[:0], req, false)
	}
	if err != nil {
		return buf, err
	}
	if headerLen != codec.NoHeader {
		hreq.Header.SetContentType("application/octet-stream")
		var n [20]byte
		hreq.Header.SetBytesV(codec.HeaderContentLength, strconv.AppendInt(n[:0], int64(headerLen), 10))
	} else {
		hreq.Header.SetContentType("application/json")
	}
	hreq.SetBodyRaw(buf)
	return buf, nil
}

// decodeReply reads the runtime's answer, as Infer documents.
func decodeReply(endpoint string, hresp *fasthttp.Response) (Reply, error) {
	reply := Reply{Status: hresp.StatusCode()}
	if lr := hresp.Header.Peek(HeaderLoadReport); len(lr) > 0 {
		reply.LoadReport = string(lr)
	}
	if reply.Status != fasthttp.StatusOK {
		reply.RetryAfter = string(hresp.Header.Peek(fasthttp.HeaderRetryAfter))
		return reply, statusError(endpoint, reply.Status, hresp.Body())
	}
	hl, err := codec.ParseHeaderLen(hresp.Header.Peek(codec.HeaderContentLength))
	if err != nil {
		return reply, inference.Errorf(inference.KindUpstream, "upstream %s: bad response: %w", endpoint, err)
	}
	body := hresp.Body()
	if hl != codec.NoHeader {
		// Binary outputs alias the body they are decoded from: decode
		// from one copy the caller owns, not from fasthttp's pooled buffer.
		body = append([]byte(nil), body...)
	}
	if reply.Response, err = codec.DecodeResponse(body, hl); err != nil {
		return reply, inference.Errorf(inference.KindUpstream, "upstream %s: bad response: %w", endpoint, err)
	}
	return reply, nil
}

func (c *Client) getBuf() *[]byte {
	if p, ok := c.bufs.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 0, 4096)
	return &b
}

func (c *Client) putBuf(p *[]byte) {
	if cap(*p) > maxPooledBuf {
		return
	}
	c.bufs.Put(p)
}

// appendInferPath appends /v2/models/{model}[/versions/{version}]/infer,
// escaping each name as a path segment.
func appendInferPath(dst []byte, model, version string) []byte {
	dst = append(dst, "/v2/models/"...)
	dst = appendSegment(dst, model)
	if version != "" {
		dst = append(dst, "/versions/"...)
		dst = appendSegment(dst, version)
	}
	return append(dst, "/infer"...)
}

// appendSegment appends s escaped as one URL path segment (RFC 3986
// unreserved characters and sub-delims pass through).
func appendSegment(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9',
			b == '-', b == '.', b == '_', b == '~', b == '!', b == '$', b == '&', b == '\'',
			b == '(', b == ')', b == '*', b == '+', b == ',', b == ';', b == '=', b == ':', b == '@':
			dst = append(dst, b)
		default:
			dst = append(dst, '%', hex[b>>4], hex[b&15])
		}
	}
	return dst
}
