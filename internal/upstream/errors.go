package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// ErrConnect matches (with errors.Is) every error of a call that could not
// reach the runtime, or lost its connection before the answer was complete:
// refused, reset, closed, unresolvable, or a dial that ran out of time. The
// caller should take the endpoint out of rotation until a Probe succeeds.
var ErrConnect = errors.New("upstream: cannot connect")

// maxErrorText bounds the runtime's error text quoted in a message.
const maxErrorText = 1024

// statusError turns a runtime's non-200 answer into an *inference.Error
// carrying the runtime's own message.
func statusError(addr string, status int, body []byte) error {
	kind := inference.KindUpstream
	switch {
	case status == fasthttp.StatusNotFound:
		kind = inference.KindNotFound
	case status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable:
		kind = inference.KindUnavailable
	case status >= 400 && status < 500:
		kind = inference.KindInvalid
	}
	return &inference.Error{Kind: kind, Msg: fmt.Sprintf("upstream %s: %d: %s", addr, status, errorText(body))}
}

// errorText returns the message of a v2 error body {"error": "..."}, or the
// body as text when it is not one, cut to maxErrorText bytes.
func errorText(body []byte) string {
	var e struct {
		Error *string `json:"error"`
	}
	text := string(body)
	if json.Unmarshal(body, &e) == nil && e.Error != nil {
		text = *e.Error
	} else if m := codec.OpenAIErrorText(body); m != "" {
		text = m // OpenAI's {"error": {"message": ...}}
	}
	if text == "" {
		return "empty body"
	}
	if len(text) > maxErrorText {
		cut := maxErrorText
		for cut > 0 && !utf8.RuneStart(text[cut]) { // do not split a rune
			cut--
		}
		return text[:cut] + "…"
	}
	return text
}

// transportError classifies an error of fasthttp's Do.
func transportError(addr string, err error) error {
	switch {
	case errors.Is(err, fasthttp.ErrDialTimeout):
		// The call's deadline passed while dialing: the caller's deadline
		// is gone, and the endpoint is not answering.
		return connectError(inference.KindDeadline, addr, err)
	case isTimeout(err):
		return inference.Errorf(inference.KindDeadline, "upstream %s: deadline exceeded: %w", addr, err)
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return inference.Errorf(inference.KindUnavailable, "upstream %s: every connection is busy: %w", addr, err)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return inference.Errorf(inference.KindUpstream, "upstream %s: response body over the limit: %w", addr, err)
	case isConnect(err):
		return connectError(inference.KindUnavailable, addr, err)
	}
	return inference.Errorf(inference.KindUpstream, "upstream %s: %w", addr, err)
}

// connectError is an *inference.Error of kind that also matches ErrConnect
// and the cause.
func connectError(kind inference.Kind, addr string, cause error) error {
	return &inference.Error{
		Kind: kind,
		Msg:  fmt.Sprintf("upstream %s: cannot connect: %v", addr, cause),
		Err:  fmt.Errorf("%w: %w", ErrConnect, cause),
	}
}

// contextError is the error of a call whose ctx ended before it started.
func contextError(addr string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return inference.Errorf(inference.KindDeadline, "upstream %s: %w", addr, err)
	}
	return inference.Errorf(inference.KindUnavailable, "upstream %s: %w", addr, err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// isConnect reports whether err means the connection could not be made or
// broke: any socket error, an unresolvable host, or a connection closed
// before the whole answer arrived.
func isConnect(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &op) || errors.As(err, &dns) ||
		errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// retryStale is fasthttp's RetryIfErr: retry once when a kept-alive
// connection turned out closed by the runtime, before anything was read
// back (io.EOF on the first byte) or while writing the request.
func retryStale(_ *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	return false, attempts == 1 && Stale(err)
}

// Stale reports whether err is how a kept-alive connection that the
// runtime closed while it was idle fails: the request may be sent again
// on a new one (once).
func Stale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
