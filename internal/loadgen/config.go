package loadgen

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// Bounds on a run; a Config past them is refused rather than left to run
// away on a shared machine.
const (
	MaxDuration = 10 * time.Minute
	MaxRequests = 10_000_000
	MaxClients  = 10_000
	MaxDistinct = 1_000_000
	MaxRows     = 1 << 20
	MaxCols     = 1 << 24
	// MaxPoolBytes bounds the pre-encoded request bodies held in memory.
	MaxPoolBytes = 1 << 30
	// defaultPoolBytes is what the default Distinct keeps the pool under.
	defaultPoolBytes = 64 << 20
	// HotSet is how many bodies the Repeat share draws from.
	HotSet = 8
)

// Config describes one closed-loop run. The zero value of every field but
// URL and one of Duration or Requests is a documented default. Run copies
// what it needs (Headers included) and keeps nothing after it returns.
type Config struct {
	// URL is the full infer URL, e.g.
	// http://127.0.0.1:15001/v2/models/bert/infer. http and https only.
	URL string
	// Clients is how many closed-loop clients run at once, each with one
	// request in flight (default 1, at most MaxClients).
	Clients int
	// Duration stops the run after this long, and Requests after this many
	// requests in total, whichever comes first. At least one must be set;
	// Duration is at most MaxDuration and Requests at most MaxRequests.
	// A request in flight when Duration ends is waited for and counted.
	Duration time.Duration
	Requests int
	// Rows is the rows per request (default 1). A RowsMax above Rows gives a
	// uniform mix of sizes Rows..RowsMax; zero means Rows.
	Rows    int
	RowsMax int
	// Input is the input tensor's name (default "input").
	Input string
	// Datatype is the v2 datatype of the input (default "FP32"); any of
	// inference.DataTypeNames.
	Datatype string
	// Cols is the elements per row (default 16): the shape is [rows, Cols].
	Cols int
	// Repeat is the share of requests (0 to 1) that send one of HotSet hot
	// bodies instead of the next distinct one, for cache tests. The choice
	// is a deterministic function of the request's sequence number.
	Repeat float64
	// Distinct is how many distinct bodies to pre-encode: by default 1024,
	// or fewer when bodies are so big that 1024 would take over 64 MiB.
	// With Repeat 0, no body repeats within any Distinct consecutive
	// requests, and no row repeats in the whole pool.
	Distinct int
	// Seed makes a different pool of bodies; the same Seed (default 0)
	// gives the same bodies on every run.
	Seed uint64
	// Binary sends the binary tensor extension instead of JSON.
	Binary bool
	// Protocol is the body's API: "v2" (the default) or "openai", which
	// sends OpenAI embeddings requests {"model": Model, "input": [...]},
	// each row one string (the hex of a generated row, so rows are as
	// distinct as v2 rows), asking for base64 vectors as the official
	// clients do. URL is then the embeddings URL, e.g.
	// http://127.0.0.1:15001/v1/embeddings.
	Protocol string
	// Model is the body's model, required with Protocol "openai".
	Model string
	// Headers are extra request headers, e.g. X-Batchmesh-Priority. They are
	// set after Content-Type, so they may replace it.
	Headers map[string]string
	// Timeout bounds each request (default 10s). A request that times out
	// counts as an error with status 0.
	Timeout time.Duration
	// Rate, when above 0, makes the run open-loop: requests are sent at
	// the arrival times of a Poisson process of Rate requests per second
	// (at most MaxRate), whether or not earlier ones were answered, and
	// Clients is the most in flight at once (default 1024); an arrival
	// that finds them all busy is dropped (Result.Dropped). RatePattern
	// changes the rate during the run: see ParseRatePattern. Seed seeds
	// the arrival times too.
	Rate        float64
	RatePattern string
	// OnProgress, when set, is called about once a second from Run's own
	// goroutine with the stats of the interval since the previous call. It
	// should return quickly: the clients keep running meanwhile.
	OnProgress func(Snapshot)
}

// settings is a validated Config with its defaults applied.
type settings struct {
	Config
	dt       inference.DataType
	addr     string // host:port for the TCP client
	tls      bool
	deadline bool // Duration set
	pattern  RatePattern
}

func (c Config) validate() (settings, error) {
	s := settings{Config: c}
	s.Headers = maps.Clone(c.Headers)
	for _, check := range []func() error{s.checkTarget, s.checkBounds, s.checkRate, s.checkShape, s.checkPool, s.checkRequest} {
		if err := check(); err != nil {
			return s, err
		}
	}
	return s, nil
}

// checkTarget checks URL and sets addr and tls from it.
func (s *settings) checkTarget() error {
	if s.URL == "" {
		return errors.New("loadgen: no target URL; give the full infer URL, e.g. http://127.0.0.1:15001/v2/models/NAME/infer")
	}
	u, err := url.Parse(s.URL)
	if err != nil {
		return fmt.Errorf("loadgen: target URL: %w", err)
	}
	switch u.Scheme {
	case "http":
	case "https":
		s.tls = true
	default:
		return fmt.Errorf("loadgen: target URL %q: scheme must be http or https", s.URL)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("loadgen: target URL %q has no host", s.URL)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if s.tls {
			port = "443"
		}
	}
	s.addr = net.JoinHostPort(u.Hostname(), port)
	return nil
}

// checkBounds checks Duration and Requests, which bound the run, and sets
// deadline.
func (s *settings) checkBounds() error {
	if s.Duration < 0 || s.Requests < 0 {
		return errors.New("loadgen: Duration and Requests must not be negative")
	}
	if s.Duration == 0 && s.Requests == 0 {
		return errors.New("loadgen: set Duration or Requests (or both) to bound the run")
	}
	if s.Duration > MaxDuration {
		return fmt.Errorf("loadgen: Duration %v is over the limit of %v", s.Duration, MaxDuration)
	}
	if s.Requests > MaxRequests {
		return fmt.Errorf("loadgen: Requests %d is over the limit of %d", s.Requests, MaxRequests)
	}
	s.deadline = s.Duration > 0
	return nil
}

// checkShape checks and defaults Clients and what the request bodies carry:
// Rows, RowsMax, Cols, Repeat, Input and Datatype, and sets dt.
func (s *settings) checkShape() error {
	if err := defaultInt(&s.Clients, 1, MaxClients, "Clients"); err != nil {
		return err
	}
	if err := defaultInt(&s.Rows, 1, MaxRows, "Rows"); err != nil {
		return err
	}
	if s.RowsMax == 0 {
		s.RowsMax = s.Rows
	}
	if s.RowsMax < s.Rows || s.RowsMax > MaxRows {
		return fmt.Errorf("loadgen: RowsMax %d must be between Rows (%d) and %d", s.RowsMax, s.Rows, MaxRows)
	}
	if err := defaultInt(&s.Cols, 16, MaxCols, "Cols"); err != nil {
		return err
	}
	if !(s.Repeat >= 0 && s.Repeat <= 1) { // also refuses NaN
		return fmt.Errorf("loadgen: Repeat %v must be between 0 and 1", s.Repeat)
	}
	if s.Input == "" {
		s.Input = "input"
	}
	if s.Datatype == "" {
		s.Datatype = "FP32"
	}
	dt, ok := inference.ParseDataType(s.Datatype)
	if !ok {
		return fmt.Errorf("loadgen: unknown datatype %q; allowed: %s", s.Datatype, inference.DataTypeNames)
	}
	s.dt = dt
	return nil
}

// checkPool defaults Distinct and checks that the pool of bodies fits
// MaxPoolBytes. It needs checkShape's settings.
func (s *settings) checkPool() error {
	per := s.bodyBytes()
	if s.Distinct == 0 {
		s.Distinct = int(min(1024, max(1, defaultPoolBytes/per)))
	}
	if s.Distinct < 1 || s.Distinct > MaxDistinct {
		return fmt.Errorf("loadgen: Distinct %d must be between 1 and %d", s.Distinct, MaxDistinct)
	}
	bodies := int64(s.Distinct)
	if s.Repeat > 0 {
		bodies += HotSet
	}
	if per > MaxPoolBytes || bodies*per > MaxPoolBytes {
		return fmt.Errorf("loadgen: %d request bodies of about %d KiB would take over %d MiB; lower Distinct, RowsMax or Cols",
			bodies, per>>10, MaxPoolBytes>>20)
	}
	return nil
}

// checkRequest checks and defaults Timeout and checks Headers.
func (s *settings) checkRequest() error {
	if s.Timeout < 0 {
		return errors.New("loadgen: Timeout must not be negative")
	}
	if s.Timeout == 0 {
		s.Timeout = 10 * time.Second
	}
	switch s.Protocol {
	case "", "v2":
	case "openai":
		if s.Model == "" {
			return errors.New("loadgen: Protocol openai needs Model, the model named in the body")
		}
		if s.Binary {
			return errors.New("loadgen: Protocol openai is JSON only; Binary does not apply")
		}
	default:
		return fmt.Errorf("loadgen: Protocol %q is not one of v2, openai", s.Protocol)
	}
	for k, v := range s.Headers {
		if k == "" || strings.ContainsAny(k, " :\r\n\t") {
			return fmt.Errorf("loadgen: bad header name %q", k)
		}
		if strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("loadgen: header %s: value must not contain a line break", k)
		}
	}
	return nil
}

// defaultInt sets *v to def when zero and checks it is within 1..limit.
func defaultInt(v *int, def, limit int, name string) error {
	if *v == 0 {
		*v = def
	}
	if *v < 1 || *v > limit {
		return fmt.Errorf("loadgen: %s %d must be between 1 and %d", name, *v, limit)
	}
	return nil
}

// bodyBytes estimates the encoded size of a body of the mean row count.
func (s *settings) bodyBytes() int64 {
	var elem int64
	switch {
	case s.dt == inference.Bytes && s.Binary:
		elem = 12 // 4-byte length and 8 letters
	case s.Binary:
		elem = int64(s.dt.Size())
	default: // typical JSON text of one element and its comma
		switch s.dt {
		case inference.FP64:
			elem = 20
		case inference.FP32, inference.Bytes:
			elem = 11
		case inference.FP16:
			elem = 8
		case inference.BF16, inference.Int16, inference.Uint16, inference.Int32, inference.Uint32, inference.Int64, inference.Uint64:
			elem = 6
		default: // BOOL, INT8, UINT8
			elem = 4
		}
	}
	meanRows := (int64(s.Rows) + int64(s.RowsMax)) / 2
	return 100 + meanRows*int64(s.Cols)*elem
}
