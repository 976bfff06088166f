package upstream

import (
	"bytes"
	"context"

	"github.com/valyala/fasthttp"
)

// hopByHop lists the headers that describe one connection, not the message
// (RFC 9110 §7.6.1), and so are not forwarded either way.
var hopByHop = [...]string{
	fasthttp.HeaderConnection,
	"Keep-Alive",
	fasthttp.HeaderProxyConnection,
	fasthttp.HeaderProxyAuthenticate,
	fasthttp.HeaderProxyAuthorization,
	fasthttp.HeaderTE,
	fasthttp.HeaderTrailer,
	fasthttp.HeaderTransferEncoding,
	fasthttp.HeaderUpgrade,
}

// Forward proxies req to endpoint as it is — method, path and query,
// headers less the hop-by-hop ones, body — and fills resp with the answer,
// whatever its status, less its hop-by-hop headers. The Host header names
// endpoint. To avoid a copy on the pass-through path, Forward edits req in
// place (it removes the hop-by-hop headers and sets Host): the caller must
// not need them afterwards. req and resp belong to the caller, who must not
// use them concurrently; Forward resets resp first, so set any headers of
// your own after it returns. Non-2xx answers are not errors: they are in
// resp. Errors (no answer) are classified as Infer's, and the call ends at
// ctx's deadline as Infer's does.
func (c *Client) Forward(ctx context.Context, endpoint string, req *fasthttp.Request, resp *fasthttp.Response) error {
	if err := ctx.Err(); err != nil {
		return contextError(endpoint, err)
	}
	ep := c.pool(endpoint)
	if conn := req.Header.PeekAll(fasthttp.HeaderConnection); len(conn) > 0 {
		stripHopByHop(&req.Header, cloneAll(conn))
	} else {
		stripHopByHop(&req.Header, nil)
	}
	if uri := req.Header.RequestURI(); len(uri) > 0 && uri[0] != '/' {
		// Absolute form (http://host/path): keep only the path and query.
		req.SetRequestURIBytes(req.URI().RequestURI())
	}
	req.Header.SetHost(endpoint)
	// fasthttp writes a parsed request's Host from its URI, which holds
	// the application's Host, unless told otherwise; and it gives a body
	// without a type one of its own.
	req.UseHostHeader = true
	req.Header.SetNoDefaultContentType(true)
	if err := ep.hc.DoDeadline(req, resp, c.deadline(ctx)); err != nil {
		return transportError(endpoint, err)
	}
	StripResponseHopByHop(&resp.Header)
	return nil
}

// cloneAll copies header values that the header itself is about to change.
func cloneAll(vs [][]byte) [][]byte {
	out := make([][]byte, len(vs))
	for i, v := range vs {
		out[i] = bytes.Clone(v)
	}
	return out
}

// stripHopByHop deletes the hop-by-hop headers of h, including those that
// conn (the Connection header's values) names.
func stripHopByHop(h *fasthttp.RequestHeader, conn [][]byte) {
	for _, v := range conn {
		for tok := range bytes.SplitSeq(v, []byte{','}) {
			if tok = bytes.TrimSpace(tok); len(tok) > 0 {
				h.DelBytes(tok)
			}
		}
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
}

// StripResponseHopByHop deletes the hop-by-hop headers of an answer,
// including those its Connection header names, as Forward does.
func StripResponseHopByHop(h *fasthttp.ResponseHeader) {
	var names [][]byte
	for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
		for tok := range bytes.SplitSeq(v, []byte{','}) {
			if tok = bytes.TrimSpace(tok); len(tok) > 0 && !bytes.EqualFold(tok, []byte("close")) && !bytes.EqualFold(tok, []byte("keep-alive")) {
				names = append(names, bytes.Clone(tok))
			}
		}
	}
	for _, k := range names {
		h.DelBytes(k)
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
}
