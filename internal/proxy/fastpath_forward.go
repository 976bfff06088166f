package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

// serveRequest serves the request whose head is in fc.h when the fast
// path takes it. served is false when it does not (nothing was read past
// the head, written or counted), and why says why; keep is false when the
// connection must close after it.
func (fc *fastConn) serveRequest() (served, keep bool, why string) {
	start := time.Now()
	h := &fc.h
	body := int(max(h.contentLength, 0))
	need := h.end + body
	if need > len(fc.buf) || body > fc.p.cfg.MaxBodyBytes {
		return false, false, "a body over the fast path's 16 KiB or the body limit"
	}
	m, v, deadline, ok := fc.route(start)
	if !ok {
		return false, false, "not a pass-through request of a configured model (or one the handler refuses)"
	}
	ep, err := fc.p.pickEndpoint(v)
	if err != nil || fc.p.isGRPC(ep) {
		return false, false, "no healthy HTTP endpoint" // the handler answers
	}
	if body > 0 {
		if fc.p.body.reserve(body) != nil {
			return false, false, "the body budget is spent" // the handler refuses it
		}
		defer fc.p.body.unreserve(body)
	}
	if !fc.readBody(need) {
		return true, false, ""
	}
	fc.p.m.fastServed.Add(1)
	keep = fc.forward(m, ep, deadline, start, need)
	fc.n = copy(fc.buf, fc.buf[need:fc.n])
	return true, keep && !fc.l.drain.Load(), ""
}

// forward passes the request in buf[:reqLen] to ep and relays the answer,
// recording it as the handler's pass-through does.
func (fc *fastConn) forward(m *model, ep string, deadline, start time.Time, reqLen int) bool {
	p := fc.p
	fc.out = fc.appendRequest(fc.out[:0], ep, reqLen)
	err := fc.up.exchange(p.up, ep, start, deadline, fc.out, p.up.MaxResponseBytes())
	end := time.Now()
	fc.up.now = end
	code := fc.up.status()
	if err != nil {
		code = inference.HTTPStatus(err)
		if errors.Is(err, inference.ErrUnavailable) {
			p.health.ReportFailure(ep, err)
		}
	}
	p.health.ReportCall(ep, callFailed(err, code))
	if err != nil {
		p.m.upstream(m.cfg.Name, ep, code, end.Sub(start))
		return fc.replyError(m.cfg.Name, start, err)
	}
	// The upstream call's time is the request's: routing before it takes
	// a microsecond, a clock reading a tenth of that on a VM. As the
	// handler's, the request's time ends before its answer is written.
	p.m.passed(&fc.series, m.cfg.Name, ep, code, end.Sub(start))
	return fc.relay(ep)
}

// appendRequest appends the request in buf[:reqLen] as it goes upstream:
// its request line, its fields less the dropped ones, Host naming ep, and
// its body.
func (fc *fastConn) appendRequest(out []byte, ep string, reqLen int) []byte {
	h := &fc.h
	out = append(out, h.method...)
	out = append(out, ' ')
	out = append(out, h.target...)
	out = append(out, " HTTP/1.1\r\nHost: "...)
	out = append(out, ep...)
	out = append(out, "\r\n"...)
	if !h.userAgent { // as the pooled client names itself
		out = append(out, "User-Agent: batchmesh\r\n"...)
	}
	out = appendFields(out, h)
	out = append(out, "\r\n"...)
	return append(out, fc.buf[h.end:reqLen]...)
}

func appendFields(out []byte, h *wireHead) []byte {
	for i := range h.nf {
		f := &h.fields[i]
		if f.drop {
			continue
		}
		out = append(out, f.name...)
		out = append(out, ": "...)
		out = append(out, f.value...)
		out = append(out, "\r\n"...)
	}
	return out
}

// relay writes the answer that exchange read to the client, streaming a
// body bigger than the buffer, and returns the upstream connection to its
// pool when the answer left it reusable. It reports whether the client
// connection can serve another request.
func (fc *fastConn) relay(ep string) bool {
	u := &fc.up
	if u.parsed {
		return fc.relayParsed(ep)
	}
	h := &u.h
	out := append(fc.out[:0], u.buf[:bytes.Index(u.buf, []byte("\r\n"))+2]...)
	out = appendFields(out, h)
	out = fc.appendOwnFields(out, ep, h)
	out = append(out, "\r\n"...)
	total := h.end + int(h.contentLength)
	if total <= len(u.buf) {
		fc.out = append(out, u.buf[h.end:total]...)
		u.done(h.close || u.n > total) // bytes past the answer: not reusable
		_, err := fc.c.Write(fc.out)
		return err == nil
	}
	// A big body: the head and what is read, then the rest as it comes.
	fc.out = append(out, u.buf[h.end:u.n]...)
	if _, err := fc.c.Write(fc.out); err != nil {
		u.done(true)
		return false
	}
	rest := int64(total - u.n)
	n, err := io.CopyBuffer(writerOnly{fc.c}, io.LimitReader(u.conn, rest), u.buf)
	if err == nil && n < rest {
		err = io.ErrUnexpectedEOF // the runtime closed mid-body: so must we
	}
	u.done(err != nil || h.close)
	return err == nil
}

// relayParsed writes an answer outside the head subset, which fasthttp
// parsed, as the handler's pass-through would.
func (fc *fastConn) relayParsed(ep string) bool {
	resp := fc.up.resp
	resp.Header.SetNoDefaultContentType(true)
	if len(resp.Header.Server()) == 0 {
		resp.Header.SetServer(serverName)
	}
	upstream.StripResponseHopByHop(&resp.Header)
	resp.Header.Set(HeaderUpstream, ep)
	resp.Header.Set(HeaderCache, cacheBypass)
	if len(resp.Header.Peek(fasthttp.HeaderDate)) == 0 {
		resp.Header.SetBytesV(fasthttp.HeaderDate, httpDate())
	}
	if fc.l.drain.Load() {
		resp.SetConnectionClose()
	}
	w := bufio.NewWriter(fc.c)
	err := resp.Write(w)
	if err == nil {
		err = w.Flush()
	}
	resp.Reset()
	return err == nil
}

// appendOwnFields appends the fields the proxy sets on an answer with
// head h, as fasthttp's server does: Date and Server when it has none.
func (fc *fastConn) appendOwnFields(out []byte, ep string, h *wireHead) []byte {
	out = append(out, HeaderUpstream+": "...)
	out = append(out, ep...)
	out = append(out, "\r\n"+HeaderCache+": "+cacheBypass+"\r\n"...)
	if !h.server {
		out = append(out, "Server: "+serverName+"\r\n"...)
	}
	if !h.date {
		out = append(out, "Date: "...)
		out = append(out, httpDate()...)
		out = append(out, "\r\n"...)
	}
	if fc.l.drain.Load() {
		out = append(out, "Connection: close\r\n"...)
	}
	return out
}

// replyError answers the request with err in the handler's error shape and
// counts it.
func (fc *fastConn) replyError(model string, start time.Time, err error) bool {
	code, body := fc.p.failed(model, cacheBypass, start, err)
	out := append(fc.out[:0], "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(code), 10)
	out = append(out, ' ')
	out = append(out, fasthttp.StatusMessage(code)...)
	out = append(out, "\r\nServer: "+serverName+"\r\nContent-Type: application/json\r\nDate: "...)
	out = append(out, httpDate()...)
	out = append(out, "\r\n"...)
	if retryLater(code) {
		out = append(out, "Retry-After: 1\r\n"...)
	}
	if fc.l.drain.Load() {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, "Content-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\n\r\n"...)
	fc.out = append(out, body...)
	_, werr := fc.c.Write(fc.out)
	return werr == nil
}

// fastUpstream is a fast connection's side towards the runtimes: the
// connection of the exchange in progress and the answer's head (or, for
// an answer outside the head subset, fasthttp's parse of all of it).
type fastUpstream struct {
	conn *upstream.Conn
	buf  []byte
	n    int
	h    wireHead
	// parsed: fasthttp read the answer into resp.
	parsed bool
	resp   *fasthttp.Response
	// now is when the answer arrived.
	now time.Time
}

// exchange writes req to ep on a pooled connection and reads the answer:
// its head, and its body when it fits the buffer. A reused connection
// that fails before any answer (the runtime closed it while idle) is
// replaced once, as the pooled client does.
func (u *fastUpstream) exchange(c *upstream.Client, ep string, now, deadline time.Time, req []byte, maxBody int) error {
	if u.buf == nil {
		u.buf = make([]byte, fastBuffer)
	}
	u.h.status, u.parsed = 0, false
	for attempt := 0; ; attempt++ {
		cn, err := c.Take(ep, now, deadline)
		if err != nil {
			return err
		}
		u.conn, u.n = cn, 0
		_ = cn.SetDeadline(deadline)
		if _, err = cn.Write(req); err == nil {
			err = u.read(maxBody)
		}
		if err == nil {
			return nil
		}
		u.done(true)
		if attempt > 0 || !cn.Reused || u.n > 0 || !upstream.Stale(err) {
			return upstream.TransportError(ep, err)
		}
	}
}

// read reads the answer's head, then its body when it fits the buffer; an
// answer outside the head subset fasthttp reads whole.
func (u *fastUpstream) read(maxBody int) error {
	for {
		n, err := u.conn.Read(u.buf[u.n:])
		u.n += n
		if err != nil {
			return err
		}
		v := parseResponseHead(u.buf[:u.n], &u.h)
		if v == wireIncomplete && u.n < len(u.buf) {
			continue
		}
		if v != wireOK {
			return u.readParsed(maxBody)
		}
		if u.h.contentLength > int64(maxBody) {
			return fasthttp.ErrBodyTooLarge
		}
		total := u.h.end + int(u.h.contentLength)
		for u.n < total && total <= len(u.buf) {
			n, err := u.conn.Read(u.buf[u.n:total])
			u.n += n
			if err != nil {
				return err
			}
		}
		return nil
	}
}

// readParsed has fasthttp read the whole answer: one with chunked or
// close-delimited framing, an interim or body-less status, or a head
// outside the subset. Its connection is not reused.
func (u *fastUpstream) readParsed(maxBody int) error {
	if u.resp == nil {
		u.resp = new(fasthttp.Response)
	}
	u.resp.Reset()
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(u.buf[:u.n]), u.conn))
	if err := u.resp.ReadLimitBody(br, maxBody); err != nil {
		return err
	}
	u.parsed = true
	u.done(true)
	return nil
}

// status is the answer's status, once read.
func (u *fastUpstream) status() int {
	if u.parsed {
		return u.resp.StatusCode()
	}
	return u.h.status
}

// done ends the exchange's use of its connection: back to the pool, or
// closed.
func (u *fastUpstream) done(closeIt bool) {
	if u.conn == nil {
		return
	}
	if closeIt {
		_ = u.conn.Close()
	} else {
		u.conn.Release(u.now) // its deadline stays: the next exchange sets its own
	}
	u.conn = nil
}

func (u *fastUpstream) close() { u.done(true) }

// writerOnly hides a connection's ReadFrom, so that io.CopyBuffer uses the
// buffer it is given.
type writerOnly struct{ io.Writer }

// httpDate is the current time as a Date field's value, made at most
// once a second.
func httpDate() []byte {
	now := time.Now().Unix()
	if d := dateCache.Load(); d != nil && d.unix == now {
		return d.text
	}
	d := &cachedDate{unix: now, text: time.Unix(now, 0).UTC().AppendFormat(nil, http.TimeFormat)}
	dateCache.Store(d)
	return d.text
}

type cachedDate struct {
	unix int64
	text []byte
}

var dateCache atomic.Pointer[cachedDate]
