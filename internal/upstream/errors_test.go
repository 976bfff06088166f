package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/inference"
)

func TestTransportError(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	tests := []struct {
		name        string
		err         error
		wantKind    inference.Kind
		wantConnect bool
	}{
		{name: "refused", err: refused, wantKind: inference.KindUnavailable, wantConnect: true},
		{name: "reset", err: reset, wantKind: inference.KindUnavailable, wantConnect: true},
		{name: "unresolvable", err: &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, wantKind: inference.KindUnavailable, wantConnect: true},
		{name: "closed before answering", err: fasthttp.ErrConnectionClosed, wantKind: inference.KindUnavailable, wantConnect: true},
		{name: "closed mid-body", err: fmt.Errorf("read body: %w", io.ErrUnexpectedEOF), wantKind: inference.KindUnavailable, wantConnect: true},
		{name: "timeout", err: fasthttp.ErrTimeout, wantKind: inference.KindDeadline},
		{name: "dial timeout", err: fasthttp.ErrDialTimeout, wantKind: inference.KindDeadline, wantConnect: true},
		{name: "pool full", err: fasthttp.ErrNoFreeConns, wantKind: inference.KindUnavailable},
		{name: "body too large", err: fasthttp.ErrBodyTooLarge, wantKind: inference.KindUpstream},
		{name: "garbage", err: errors.New("cannot parse response status line"), wantKind: inference.KindUpstream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := transportError("10.0.0.1:8000", tt.err)
			if got := inference.KindOf(err); got != tt.wantKind {
				t.Errorf("kind %d, want %d (%v)", got, tt.wantKind, err)
			}
			if got := errors.Is(err, ErrConnect); got != tt.wantConnect {
				t.Errorf("errors.Is(ErrConnect) = %v, want %v (%v)", got, tt.wantConnect, err)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("%v does not wrap its cause %v", err, tt.err)
			}
			if !strings.HasPrefix(err.Error(), "upstream 10.0.0.1:8000: ") {
				t.Errorf("message %q lacks the prefix", err)
			}
		})
	}
}

func TestRetryStale(t *testing.T) {
	pipe := &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}
	tests := []struct {
		name     string
		attempts int
		err      error
		want     bool
	}{
		{name: "nothing read", attempts: 1, err: io.EOF, want: true},
		{name: "broken pipe", attempts: 1, err: pipe, want: true},
		{name: "second failure", attempts: 2, err: io.EOF, want: false},
		{name: "timeout", attempts: 1, err: fasthttp.ErrTimeout, want: false},
		{name: "body too large", attempts: 1, err: fasthttp.ErrBodyTooLarge, want: false},
	}
	for _, tt := range tests {
		reset, retry := retryStale(nil, tt.attempts, tt.err)
		if retry != tt.want || reset {
			t.Errorf("%s: retry %v, reset timeout %v; want retry %v and never a reset", tt.name, retry, reset, tt.want)
		}
	}
}

func TestContextError(t *testing.T) {
	if k := inference.KindOf(contextError("a:1", context.DeadlineExceeded)); k != inference.KindDeadline {
		t.Errorf("deadline: kind %d", k)
	}
	if k := inference.KindOf(contextError("a:1", context.Canceled)); k != inference.KindUnavailable {
		t.Errorf("cancel: kind %d", k)
	}
}

// FuzzStatusError feeds statusError arbitrary runtime answers: it must not
// panic, must prefix its message, must keep it bounded and valid where the
// body was, and must give every status one fixed kind.
func FuzzStatusError(f *testing.F) {
	f.Add(400, []byte(`{"error":"input \"x\": bad"}`))
	f.Add(500, []byte(`{"error":null}`))
	f.Add(503, []byte(`{"error":42}`))
	f.Add(404, []byte("not json"))
	f.Add(502, []byte{})
	f.Add(500, []byte(strings.Repeat("ü", 600)))
	f.Add(400, []byte(`{"error":"`+strings.Repeat("ü", 600)+`"}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		status = 100 + (status%500+500)%500
		err := statusError("a:1", status, body)
		var ie *inference.Error
		if !errors.As(err, &ie) {
			t.Fatalf("%T is not an *inference.Error", err)
		}
		prefix := "upstream a:1: " + strconv.Itoa(status) + ": "
		if !strings.HasPrefix(ie.Msg, prefix) {
			t.Fatalf("message %q lacks prefix %q", ie.Msg, prefix)
		}
		text := ie.Msg[len(prefix):]
		if len(text) > maxErrorText+len("…") {
			t.Errorf("message of %d bytes from a %d-byte body", len(text), len(body))
		}
		if utf8.Valid(body) && !utf8.ValidString(text) {
			t.Errorf("valid body %q gave invalid message %q", body, text)
		}
		want := inference.KindUpstream
		switch {
		case status == 404:
			want = inference.KindNotFound
		case status == 429 || status == 503:
			want = inference.KindUnavailable
		case status >= 400 && status < 500:
			want = inference.KindInvalid
		}
		if ie.Kind != want {
			t.Errorf("status %d: kind %d, want %d", status, ie.Kind, want)
		}
	})
}
