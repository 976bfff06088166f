package loadgen

// The tests run loadgen against a fake v2 upstream on loopback: loadgen only
// needs an HTTP endpoint, and the fake counts exactly what it received, so
// each Result can be checked against the server's own tally. Every run is
// bounded by Requests, not by time, so that nothing depends on timing.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// fakeUpstream is a v2-like endpoint that decodes every body with codec,
// answers every rejectEvery-th request with 429 and the rest with 200,
// X-Batchmesh-Batch-Size: 4 and X-Batchmesh-Cache: miss, and records what
// it saw.
type fakeUpstream struct {
	rejectEvery int
	want        inference.DataType
	onRequest   func(n int) // called with the request's arrival number

	mu       sync.Mutex
	requests int64
	okRows   int64
	status   map[int]int64
	bodies   map[string]int64 // body → times seen
	rows     map[string]int64 // row bytes → times seen
	problems []string
}

func newFake(t *testing.T, f *fakeUpstream) string {
	t.Helper()
	f.status = map[int]int64{}
	f.bodies = map[string]int64{}
	f.rows = map[string]int64{}
	srv := httptest.NewServer(f)
	t.Cleanup(func() {
		srv.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, p := range f.problems {
			t.Error("fake upstream:", p)
		}
	})
	return srv.URL + "/v2/models/m/infer"
}

func (f *fakeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	n := int(f.requests)
	if f.onRequest != nil {
		f.onRequest(n)
	}
	status, rows := f.check(r, body, err)
	f.status[status]++
	switch status {
	case http.StatusOK:
		f.okRows += int64(rows)
		w.Header().Set("X-Batchmesh-Batch-Size", "4")
		w.Header().Set("X-Batchmesh-Cache", "miss")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"model_name":"m","outputs":[]}`)
		return
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"error":"status %d"}`, status)
}

// check decodes the request; it returns the status to answer with and the
// request's rows.
func (f *fakeUpstream) check(r *http.Request, body []byte, err error) (int, int) {
	if err != nil || r.Method != http.MethodPost || r.URL.Path != "/v2/models/m/infer" {
		f.problems = append(f.problems, fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, err))
		return http.StatusBadRequest, 0
	}
	hl, err := codec.ParseHeaderLen([]byte(r.Header.Get(codec.HeaderContentLength)))
	var req inference.Request
	if err == nil {
		req, err = codec.DecodeRequest(body, hl)
	}
	var rows int
	if err == nil {
		rows, err = req.Rows()
	}
	if err == nil {
		in := &req.Inputs[0]
		want := f.want
		if want == inference.Invalid {
			want = inference.FP32
		}
		switch {
		case len(req.Inputs) != 1 || in.Name != "input":
			err = fmt.Errorf("want one input named input, got %d, first %q", len(req.Inputs), in.Name)
		case in.DataType != want:
			err = fmt.Errorf("datatype %s, want %s", in.DataType, want)
		case len(in.Shape) != 2:
			err = fmt.Errorf("shape %v, want [rows, cols]", in.Shape)
		default:
			err = in.Validate()
		}
	}
	if err != nil {
		f.problems = append(f.problems, fmt.Sprintf("bad body %.80q: %v", body, err))
		return http.StatusBadRequest, 0
	}
	f.bodies[string(body)]++
	in := &req.Inputs[0]
	off := in.RowOffsets(nil)
	for i := range rows {
		f.rows[string(in.Data[off[i]:off[i+1]])]++
	}
	if f.rejectEvery > 0 && int(f.requests)%f.rejectEvery == 0 {
		return http.StatusTooManyRequests, rows
	}
	return http.StatusOK, rows
}

func mustRun(t *testing.T, cfg Config) Result {
	t.Helper()
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func TestResultMatchesServer(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "json one row", cfg: Config{Clients: 8, Requests: 300}},
		{name: "json mixed rows", cfg: Config{Clients: 8, Requests: 301, Rows: 1, RowsMax: 5}},
		{name: "binary mixed rows", cfg: Config{Clients: 3, Requests: 250, Rows: 2, RowsMax: 9, Cols: 7, Binary: true}},
		{name: "one client", cfg: Config{Requests: 50, Rows: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeUpstream{rejectEvery: 7}
			cfg := tt.cfg
			cfg.URL = newFake(t, f)
			res := mustRun(t, cfg)

			f.mu.Lock()
			defer f.mu.Unlock()
			if res.Requests != f.requests || res.Requests != int64(cfg.Requests) {
				t.Errorf("Requests = %d, server saw %d, asked for %d", res.Requests, f.requests, cfg.Requests)
			}
			if res.Rows != f.okRows {
				t.Errorf("Rows = %d, server answered %d rows with 200", res.Rows, f.okRows)
			}
			if want := f.requests / 7; res.Errors != want || f.status[429] != want {
				t.Errorf("Errors = %d, server sent %d 429s, want %d", res.Errors, f.status[429], want)
			}
			if len(res.ByStatus) != len(f.status) {
				t.Errorf("ByStatus = %v, server: %v", res.ByStatus, f.status)
			}
			for s, n := range f.status {
				if res.ByStatus[s] != n {
					t.Errorf("ByStatus[%d] = %d, server sent %d", s, res.ByStatus[s], n)
				}
			}
			if res.MeanBatchRows != 4 {
				t.Errorf("MeanBatchRows = %v, want 4", res.MeanBatchRows)
			}
			if got, want := res.CacheResults["miss"], f.status[200]; got != want || len(res.CacheResults) != 1 {
				t.Errorf("CacheResults = %v, want miss=%d", res.CacheResults, want)
			}
			if !strings.HasPrefix(res.FirstError, "HTTP 429: ") {
				t.Errorf("FirstError = %q, want an HTTP 429", res.FirstError)
			}
			if res.Elapsed <= 0 || res.RowsPerSec <= 0 || res.ReqPerSec <= 0 {
				t.Errorf("Elapsed %v, RowsPerSec %v, ReqPerSec %v; want all > 0", res.Elapsed, res.RowsPerSec, res.ReqPerSec)
			}
			if res.P50 <= 0 || res.P50 > res.P90 || res.P90 > res.P99 || res.P99 > res.Max {
				t.Errorf("latencies not ordered: p50 %v p90 %v p99 %v max %v", res.P50, res.P90, res.P99, res.Max)
			}
			// Row sizes go round Rows..RowsMax.
			rowsMax := max(cfg.RowsMax, cfg.Rows, 1)
			sizes := map[int64]bool{}
			for b := range f.bodies {
				hl := codec.NoHeader
				if cfg.Binary {
					hl = strings.Index(b, "}]}") + 3
				}
				req, err := codec.DecodeRequest([]byte(b), hl)
				if err != nil {
					t.Fatal(err)
				}
				sizes[req.Inputs[0].Shape[0]] = true
			}
			for n := max(cfg.Rows, 1); n <= rowsMax; n++ {
				if !sizes[int64(n)] {
					t.Errorf("no request of %d rows; sizes seen: %v", n, sizes)
				}
			}
		})
	}
}

func TestRequestsBoundIsExact(t *testing.T) {
	for _, tt := range []struct{ clients, requests int }{
		{clients: 16, requests: 1},
		{clients: 16, requests: 7},
		{clients: 5, requests: 101},
		{clients: 1, requests: 3},
	} {
		t.Run(fmt.Sprintf("%d clients %d requests", tt.clients, tt.requests), func(t *testing.T) {
			f := &fakeUpstream{}
			res := mustRun(t, Config{URL: newFake(t, f), Clients: tt.clients, Requests: tt.requests})
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.requests != int64(tt.requests) || res.Requests != int64(tt.requests) {
				t.Errorf("server saw %d requests, Result has %d, want %d", f.requests, res.Requests, tt.requests)
			}
		})
	}
}

func TestRepeatAllHot(t *testing.T) {
	f := &fakeUpstream{}
	res := mustRun(t, Config{URL: newFake(t, f), Clients: 4, Requests: 400, Repeat: 1, Rows: 1, RowsMax: 3})
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) > HotSet {
		t.Errorf("Repeat 1 sent %d distinct bodies, want at most %d", len(f.bodies), HotSet)
	}
	if len(f.bodies) < HotSet/2 {
		t.Errorf("Repeat 1 sent only %d distinct bodies of the hot set of %d", len(f.bodies), HotSet)
	}
	if res.Requests != 400 || res.Errors != 0 {
		t.Errorf("Requests %d, Errors %d; want 400, 0", res.Requests, res.Errors)
	}
}

func TestRepeatNoneHasNoDuplicates(t *testing.T) {
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			const distinct = 64
			f := &fakeUpstream{}
			mustRun(t, Config{URL: newFake(t, f), Clients: 6, Requests: 2 * distinct, Distinct: distinct, Rows: 1, RowsMax: 4, Binary: binary})
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.bodies) != distinct {
				t.Errorf("server saw %d distinct bodies in %d requests, want %d", len(f.bodies), 2*distinct, distinct)
			}
			for b, n := range f.bodies {
				if n != 2 {
					t.Errorf("body %.60q seen %d times in two rounds of the pool, want 2", b, n)
				}
			}
			for r, n := range f.rows {
				if n != 2 {
					t.Errorf("row %x seen %d times, want 2 (once per round)", r, n)
				}
			}
		})
	}
}

func TestRepeatShare(t *testing.T) {
	const requests = 2000
	f := &fakeUpstream{}
	mustRun(t, Config{URL: newFake(t, f), Clients: 4, Requests: requests, Distinct: requests, Repeat: 0.25})
	f.mu.Lock()
	defer f.mu.Unlock()
	// Cold bodies never repeat within Distinct requests, so a body seen
	// twice is a hot one.
	var hot, hotBodies int64
	for _, n := range f.bodies {
		if n > 1 {
			hot += n
			hotBodies++
		}
	}
	if share := float64(hot) / requests; math.Abs(share-0.25) > 0.04 {
		t.Errorf("hot share %.3f, want 0.25 ± 0.04", share)
	}
	if hotBodies != HotSet {
		t.Errorf("%d hot bodies, want %d", hotBodies, HotSet)
	}
}

func TestDatatypes(t *testing.T) {
	for dt := inference.Bool; dt <= inference.Bytes; dt++ {
		for _, binary := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s binary=%v", dt, binary), func(t *testing.T) {
				f := &fakeUpstream{want: dt}
				res := mustRun(t, Config{URL: newFake(t, f), Clients: 2, Requests: 40, Distinct: 20,
					Rows: 1, RowsMax: 3, Cols: 8, Datatype: dt.String(), Binary: binary})
				if res.Errors != 0 || res.Requests != 40 {
					t.Errorf("Requests %d, Errors %d (%s); want 40, 0", res.Requests, res.Errors, res.FirstError)
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				if len(f.bodies) != 20 {
					t.Errorf("%d distinct bodies, want 20", len(f.bodies))
				}
			})
		}
	}
}

func TestHeadersAreSent(t *testing.T) {
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r.Header.Clone():
		default:
		}
	}))
	defer srv.Close()
	mustRun(t, Config{URL: srv.URL + "/v2/models/m/infer", Requests: 1, Binary: true,
		Headers: map[string]string{"X-Batchmesh-Priority": "high"}})
	h := <-got
	if h.Get("X-Batchmesh-Priority") != "high" {
		t.Errorf("X-Batchmesh-Priority = %q, want high", h.Get("X-Batchmesh-Priority"))
	}
	if h.Get("Content-Type") != "application/octet-stream" || h.Get(codec.HeaderContentLength) == "" {
		t.Errorf("binary request headers: %v", h)
	}
}

func TestBadConfig(t *testing.T) {
	f := &fakeUpstream{}
	url := newFake(t, f)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no URL", cfg: Config{Requests: 1}, want: "no target URL"},
		{name: "bad scheme", cfg: Config{URL: "ftp://x/", Requests: 1}, want: "scheme"},
		{name: "no host", cfg: Config{URL: "http:///v2", Requests: 1}, want: "no host"},
		{name: "unbounded", cfg: Config{URL: url}, want: "set Duration or Requests"},
		{name: "negative requests", cfg: Config{URL: url, Requests: -1}, want: "negative"},
		{name: "too long", cfg: Config{URL: url, Duration: 11 * time.Minute}, want: "over the limit"},
		{name: "too many", cfg: Config{URL: url, Requests: MaxRequests + 1}, want: "over the limit"},
		{name: "negative clients", cfg: Config{URL: url, Requests: 1, Clients: -1}, want: "Clients"},
		{name: "too many clients", cfg: Config{URL: url, Requests: 1, Clients: MaxClients + 1}, want: "Clients"},
		{name: "rows max below rows", cfg: Config{URL: url, Requests: 1, Rows: 4, RowsMax: 2}, want: "RowsMax"},
		{name: "too many rows", cfg: Config{URL: url, Requests: 1, Rows: MaxRows + 1}, want: "Rows"},
		{name: "negative distinct", cfg: Config{URL: url, Requests: 1, Distinct: -1}, want: "Distinct"},
		{name: "huge body", cfg: Config{URL: url, Requests: 1, Rows: MaxRows, Cols: MaxCols}, want: "MiB"},
		{name: "negative cols", cfg: Config{URL: url, Requests: 1, Cols: -3}, want: "Cols"},
		{name: "repeat over 1", cfg: Config{URL: url, Requests: 1, Repeat: 1.5}, want: "Repeat"},
		{name: "repeat NaN", cfg: Config{URL: url, Requests: 1, Repeat: math.NaN()}, want: "Repeat"},
		{name: "datatype", cfg: Config{URL: url, Requests: 1, Datatype: "fp32"}, want: "unknown datatype"},
		{name: "timeout", cfg: Config{URL: url, Requests: 1, Timeout: -time.Second}, want: "Timeout"},
		{name: "header name", cfg: Config{URL: url, Requests: 1, Headers: map[string]string{"a b": "c"}}, want: "header"},
		{name: "header value", cfg: Config{URL: url, Requests: 1, Headers: map[string]string{"X": "a\r\nb"}}, want: "header"},
		{name: "too few distinct rows", cfg: Config{URL: url, Requests: 1, Datatype: "BOOL", Cols: 2, Distinct: 10}, want: "distinct rows"},
		{name: "pool too big", cfg: Config{URL: url, Requests: 1, Rows: 256, Cols: 16384, Distinct: 64}, want: "MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(t.Context(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "loadgen: ") {
				t.Errorf("Run: %v, want an error about %q", err, tt.want)
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.requests != 0 {
		t.Errorf("server saw %d requests from bad configs", f.requests)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Run(t.Context(), Config{URL: "http://" + addr + "/v2/models/m/infer", Requests: 10})
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("Run against a closed port: %v, want ErrUnreachable", err)
	}
}

func TestTransportErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close() // a transport error for the client
		}
	}))
	defer srv.Close()
	res := mustRun(t, Config{URL: srv.URL + "/v2/models/m/infer", Clients: 3, Requests: 20})
	if res.Requests != 20 || res.Errors != 20 || res.ByStatus[0] != 20 || res.Rows != 0 {
		t.Errorf("Result %+v, want 20 transport errors", res)
	}
	if res.FirstError == "" {
		t.Error("FirstError is empty")
	}
	if res.P50 != 0 || res.RowsPerSec != 0 {
		t.Errorf("p50 %v, rows/s %v; want 0 with no success", res.P50, res.RowsPerSec)
	}
}

func TestTimeoutCountsAsTransportError(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	res := mustRun(t, Config{URL: srv.URL + "/v2/models/m/infer", Clients: 2, Requests: 2, Timeout: 50 * time.Millisecond})
	if res.ByStatus[0] != 2 || !strings.Contains(res.FirstError, "timeout") {
		t.Errorf("ByStatus %v, FirstError %q; want 2 timeouts", res.ByStatus, res.FirstError)
	}
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Run(ctx, Config{URL: "http://127.0.0.1:1/", Requests: 1}); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a done context: %v, want context.Canceled", err)
	}

	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	const clients = 4
	f := &fakeUpstream{onRequest: func(n int) {
		if n == 10 {
			cancel()
		}
	}}
	res, err := Run(ctx, Config{URL: newFake(t, f), Clients: clients, Requests: MaxRequests})
	if err != nil {
		t.Fatalf("Run cancelled during the run: %v, want nil", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if res.Requests != f.requests || res.Requests < 10 || res.Requests > 10+2*clients {
		t.Errorf("Requests %d, server saw %d; want the same, from 10 to %d", res.Requests, f.requests, 10+2*clients)
	}
}

func TestProgress(t *testing.T) {
	var c client
	for i := range 100 {
		c.lat.record(time.Duration(i+1) * time.Millisecond)
	}
	c.rows.Store(300)
	c.errors.Store(2)
	start := time.Now()
	var p progress
	p.at = start
	s := p.next([]*client{&c}, start, start.Add(2*time.Second))
	if s.RowsPerSec != 150 || s.Errors != 2 || s.Elapsed != 2*time.Second {
		t.Errorf("first snapshot %+v, want 150 rows/s, 2 errors, 2s", s)
	}
	if !near(s.P50, 50*time.Millisecond) || !near(s.P99, 99*time.Millisecond) {
		t.Errorf("p50 %v p99 %v, want about 50ms and 99ms", s.P50, s.P99)
	}
	for range 10 {
		c.lat.record(time.Second)
	}
	c.rows.Add(10)
	s = p.next([]*client{&c}, start, start.Add(3*time.Second))
	if s.RowsPerSec != 10 || s.Errors != 0 || !near(s.P50, time.Second) || !near(s.P99, time.Second) {
		t.Errorf("second snapshot %+v, want only the interval: 10 rows/s, 0 errors, p50 = p99 = 1s", s)
	}
}

func near(got, want time.Duration) bool {
	return math.Abs(float64(got-want)) <= float64(want)/100
}

func TestHistogram(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 63, 64, 127, 128, 130, 255, 256, 1000, 1e6, 1e9, 1<<maxBits - 1} {
		i := bucketOf(v)
		low, width := bucketRange(i)
		if v < low || v >= low+width {
			t.Errorf("bucketOf(%d) = %d, whose range is [%d, %d)", v, i, low, low+width)
		}
		if float64(width) > math.Max(1, float64(low)/subCount) {
			t.Errorf("bucket %d of %d is %d wide, over 1/%d", i, low, width, subCount)
		}
		if i <= prev {
			t.Errorf("bucketOf(%d) = %d, not above the previous %d", v, i, prev)
		}
		prev = i
	}
	if got := bucketOf(1<<maxBits - 1); got != numBuckets-1 {
		t.Errorf("bucketOf(2^%d-1) = %d, want the last bucket %d", maxBits, got, numBuckets-1)
	}
	if got := bucketOf(math.MaxInt64); got != numBuckets-1 {
		t.Errorf("bucketOf(MaxInt64) = %d, want %d", got, numBuckets-1)
	}
	// Every value lands in a bucket that holds it.
	for v := int64(0); v < 1<<20; v += 7 {
		low, width := bucketRange(bucketOf(v))
		if v < low || v >= low+width {
			t.Fatalf("bucketOf(%d) holds [%d, %d)", v, low, low+width)
		}
	}

	var h hist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	var c counts
	h.addTo(&c)
	q := c.quantiles(time.Millisecond, 0.5, 0.9, 0.99, 1)
	for i, want := range []time.Duration{500 * time.Microsecond, 900 * time.Microsecond, 990 * time.Microsecond, time.Millisecond} {
		if !near(q[i], want) {
			t.Errorf("quantile %d = %v, want %v within 1%%", i, q[i], want)
		}
	}
	if q[3] > time.Millisecond {
		t.Errorf("max quantile %v above the limit", q[3])
	}
	var empty counts
	if q := empty.quantiles(0, 0.5); q[0] != 0 {
		t.Errorf("quantile of nothing = %v", q[0])
	}
}

func TestFormat(t *testing.T) {
	a := Result{Requests: 1000, Rows: 4000, Errors: 3, ByStatus: map[int]int64{200: 997, 429: 2, 0: 1},
		Elapsed: 2 * time.Second, RowsPerSec: 2000, ReqPerSec: 498.5,
		P50: 1234567, P90: 2 * time.Millisecond, P99: 5 * time.Millisecond, Max: 7 * time.Millisecond,
		MeanBatchRows: 12.5, CacheResults: map[string]int64{"hit": 10, "miss": 987}, FirstError: "HTTP 429: busy"}
	s := a.String()
	for _, want := range []string{"1000 req", "4000 rows", "2000 rows/s", "498.5 req/s", "p50 1.23ms", "3 errors (transport: 1, 429: 2)",
		"batch 12.50 rows", "cache hit=10 miss=987", "first error: HTTP 429: busy"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %q, lacks %q", s, want)
		}
	}
	if strings.Contains(s, "\n") {
		t.Errorf("String() spans lines: %q", s)
	}
	b := Result{RowsPerSec: 100, P50: 10 * time.Millisecond, P90: 20 * time.Millisecond, P99: 30 * time.Millisecond}
	table := FormatComparison(a, b, "sidecar", "direct")
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("FormatComparison has %d lines, want 6:\n%s", len(lines), table)
	}
	for i, want := range []string{"ratio", "20.0×", "0.12×", "p90", "p99", "errors"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d %q lacks %q", i, lines[i], want)
		}
	}
	// The second value column (direct) ends at the same place on every line.
	ends := map[int]bool{}
	for i, l := range lines {
		col := 2 // label, sidecar, direct
		if i == 0 {
			col = 1
		}
		ends[fieldEnd(l, col)] = true
	}
	if len(ends) != 1 {
		t.Errorf("table not aligned:\n%s", table)
	}
	if z := FormatComparison(a, Result{}, "a", "b"); !strings.Contains(z, "-") {
		t.Errorf("ratio over zero should print -:\n%s", z)
	}
	for _, tt := range []struct {
		a, b float64
		want string
	}{
		{a: 1, b: 0, want: "-"}, {a: 1, b: 3, want: "0.33×"}, {a: 1, b: 150, want: "0.0067×"},
		{a: 2, b: 1, want: "2.00×"}, {a: 25, b: 1, want: "25.0×"}, {a: 1234, b: 1, want: "1234×"},
	} {
		if got := ratio(tt.a, tt.b); got != tt.want {
			t.Errorf("ratio(%v, %v) = %q, want %q", tt.a, tt.b, got, tt.want)
		}
	}
}

// fieldEnd returns the rune offset just past the n-th (from 0)
// space-separated field of line.
func fieldEnd(line string, n int) int {
	runes := []rune(line)
	field := -1
	for i := 0; i < len(runes); i++ {
		if runes[i] != ' ' && (i == 0 || runes[i-1] == ' ') {
			field++
		}
		if field == n && (i+1 == len(runes) || runes[i+1] == ' ') {
			return i + 1
		}
	}
	return -1
}

// fastServer serves a minimal v2 answer over fasthttp, which does not
// allocate per request, so that allocation counts are loadgen's own.
func fastServer(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Batchmesh-Batch-Size", "4")
		ctx.Response.Header.Set("X-Batchmesh-Cache", "hit")
		ctx.SetBodyString(`{"model_name":"m","outputs":[]}`)
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Error(err)
		}
	})
	return "http://" + ln.Addr().String() + "/v2/models/m/infer"
}

// newTestRun builds what Run builds, for driving send directly.
func newTestRun(t testing.TB, cfg Config) (*run, *fasthttp.Request, *fasthttp.Response) {
	s, err := cfg.validate()
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPool(&s)
	if err != nil {
		t.Fatal(err)
	}
	r := newRun(&s, p, nil)
	req, resp := r.newRequest(), fasthttp.AcquireResponse()
	t.Cleanup(func() {
		r.hc.CloseIdleConnections()
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	})
	return r, req, resp
}

func TestSendDoesNotAllocate(t *testing.T) {
	for _, binary := range []bool{false, true} {
		r, req, resp := newTestRun(t, Config{URL: fastServer(t), Requests: 1, Repeat: 0.5, Binary: binary,
			Headers: map[string]string{"X-Batchmesh-Priority": "low"}})
		c := r.clients[0]
		var n uint64
		r.send(c, req, resp, r.pool.pick(n), time.Time{}) // the first request sizes buffers and dials
		allocs := testing.AllocsPerRun(200, func() {
			n++
			r.send(c, req, resp, r.pool.pick(n), time.Time{})
		})
		if allocs > 0 && !raceEnabled {
			t.Errorf("binary=%v: %.1f allocations per request, want 0", binary, allocs)
		}
		if c.requests.Load() != 202 || c.errors.Load() != 0 || c.cache[0].n != 202 {
			t.Errorf("requests %d, errors %d, cache %v", c.requests.Load(), c.errors.Load(), c.cache)
		}
	}
}

func BenchmarkSend(b *testing.B) {
	r, req, resp := newTestRun(b, Config{URL: fastServer(b), Requests: 1, Rows: 1, RowsMax: 8})
	c := r.clients[0]
	var n uint64
	b.ReportAllocs()
	for b.Loop() {
		r.send(c, req, resp, r.pool.pick(n), time.Time{})
		n++
	}
}

func BenchmarkNewPool(b *testing.B) {
	s, err := Config{URL: "http://x/", Requests: 1}.validate()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := newPool(&s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(s.Distinct), "bodies/op")
}

func TestDefaultDistinct(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want int
	}{
		{name: "small bodies", cfg: Config{}, want: 1024},
		{name: "explicit", cfg: Config{Distinct: 500, Rows: 64, Cols: 768}, want: 500},
		{name: "big bodies", cfg: Config{Rows: 64, Cols: 768}, want: 64 << 20 / (100 + 64*768*11)},
		{name: "huge bodies", cfg: Config{Rows: 1024, Cols: 224 * 224 * 3, Binary: true}, want: 1},
	} {
		cfg := tt.cfg
		cfg.URL, cfg.Requests = "http://x/", 1
		s, err := cfg.validate()
		if err != nil || s.Distinct != tt.want {
			t.Errorf("%s: Distinct %d, %v; want %d", tt.name, s.Distinct, err, tt.want)
		}
	}
}
