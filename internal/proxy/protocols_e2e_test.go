package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/modelrt"
)

func protocolYAML(name, protocol, addr, batching, cache string) string {
	return fmt.Sprintf(`models:
  - name: %s
    protocol: %s
    batching: {%s}
    cache: {%s}
    versions:
      - version: "1"
        endpoints:
          - {address: %s}
`, name, protocol, batching, cache, addr)
}

func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return v
}

// TestPredictThroughSidecar: row and columnar TF predict requests, named
// and unnamed, from 64 concurrent callers share batches and get exactly the
// runtime's direct answers; malformed bodies get 400 naming the field.
func TestPredictThroughSidecar(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{Slots: 1}, "s=sim:linear/2ms+0s")
	sc := startSidecar(t, protocolYAML("s", "tfserving", rt.addr, "max_batch_size: 64, max_queue_delay: 1ms, timeout: 10s", ""))
	bodies := func(i int) []string {
		return []string{
			fmt.Sprintf(`{"instances":[[%d,1.5],[%d,-2]]}`, i, i+1000),
			fmt.Sprintf(`{"inputs":[[%d,0.25]]}`, i),
			fmt.Sprintf(`{"instances":[{"x":[%d,3]}]}`, i),
			fmt.Sprintf(`{"inputs":{"x":[[%d,3],[1,2]]}}`, i),
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 64*4)
	for c := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range bodies(c) {
				got := post(sc.url+"/v1/models/s:predict", []byte(b), nil)
				want := post("http://"+rt.addr+"/v1/models/s:predict", []byte(b), nil)
				if got.err != nil || got.status != 200 || want.status != 200 {
					errs <- fmt.Sprintf("%s: sidecar %d %s %v, direct %d", b, got.status, got.body, got.err, want.status)
					continue
				}
				if !reflect.DeepEqual(jsonValue(t, got.body), jsonValue(t, want.body)) {
					errs <- fmt.Sprintf("%s: sidecar %s, direct %s", b, got.body, want.body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	rows := metricValue(t, rt.URL+"/metrics", "model_batch_rows_sum")
	batches := metricValue(t, rt.URL+"/metrics", "model_batch_rows_count")
	// The direct calls are one batch each; the sidecar's 64 × 6 rows came in
	// far fewer batches than its 256 requests.
	if sidecarBatches := batches - 256; sidecarBatches >= 128 {
		t.Errorf("%v runtime batches for %v rows: the sidecar's 256 requests were not batched", batches, rows)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"instances":[[1,2],[3]]}`, "instances[1] has 1 elements"},
		{`{"inputs":{"x":[1,2],"y":[1]}}`, "inputs.y has 1 rows"},
		{`{"instances":[1,"a"]}`, "instances[1] is a string"},
		{`{"nothing":1}`, `neither "instances"`},
	} {
		r := post(sc.url+"/v1/models/s:predict", []byte(tc.body), nil)
		if r.status != http.StatusBadRequest || !strings.Contains(errorOf(t, r), tc.want) {
			t.Errorf("%s: %d %s, want 400 with %q", tc.body, r.status, r.body, tc.want)
		}
	}
	if r := post(sc.url+"/v2/models/s/infer", []byte(`{}`), nil); r.status != 404 || !strings.Contains(errorOf(t, r), "speaks protocol tfserving") {
		t.Errorf("v2 route of a tfserving model: %d %s", r.status, r.body)
	}
	if r := get(t, sc.url+"/v1/models/s"); r.status != 200 || !strings.Contains(string(r.body), "AVAILABLE") {
		t.Errorf("model status passed through: %d %s", r.status, r.body)
	}
}

// TestEmbeddingsThroughSidecar: inputs are rows, split over max_batch_size
// and put back in order, equal to the runtime's direct answer; errors use
// OpenAI's shape; the row cache answers repeated inputs.
func TestEmbeddingsThroughSidecar(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{Slots: 1}, "e=embed:linear/1ms+0s")
	sc := startSidecar(t, protocolYAML("e", "openai", rt.addr, "max_batch_size: 8, max_queue_delay: 1ms, timeout: 10s", "enabled: true"))
	var inputs []string
	for i := range 30 {
		inputs = append(inputs, fmt.Sprintf("sentence number %d", i))
	}
	in, _ := json.Marshal(inputs)
	for _, extra := range []string{``, `,"dimensions":16`, `,"encoding_format":"base64"`} {
		body := []byte(`{"model":"e","input":` + string(in) + extra + `}`)
		got := post(sc.url+"/v1/embeddings", body, nil)
		want := post("http://"+rt.addr+"/v1/embeddings", body, nil)
		if got.status != 200 || want.status != 200 {
			t.Fatalf("%s: sidecar %d %s, direct %d %s", extra, got.status, got.body, want.status, want.body)
		}
		if !reflect.DeepEqual(jsonValue(t, got.body), jsonValue(t, want.body)) {
			t.Fatalf("%s: sidecar answer differs from direct:\n%s\n%s", extra, got.body, want.body)
		}
		if bs := got.header.Get(HeaderBatchSize); bs != "" && bs > "8" && len(bs) == 1 {
			t.Errorf("batch of %s rows over max_batch_size 8", bs)
		}
	}
	// Token ids, and a repeat answered from the cache.
	body := []byte(`{"model":"e","input":[[1,2,3],[4]]}`)
	first := post(sc.url+"/v1/embeddings", body, nil)
	again := post(sc.url+"/embeddings", body, nil)
	direct := post("http://"+rt.addr+"/v1/embeddings", body, nil)
	if again.header.Get(HeaderCache) != "hit" || !reflect.DeepEqual(jsonValue(t, again.body), jsonValue(t, direct.body)) ||
		!reflect.DeepEqual(jsonValue(t, first.body), jsonValue(t, direct.body)) {
		t.Fatalf("token ids: first %s, again (%s) %s, direct %s", first.body, again.header.Get(HeaderCache), again.body, direct.body)
	}
	for _, tc := range []struct {
		body, param, typ, msg string
		status                int
	}{
		{`{"model":"e","input":[1,-1]}`, "input", codec.OpenAIInvalidRequest, "input[1]: -1 is not a token id", 400},
		{`{"model":"nope","input":"x"}`, "model", codec.OpenAINotFound, `model "nope" is not an embeddings model`, 404},
		{`{"model":"e","input":"x","encoding_format":"int8"}`, "encoding_format", codec.OpenAIInvalidRequest, `"float" or "base64"`, 400},
		{`{"model":"e","input":"x","dimensions":1000}`, "", codec.OpenAIInvalidRequest, "dimensions 1000 is not allowed", 400},
	} {
		r := post(sc.url+"/v1/embeddings", []byte(tc.body), nil)
		var e struct {
			Error struct {
				Message, Type string
				Param         *string
			} `json:"error"`
		}
		if err := json.Unmarshal(r.body, &e); err != nil {
			t.Fatalf("%s: %s", tc.body, r.body)
		}
		param := ""
		if e.Error.Param != nil {
			param = *e.Error.Param
		}
		if r.status != tc.status || e.Error.Type != tc.typ || param != tc.param || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("%s: %d %s; want %d %s param %q with %q", tc.body, r.status, r.body, tc.status, tc.typ, tc.param, tc.msg)
		}
	}
}

// TestRetryOverloadedRuntime: a runtime that refuses batches with 429
// (busy, not broken) is backed off from and retried within the callers'
// deadlines, whatever its protocol: no caller sees the refusals.
func TestRetryOverloadedRuntime(t *testing.T) {
	for _, tt := range []struct{ protocol, model, path, body string }{
		{protocol: "openai", model: "e=embed:linear/5ms+0s", path: "/v1/embeddings", body: `{"model":"e","input":"x%d"}`},
		{protocol: "v2", model: "e=sim:linear/5ms+0s", path: "/v2/models/e/infer",
			body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[%d,1]}]}`},
	} {
		t.Run(tt.protocol, func(t *testing.T) {
			rt := startRuntime(t, modelrt.Config{Slots: 1, MaxQueue: 1}, tt.model)
			// max_batch_size 1: many batches at once, more than the runtime queues.
			sc := startSidecar(t, fmt.Sprintf(`models:
  - name: e
    protocol: %s
    batching: {max_batch_size: 1, max_queue_delay: 0s, timeout: 20s}
    versions:
      - version: "1"
        endpoints:
          - {address: %s, slots: 4}
`, tt.protocol, rt.addr))
			var wg sync.WaitGroup
			fails := make(chan string, 32)
			for i := range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := post(sc.url+tt.path, []byte(fmt.Sprintf(tt.body, i)), nil)
					if r.status != 200 {
						fails <- fmt.Sprintf("%d %s", r.status, r.body)
					}
				}()
			}
			wg.Wait()
			close(fails)
			for f := range fails {
				t.Error(f)
			}
			// 4 batches in flight on a runtime of 1 slot that queues 1: it
			// refused some, and the callers never saw it.
			if n := metricValue(t, sc.adminU+"/metrics", `batchmesh_upstream_requests_total{code="429"`); n == 0 {
				t.Error("the runtime never answered 429: the back-off was not exercised")
			}
		})
	}
}

// TestPredictCached: TF predict rows go through the row cache like v2 rows:
// a repeated row is answered from the cache (the runtime sees no new row),
// a request mixing cached and new rows sends only the new ones, and every
// answer equals the runtime's direct one.
func TestPredictCached(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{Slots: 1}, "s=sim:linear/1ms+0s")
	sc := startSidecar(t, protocolYAML("s", "tfserving", rt.addr, "max_batch_size: 16, timeout: 5s", "enabled: true, ttl: 1m"))
	url := sc.url + "/v1/models/s:predict"
	check := func(body, wantCache string) {
		t.Helper()
		got := post(url, []byte(body), nil)
		want := post("http://"+rt.addr+"/v1/models/s:predict", []byte(body), nil)
		if got.err != nil || got.status != 200 || want.status != 200 {
			t.Fatalf("%s: sidecar %d %s %v, direct %d %s", body, got.status, got.body, got.err, want.status, want.body)
		}
		if !reflect.DeepEqual(jsonValue(t, got.body), jsonValue(t, want.body)) {
			t.Errorf("%s: sidecar %s, direct %s", body, got.body, want.body)
		}
		if c := got.header.Get(HeaderCache); c != wantCache {
			t.Errorf("%s: X-Batchmesh-Cache %q, want %q", body, c, wantCache)
		}
	}
	check(`{"instances":[[1,2],[3,4]]}`, "miss")
	check(`{"instances":[[1,2],[3,4]]}`, "hit")
	check(`{"inputs":[[3,4],[5,6]]}`, "partial") // columnar, one row cached
	// Direct calls above computed 6 rows; the sidecar only 2 + 0 + 1.
	if sent := metricValue(t, rt.URL+"/metrics", "model_rows_total"); sent != 6+3 {
		t.Errorf("the runtime computed %v rows, want 9 (6 direct, 3 through the sidecar)", sent)
	}
}
