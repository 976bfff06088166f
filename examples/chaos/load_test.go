package chaos_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The load of every scenario: 32 closed-loop clients, each request one row
// with a deadline of 1 s (the sidecar's batching.timeout; the client waits
// a little longer so that a late answer shows as the sidecar's 504, not as
// a client-side timeout).
const (
	clients       = 32
	deadline      = time.Second
	clientTimeout = deadline + 500*time.Millisecond
	thinkTime     = 20 * time.Millisecond // between a client's requests: keeps the 2-core CI machine usable
	distinctRows  = 64
)

// loadCase is one request body and the answers it may get: the direct
// answer of each runtime it may reach (they differ only in model_version).
type loadCase struct {
	body []byte
	want [][]byte
}

// rowBody is the v2 request of distinct row i.
func rowBody(i int) []byte {
	return fmt.Appendf(nil, `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[%d,%d,%d,%d]}]}`, i, i+1, i*i, -i)
}

// expectedAnswers asks every runtime directly for the answer of each
// distinct row: the reference the sidecar's answers are compared with, byte
// for byte.
func expectedAnswers(t *testing.T, runtimes ...*runtime) []loadCase {
	t.Helper()
	cases := make([]loadCase, distinctRows)
	for i := range cases {
		cases[i].body = rowBody(i)
		for _, r := range runtimes {
			status, body := post(t, "http://"+r.addr+"/v2/models/m/infer", cases[i].body)
			if status != http.StatusOK {
				t.Fatalf("direct call to %s: status %d: %s", r.addr, status, body)
			}
			if !slices.ContainsFunc(cases[i].want, func(w []byte) bool { return bytes.Equal(w, body) }) {
				cases[i].want = append(cases[i].want, body)
			}
		}
	}
	return cases
}

// post sends body to url and returns the status and the body of the reply.
func post(t *testing.T, url string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// loadResult is what the clients counted.
type loadResult struct {
	sent, ok atomic.Int64 // requests sent; answered 200 with one of the expected bodies

	mu       sync.Mutex
	failures map[string]int // what went wrong (status and body, or the error) → how often
}

func (r *loadResult) fail(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(what) > 200 {
		what = what[:200] + "…"
	}
	r.failures[what]++
}

// String sums the failures up, most frequent first.
func (r *loadResult) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	type kv struct {
		what string
		n    int
	}
	var all []kv
	for w, n := range r.failures {
		all = append(all, kv{w, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
	var b strings.Builder
	fmt.Fprintf(&b, "%d sent, %d answered right", r.sent.Load(), r.ok.Load())
	for _, f := range all {
		fmt.Fprintf(&b, "\n  %d× %s", f.n, f.what)
	}
	return b.String()
}

// startLoad runs the clients against url/v2/models/m/infer until the
// returned stop is called; res counts as they go, and stop waits for the
// requests in flight to be answered (none is abandoned).
func startLoad(url string, cases []loadCase) (res *loadResult, stop func()) {
	res = &loadResult{failures: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	hc := &http.Client{Transport: tr, Timeout: clientTimeout}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				lc := cases[(c+n*clients)%len(cases)]
				res.sent.Add(1)
				one(hc, url+"/v2/models/m/infer", lc, res)
				select {
				case <-ctx.Done():
				case <-time.After(thinkTime):
				}
			}
		})
	}
	return res, func() {
		cancel()
		wg.Wait()
		tr.CloseIdleConnections()
	}
}

// one sends one request and counts its outcome.
func one(hc *http.Client, url string, lc loadCase, res *loadResult) {
	resp, err := hc.Post(url, "application/json", bytes.NewReader(lc.body))
	if err != nil {
		res.fail(err.Error())
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		res.fail("reading the answer: " + err.Error())
	case resp.StatusCode != http.StatusOK:
		res.fail(fmt.Sprintf("status %d: %s", resp.StatusCode, body))
	case !slices.ContainsFunc(lc.want, func(w []byte) bool { return bytes.Equal(w, body) }):
		res.fail(fmt.Sprintf("wrong bytes: %s", body))
	default:
		res.ok.Add(1)
	}
}

// metrics is one scrape of a Prometheus /metrics page.
type metrics map[string]*dto.MetricFamily

// scrape reads url's metrics, failing t on an error.
func scrape(t *testing.T, url string) metrics {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return fams
}

// sum adds up the samples of family name (a counter's value, a histogram's
// count) whose labels include every pair of match.
func (m metrics) sum(name string, match ...string) float64 {
	fam := m[name]
	if fam == nil {
		return 0
	}
	var total float64
	for _, s := range fam.GetMetric() {
		if hasLabels(s, match) {
			switch {
			case s.Counter != nil:
				total += s.Counter.GetValue()
			case s.Gauge != nil:
				total += s.Gauge.GetValue()
			case s.Histogram != nil:
				total += float64(s.Histogram.GetSampleCount())
			}
		}
	}
	return total
}

func hasLabels(s *dto.Metric, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		found := false
		for _, l := range s.GetLabel() {
			if l.GetName() == match[i] && l.GetValue() == match[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// get fetches url and returns the status and the body.
func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}
