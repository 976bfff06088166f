package proxy

import (
	"bytes"
)

// The pass-through fast path (fastpath.go) reads HTTP/1.1 heads itself. It
// accepts a strict subset of the protocol — the shape every common client
// and runtime sends — and leaves everything else, valid or not, to
// fasthttp: a head it does not accept hands the connection over. So this
// parser never has to answer bad input; it only has to be right about what
// it accepts.

// maxWireFields is the most header fields a head on the fast path has.
const maxWireFields = 64

// wireVerdict is the outcome of parsing a head.
type wireVerdict int

const (
	// wireIncomplete: the buffer does not hold the whole head yet.
	wireIncomplete wireVerdict = iota
	// wireOK: a head of the subset; wireHead describes it.
	wireOK
	// wireOther: a head outside the subset (or malformed): not for the
	// fast path.
	wireOther
)

// wireField is one header field of a head: slices of the buffer.
type wireField struct {
	name, value []byte
	// drop: not forwarded (hop-by-hop, Host, or a header the proxy sets).
	drop bool
}

// wireHead is a parsed request or response head. Its slices point into
// the buffer it was parsed from.
type wireHead struct {
	wireInfo
	fields [maxWireFields]wireField // fields[:nf] are the head's
}

// wireInfo is a head less its fields: what a parse resets (the fields are
// overwritten as they are read; clearing all of them on every parse costs
// more than the parse).
type wireInfo struct {
	method, target []byte // request
	status         int    // response
	// contentLength is the body's length; -1 when there is no
	// Content-Length field.
	contentLength int64
	// timeoutMs is X-Batchmesh-Timeout-Ms, host the Host (request).
	timeoutMs, host []byte
	// close: Connection: close (response).
	close bool
	// date, server, userAgent: the head has a Date, Server or User-Agent
	// field.
	date, server, userAgent bool
	nf                      int
	// end is the head's length, its final CRLF CRLF included.
	end int
}

var crlfcrlf = []byte("\r\n\r\n")

// parseRequestHead parses the request head at the start of b. The subset:
// a GET or POST request line in origin form (valid %-escapes) with
// HTTP/1.1, at most maxWireFields fields of token names and visible
// values, each line ending in CRLF; at most one Content-Length of digits, required on POST; no
// Transfer-Encoding, Expect or Upgrade; Connection only "keep-alive";
// exactly one Host (HTTP/1.1 requires it).
func parseRequestHead(b []byte, h *wireHead) wireVerdict {
	line, rest, ok := h.start(b)
	if !ok {
		return wireIncomplete
	}
	method, line, ok := cutSP(line)
	if !ok || !(bytes.Equal(method, []byte("GET")) || bytes.Equal(method, []byte("POST"))) {
		return wireOther
	}
	target, proto, ok := cutSP(line)
	if !ok || len(target) == 0 || target[0] != '/' || !visible(target) || !escapesValid(target) || !bytes.Equal(proto, []byte("HTTP/1.1")) {
		return wireOther
	}
	h.method, h.target = method, target
	host := false
	ok = h.parseFields(rest, func(kind int, f *wireField) bool {
		switch kind {
		case kindConnection:
			f.drop = true
			return bytes.EqualFold(f.value, []byte("keep-alive"))
		case kindHost:
			if host || len(f.value) == 0 {
				return false
			}
			host, f.drop, h.host = true, true, f.value
		case kindTimeout:
			h.timeoutMs = f.value
		case kindUserAgent:
			h.userAgent = true
		}
		return true
	})
	if !ok || !host || (h.contentLength < 0 && method[0] == 'P') {
		return wireOther
	}
	return wireOK
}

// parseResponseHead parses the response head at the start of b. The
// subset: HTTP/1.1, a three-digit status of 200 or more but 204 and 304,
// exactly one Content-Length of digits, no Transfer-Encoding or Upgrade,
// Connection only "close" or "keep-alive", fields as for requests.
func parseResponseHead(b []byte, h *wireHead) wireVerdict {
	line, rest, ok := h.start(b)
	if !ok {
		return wireIncomplete
	}
	proto, line, ok := cutSP(line)
	if !ok || !bytes.Equal(proto, []byte("HTTP/1.1")) || len(line) < 3 || (len(line) > 3 && line[3] != ' ') {
		return wireOther
	}
	for _, c := range line[:3] {
		if c < '0' || c > '9' {
			return wireOther
		}
		h.status = h.status*10 + int(c-'0')
	}
	if h.status < 200 || h.status == 204 || h.status == 304 || !printable(line[3:]) {
		return wireOther
	}
	ok = h.parseFields(rest, func(kind int, f *wireField) bool {
		switch kind {
		case kindConnection:
			f.drop = true
			switch {
			case bytes.EqualFold(f.value, []byte("close")):
				h.close = true
			case !bytes.EqualFold(f.value, []byte("keep-alive")):
				return false
			}
		case kindOwn:
			f.drop = true
		case kindDate:
			h.date = true
		case kindServer:
			h.server = true
		}
		return true
	})
	if !ok || h.contentLength < 0 {
		return wireOther
	}
	return wireOK
}

// start finds the head at the start of b and resets h for it: ok is
// false while the head is incomplete; line is its first line, rest its
// field lines (each with its CRLF).
func (h *wireHead) start(b []byte) (line, rest []byte, ok bool) {
	end := bytes.Index(b, crlfcrlf)
	if end < 0 {
		return nil, nil, false
	}
	h.wireInfo = wireInfo{contentLength: -1, end: end + 4}
	line, rest = cutCRLF(b[:end+2])
	return line, rest, true
}

// parseFields parses the header lines in rest into h: Content-Length (at most
// one, digits), fields outside the subset, hop-by-hop fields (dropped);
// each decides on the other kinds, and returns false to refuse the head.
func (h *wireHead) parseFields(rest []byte, each func(kind int, f *wireField) bool) bool {
	for len(rest) > 0 {
		var line []byte
		line, rest = cutCRLF(rest)
		f, ok := h.field(line)
		if !ok {
			return false
		}
		switch k := fieldKind(f.name); k {
		case kindContentLength:
			if h.contentLength >= 0 || !h.setLength(f.value) {
				return false
			}
		case kindRefused:
			return false
		case kindHop:
			f.drop = true
		default:
			if !each(k, f) {
				return false
			}
		}
	}
	return true
}

// field parses one header line into the next field of h.
func (h *wireHead) field(line []byte) (*wireField, bool) {
	if h.nf == maxWireFields {
		return nil, false
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !token(line[:colon]) {
		return nil, false
	}
	value := trimOWS(line[colon+1:])
	if !printable(value) {
		return nil, false
	}
	f := &h.fields[h.nf]
	*f = wireField{name: line[:colon], value: value}
	h.nf++
	return f, true
}

// setLength sets the content length from a Content-Length value.
func (h *wireHead) setLength(v []byte) bool {
	if len(v) == 0 || len(v) > 15 {
		return false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int64(c-'0')
	}
	h.contentLength = n
	return true
}

// Field kinds that the fast path treats specially.
const (
	kindOther = iota
	kindContentLength
	kindConnection
	kindHost
	kindTimeout
	kindDate
	kindServer
	kindUserAgent
	kindHop     // hop-by-hop: dropped
	kindOwn     // set by the proxy on the response: dropped
	kindRefused // not in the subset
)

// fieldKind classifies a field name, case-insensitively.
func fieldKind(name []byte) int {
	eq := func(s string) bool { return bytes.EqualFold(name, []byte(s)) }
	switch len(name) {
	case 2:
		if eq("TE") {
			return kindHop
		}
	case 4:
		switch {
		case eq("Host"):
			return kindHost
		case eq("Date"):
			return kindDate
		}
	case 6:
		switch {
		case eq("Expect"):
			return kindRefused
		case eq("Server"):
			return kindServer
		}
	case 7:
		switch {
		case eq("Upgrade"):
			return kindRefused
		case eq("Trailer"):
			return kindHop
		}
	case 10:
		switch {
		case eq("Connection"):
			return kindConnection
		case eq("Keep-Alive"):
			return kindHop
		case eq("User-Agent"):
			return kindUserAgent
		}
	case 14:
		if eq("Content-Length") {
			return kindContentLength
		}
	case 16:
		if eq("Proxy-Connection") {
			return kindHop
		}
	case 17:
		switch {
		case eq("Transfer-Encoding"):
			return kindRefused
		case eq(HeaderCache):
			return kindOwn
		}
	case 18:
		if eq("Proxy-Authenticate") {
			return kindHop
		}
	case 19:
		if eq("Proxy-Authorization") {
			return kindHop
		}
	case 20:
		if eq(HeaderUpstream) {
			return kindOwn
		}
	case 22:
		if eq(HeaderTimeoutMs) {
			return kindTimeout
		}
	}
	return kindOther
}

// cutCRLF cuts b after its first CRLF; b must end in one. A line with a
// bare CR or LF keeps it (and fails the checks that follow).
func cutCRLF(b []byte) (line, rest []byte) {
	i := bytes.Index(b, []byte("\r\n"))
	return b[:i], b[i+2:]
}

// cutSP cuts b at its first space.
func cutSP(b []byte) (before, after []byte, ok bool) {
	return bytes.Cut(b, []byte(" "))
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// token reports whether b is an RFC 9110 token.
func token(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || !tchar[c] {
			return false
		}
	}
	return true
}

var tchar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// visible reports whether b is all visible ASCII (no spaces or controls).
func visible(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// escapesValid reports whether every % in b starts a %XX escape.
func escapesValid(b []byte) bool {
	for i := bytes.IndexByte(b, '%'); i >= 0; i = bytes.IndexByte(b, '%') {
		if i+2 >= len(b) || !hex(b[i+1]) || !hex(b[i+2]) {
			return false
		}
		b = b[i+3:]
	}
	return true
}

func hex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// printable reports whether b is a field value of visible ASCII, spaces
// and tabs (no controls, no bytes over 0x7e).
func printable(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}
