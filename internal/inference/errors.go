package inference

import (
	"errors"
	"fmt"
	"net/http"
)

// Kind classifies a failure by what the caller should do about it. Each kind
// maps to exactly one HTTP status (see HTTPStatus).
type Kind uint8

// Failure kinds. The zero value, KindInternal, is a bug or an unexpected
// condition.
const (
	KindInternal    Kind = iota // 500: a bug; never the caller's fault
	KindInvalid                 // 400: malformed or invalid input
	KindNotFound                // 404: unknown model, version or route
	KindMethod                  // 405: the route exists, the method does not
	KindTooLarge                // 413: body over the limit
	KindOverloaded              // 429: queue full or load shed
	KindUpstream                // 502: the runtime failed or answered nonsense
	KindUnavailable             // 503: no healthy runtime, not ready, draining
	KindDeadline                // 504: the deadline passed
)

// Sentinel errors, one per kind, for errors.Is. An *Error matches the
// sentinel of its kind.
var (
	ErrInternal    = &Error{Kind: KindInternal, Msg: "internal error"}
	ErrInvalid     = &Error{Kind: KindInvalid, Msg: "invalid input"}
	ErrNotFound    = &Error{Kind: KindNotFound, Msg: "not found"}
	ErrMethod      = &Error{Kind: KindMethod, Msg: "method not allowed"}
	ErrTooLarge    = &Error{Kind: KindTooLarge, Msg: "request too large"}
	ErrOverloaded  = &Error{Kind: KindOverloaded, Msg: "overloaded"}
	ErrUpstream    = &Error{Kind: KindUpstream, Msg: "upstream failed"}
	ErrUnavailable = &Error{Kind: KindUnavailable, Msg: "unavailable"}
	ErrDeadline    = &Error{Kind: KindDeadline, Msg: "deadline exceeded"}
)

// Error is a failure with a kind and a message meant for the caller. It is
// immutable once made.
type Error struct {
	Kind Kind
	Msg  string
	Err  error // the cause, if any; its text is not repeated in Msg
}

// Errorf returns an *Error of the given kind. A %w verb in format wraps its
// argument as the cause, as with fmt.Errorf.
func Errorf(kind Kind, format string, args ...any) error {
	wrapped := fmt.Errorf(format, args...)
	cause := errors.Unwrap(wrapped)
	if _, many := wrapped.(interface{ Unwrap() []error }); many {
		cause = wrapped // several %w: errors.Is and As search them all
	}
	return &Error{Kind: kind, Msg: wrapped.Error(), Err: cause}
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel of e's kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind && t == sentinel(e.Kind)
}

func sentinel(k Kind) *Error {
	switch k {
	case KindInvalid:
		return ErrInvalid
	case KindNotFound:
		return ErrNotFound
	case KindMethod:
		return ErrMethod
	case KindTooLarge:
		return ErrTooLarge
	case KindOverloaded:
		return ErrOverloaded
	case KindUpstream:
		return ErrUpstream
	case KindUnavailable:
		return ErrUnavailable
	case KindDeadline:
		return ErrDeadline
	}
	return ErrInternal
}

// KindOf returns the kind of the first *Error in err's chain, or
// KindInternal when there is none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// HTTPStatus is the one place that maps an error to an HTTP status code.
func HTTPStatus(err error) int {
	switch KindOf(err) {
	case KindInvalid:
		return http.StatusBadRequest
	case KindNotFound:
		return http.StatusNotFound
	case KindMethod:
		return http.StatusMethodNotAllowed
	case KindTooLarge:
		return http.StatusRequestEntityTooLarge
	case KindOverloaded:
		return http.StatusTooManyRequests
	case KindUpstream:
		return http.StatusBadGateway
	case KindUnavailable:
		return http.StatusServiceUnavailable
	case KindDeadline:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
