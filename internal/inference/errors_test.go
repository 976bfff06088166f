package inference_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
)

var kinds = []struct {
	name     string
	kind     inference.Kind
	sentinel error
	status   int
}{
	{"internal", inference.KindInternal, inference.ErrInternal, http.StatusInternalServerError},
	{"invalid", inference.KindInvalid, inference.ErrInvalid, http.StatusBadRequest},
	{"not found", inference.KindNotFound, inference.ErrNotFound, http.StatusNotFound},
	{"method", inference.KindMethod, inference.ErrMethod, http.StatusMethodNotAllowed},
	{"too large", inference.KindTooLarge, inference.ErrTooLarge, http.StatusRequestEntityTooLarge},
	{"overloaded", inference.KindOverloaded, inference.ErrOverloaded, http.StatusTooManyRequests},
	{"upstream", inference.KindUpstream, inference.ErrUpstream, http.StatusBadGateway},
	{"unavailable", inference.KindUnavailable, inference.ErrUnavailable, http.StatusServiceUnavailable},
	{"deadline", inference.KindDeadline, inference.ErrDeadline, http.StatusGatewayTimeout},
}

func TestErrorKinds(t *testing.T) {
	for _, tt := range kinds {
		t.Run(tt.name, func(t *testing.T) {
			err := inference.Errorf(tt.kind, "stage: %s went wrong", "thing")
			if got := err.Error(); got != "stage: thing went wrong" {
				t.Errorf("Error() = %q", got)
			}
			wrapped := fmt.Errorf("outer: %w", fmt.Errorf("middle: %w", err))
			for _, e := range []error{err, wrapped, tt.sentinel} {
				if got := inference.KindOf(e); got != tt.kind {
					t.Errorf("KindOf(%v) = %v, want %v", e, got, tt.kind)
				}
				if got := inference.HTTPStatus(e); got != tt.status {
					t.Errorf("HTTPStatus(%v) = %d, want %d", e, got, tt.status)
				}
				if !errors.Is(e, tt.sentinel) {
					t.Errorf("errors.Is(%v, its sentinel) = false", e)
				}
				for _, other := range kinds {
					if other.kind != tt.kind && errors.Is(e, other.sentinel) {
						t.Errorf("errors.Is(%v, %v) = true for another kind", e, other.sentinel)
					}
				}
			}
			var ie *inference.Error
			if !errors.As(wrapped, &ie) || ie.Kind != tt.kind {
				t.Errorf("errors.As(wrapped) = %#v, want kind %v", ie, tt.kind)
			}
			if e, ok := tt.sentinel.(*inference.Error); !ok || e.Kind != tt.kind || e.Msg == "" { //nolint:errorlint // the sentinel itself must be an *inference.Error
				t.Errorf("sentinel %#v, want kind %v and a message", tt.sentinel, tt.kind)
			}
		})
	}
}

func TestErrorCause(t *testing.T) {
	err := inference.Errorf(inference.KindUpstream, "upstream: read: %w", io.ErrUnexpectedEOF)
	if got, want := err.Error(), "upstream: read: unexpected EOF"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Error("errors.Is(err, cause) = false")
	}
	if !errors.Is(err, inference.ErrUpstream) {
		t.Error("errors.Is(err, ErrUpstream) = false")
	}
	if got := errors.Unwrap(err); got != io.ErrUnexpectedEOF { //nolint:errorlint // Unwrap must return the cause itself
		t.Errorf("Unwrap = %v, want the cause", got)
	}
	if got := errors.Unwrap(inference.Errorf(inference.KindInvalid, "no cause %d", 1)); got != nil {
		t.Errorf("Unwrap without %%w = %v, want nil", got)
	}

	// Several %w verbs wrap every argument, as fmt.Errorf does.
	two := inference.Errorf(inference.KindInvalid, "codec: %w; %w", io.EOF, io.ErrClosedPipe)
	if !errors.Is(two, io.EOF) || !errors.Is(two, io.ErrClosedPipe) || !errors.Is(two, inference.ErrInvalid) {
		t.Errorf("with two %%w: Is(EOF) %v, Is(ErrClosedPipe) %v, Is(ErrInvalid) %v; want all true",
			errors.Is(two, io.EOF), errors.Is(two, io.ErrClosedPipe), errors.Is(two, inference.ErrInvalid))
	}
	if got := two.Error(); got != "codec: EOF; io: read/write on closed pipe" {
		t.Errorf("Error() = %q", got)
	}

	// An error of one kind caused by another matches both sentinels; its
	// own (outer) kind decides the status.
	inner := inference.Errorf(inference.KindDeadline, "upstream: deadline")
	outer := inference.Errorf(inference.KindUpstream, "proxy: %w", inner)
	if inference.KindOf(outer) != inference.KindUpstream || inference.HTTPStatus(outer) != http.StatusBadGateway {
		t.Errorf("KindOf(outer) = %v, status %d; want upstream, 502", inference.KindOf(outer), inference.HTTPStatus(outer))
	}
	if !errors.Is(outer, inference.ErrDeadline) || !errors.Is(outer, inference.ErrUpstream) {
		t.Error("outer does not match both sentinels")
	}
}

func TestErrorIsOnlySentinels(t *testing.T) {
	err := inference.Errorf(inference.KindInvalid, "x")
	if errors.Is(err, &inference.Error{Kind: inference.KindInvalid, Msg: "invalid input"}) {
		t.Error("errors.Is matched a non-sentinel *Error of the same kind")
	}
	if errors.Is(err, inference.Errorf(inference.KindInvalid, "x")) {
		t.Error("errors.Is matched another error with the same kind and text")
	}
}

func TestErrorForeign(t *testing.T) {
	for _, err := range []error{errors.New("plain"), fmt.Errorf("wrapped: %w", io.EOF)} {
		if inference.KindOf(err) != inference.KindInternal || inference.HTTPStatus(err) != http.StatusInternalServerError {
			t.Errorf("%v: KindOf %v, status %d; want internal, 500", err, inference.KindOf(err), inference.HTTPStatus(err))
		}
		if errors.Is(err, inference.ErrInternal) {
			t.Errorf("%v matches ErrInternal; only *Error values should", err)
		}
	}
	unknown := &inference.Error{Kind: inference.Kind(200), Msg: "from the future"}
	if inference.HTTPStatus(unknown) != http.StatusInternalServerError {
		t.Errorf("unknown kind: status %d, want 500", inference.HTTPStatus(unknown))
	}
	if errors.Is(unknown, inference.ErrInternal) {
		t.Error("an unknown kind matches ErrInternal")
	}
}
