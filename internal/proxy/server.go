package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// Listener defaults (proxy.Config fields of the same names).
const (
	// DefaultHeaderTimeout bounds the wait for a request's headers, from
	// the connection's first byte (or its opening): a client sending one
	// byte a second is cut off after it.
	DefaultHeaderTimeout = 10 * time.Second
	// DefaultBodyTimeout bounds the read of a request's body, from the end
	// of its headers.
	DefaultBodyTimeout = 5 * time.Minute
	// DefaultIdleTimeout closes a keep-alive connection with no request
	// for this long, without a response.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxConns is the inference listener's connection limit when
	// the file-descriptor limit is not known (see ConnLimit).
	DefaultMaxConns = 1 << 14
	// MaxHeaderBytes is the largest request line and headers accepted; a
	// request with more gets 431.
	MaxHeaderBytes = 64 << 10
	// adminMaxConns and adminMaxBody bound the admin listener.
	adminMaxConns = 256
	adminMaxBody  = 1 << 20
)

// serverName is the Server field of the inference listener's answers that
// have none of their own.
const serverName = "batchmesh"

// ConnLimit returns the connection limit for a file-descriptor limit of
// nofile: half of it, less 64 descriptors for files and listeners, so that
// each accepted connection can have an upstream connection too. It is at
// least 16.
func ConnLimit(nofile uint64) int {
	n := int64(min(nofile, 1<<30)/2) - 64
	return int(max(n, 16))
}

// NewServer returns the fasthttp server for the inference listener: the
// header, body and idle timeouts, the connection limit, 64 KiB of headers,
// the body limit and the budget of body bytes in flight, and JSON errors
// for requests fasthttp itself refuses. Its own errors go to the Logger.
func (p *Proxy) NewServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               p.Guard(p.Handler),
		HeaderReceived:        p.headerReceived,
		ExpectHandler:         p.expect,
		ErrorHandler:          p.transportError,
		Logger:                fasthttpLogger{p.cfg.Logger},
		Name:                  serverName,
		MaxRequestBodySize:    p.cfg.MaxBodyBytes,
		ReadBufferSize:        MaxHeaderBytes,
		ReadTimeout:           p.cfg.HeaderTimeout,
		IdleTimeout:           p.cfg.IdleTimeout,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
		SecureErrorLogMessage: true,
		// A connection keeps its 64 KiB read buffer between requests:
		// releasing it (ReduceMemoryUsage) costs a 1-byte read, one more
		// syscall, on every request, about a tenth of the pass-through
		// path's CPU. The price is 64 KiB per open connection (64 MiB for
		// 1,000 keep-alive connections); the connection limit bounds it.
		ReduceMemoryUsage: false,
		Concurrency:       p.cfg.MaxConns,
	}
}

// NewAdminServer returns the fasthttp server for the admin listener, with
// the inference listener's timeouts and small limits of its own.
func (p *Proxy) NewAdminServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler: p.AdminHandler, Name: "batchmesh-admin",
		ErrorHandler:          p.transportError,
		Logger:                fasthttpLogger{p.cfg.Logger},
		NoDefaultServerHeader: true, CloseOnShutdown: true, SecureErrorLogMessage: true,
		ReadBufferSize: MaxHeaderBytes, ReduceMemoryUsage: true,
		ReadTimeout: p.cfg.HeaderTimeout, IdleTimeout: p.cfg.IdleTimeout,
		MaxRequestBodySize: adminMaxBody, Concurrency: adminMaxConns,
	}
}

// Guard wraps the inference listener's handler: it refuses what the
// headers already condemned (both Content-Length and Transfer-Encoding,
// the body budget spent) and returns the request's share of the budget
// when next returns. NewServer uses it; a handler put in front of the
// proxy's (the transparent listener's router) uses it instead.
func (p *Proxy) Guard(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if err := p.body.release(&ctx.Request.Header); err != nil {
			writeRefusal(ctx, err)
			return
		}
		next(ctx)
	}
}

// headerReceived runs once a request's headers are read: it gives the body
// its own timeout and takes its bytes from the budget. A refused request
// gets a body limit of one byte, so that fasthttp stops reading it; the
// refusal is answered by Guard or transportError.
func (p *Proxy) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	rc := fasthttp.RequestConfig{ReadTimeout: p.cfg.BodyTimeout}
	_ = p.body.release(h) // a reservation the last request of this ctx left
	var err error
	switch n := h.ContentLength(); {
	case n == -1 && hasContentLength(h.RawHeaders()):
		err = inference.Errorf(inference.KindInvalid, "proxy: request has both Content-Length and Transfer-Encoding")
	case n > p.cfg.MaxBodyBytes:
		return rc // fasthttp answers 413
	case n == -1:
		err = p.body.take(h, p.cfg.MaxBodyBytes) // unknown length: the worst case
	case n > 0:
		err = p.body.take(h, n)
	}
	if err != nil {
		p.body.refuse(h, err)
		rc.MaxRequestBodySize = 1
	}
	return rc
}

// expect answers a request with Expect: 100-continue before its body is
// sent: one refused on its headers (over the body limit, both framing
// headers, the budget spent) gets its answer instead of 100 Continue.
func (p *Proxy) expect(ctx *fasthttp.RequestCtx) int {
	if ctx.Request.Header.ContentLength() > p.cfg.MaxBodyBytes {
		writeRefusal(ctx, inference.Errorf(inference.KindTooLarge, "proxy: request body is over the limit of %d bytes", p.cfg.MaxBodyBytes))
		return ctx.Response.StatusCode()
	}
	if err := p.body.refusal(&ctx.Request.Header); err != nil {
		writeRefusal(ctx, err)
		return ctx.Response.StatusCode()
	}
	return fasthttp.StatusContinue
}

// hasContentLength reports whether raw request headers have a
// Content-Length field.
func hasContentLength(raw []byte) bool {
	for line := range bytes.SplitSeq(raw, []byte("\n")) {
		name, _, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Length")) {
			return true
		}
	}
	return false
}

// transportError answers a request fasthttp could not read. A timeout
// closes the connection without a response: a client that sent nothing,
// or sent its headers too slowly, gets no unsolicited error. No response
// repeats what the client sent.
func (p *Proxy) transportError(ctx *fasthttp.RequestCtx, err error) {
	if refused := p.body.release(&ctx.Request.Header); refused != nil {
		writeRefusal(ctx, refused)
		return
	}
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		ctx.SetStatusCode(fasthttp.StatusRequestHeaderFieldsTooLarge)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(fmt.Sprintf(`{"error":"proxy: request headers are over the limit of %d bytes"}`+"\n", MaxHeaderBytes))
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeAdminError(ctx, inference.Errorf(inference.KindTooLarge, "proxy: request body is over the limit of %d bytes", p.cfg.MaxBodyBytes))
	case errors.As(err, &ne) && ne.Timeout():
		p.cfg.Logger.Debug("request read timed out: closing the connection", "remote", ctx.RemoteAddr().String(), "err", err)
		_ = ctx.Conn().Close()
	default:
		p.cfg.Logger.Debug("cannot parse request", "remote", ctx.RemoteAddr().String(), "err", err)
		writeAdminError(ctx, inference.Errorf(inference.KindInvalid, "proxy: cannot parse the request"))
	}
}

// writeRefusal answers a request refused on its headers and closes the
// connection: its body may be partly unread.
func writeRefusal(ctx *fasthttp.RequestCtx, err error) {
	writeAdminError(ctx, err)
	if errors.Is(err, inference.ErrOverloaded) {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	ctx.SetConnectionClose()
}

// bodyBudget is the budget of request body bytes in flight: a request
// takes its Content-Length (the body limit when chunked) when its headers
// arrive and gives it back when it has been answered. Requests are keyed by
// their header, which fasthttp keeps in one place per connection context.
type bodyBudget struct {
	limit int64
	used  atomic.Int64
	held  sync.Map // *fasthttp.RequestHeader → hold
}

type hold struct {
	bytes   int64
	refused error
}

func (b *bodyBudget) take(h *fasthttp.RequestHeader, n int) error {
	if err := b.reserve(n); err != nil {
		return err
	}
	b.held.Store(h, hold{bytes: int64(n)})
	return nil
}

// reserve takes n bytes from the budget, for a request that keeps track of
// them itself (the fast path) and gives them back with unreserve.
func (b *bodyBudget) reserve(n int) error {
	if b.used.Add(int64(n)) > b.limit {
		b.used.Add(-int64(n))
		return inference.Errorf(inference.KindOverloaded,
			"proxy: %d bytes of request bodies are in flight, the budget (-max-body-in-flight); retry later", b.limit)
	}
	return nil
}

func (b *bodyBudget) unreserve(n int) { b.used.Add(-int64(n)) }

func (b *bodyBudget) refuse(h *fasthttp.RequestHeader, err error) {
	b.held.Store(h, hold{refused: err})
}

// release gives h's bytes back and returns its refusal, if any.
func (b *bodyBudget) release(h *fasthttp.RequestHeader) error {
	v, ok := b.held.LoadAndDelete(h)
	if !ok {
		return nil
	}
	hd, _ := v.(hold)
	b.used.Add(-hd.bytes)
	return hd.refused
}

// refusal returns h's refusal, if any, and forgets it; a request that was
// not refused keeps its bytes.
func (b *bodyBudget) refusal(h *fasthttp.RequestHeader) error {
	v, ok := b.held.Load(h)
	if !ok {
		return nil
	}
	if hd, _ := v.(hold); hd.refused != nil {
		b.held.Delete(h)
		return hd.refused
	}
	return nil
}

// inFlight returns the body bytes taken now.
func (b *bodyBudget) inFlight() int64 { return b.used.Load() }

// fasthttpLogger sends fasthttp's own log lines to slog as warnings —
// except a connection's end on a body cut short at its limit (a 413 past
// -max-body, a 429 past the body budget): the client already has its
// answer, and a warning per refused request would let any client flood
// the log, so that one is a debug line.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	level := slog.LevelWarn
	for _, a := range args {
		if err, ok := a.(error); ok && errors.Is(err, fasthttp.ErrBodyTooLarge) {
			level = slog.LevelDebug
		}
	}
	f.l.Log(context.Background(), level, "fasthttp: "+fmt.Sprintf(format, args...))
}
