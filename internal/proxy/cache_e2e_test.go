package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/modelrt"
)

// cacheYAML is one model m on addr with the given batching and cache
// settings (the insides of their flow mappings) and a top-level prefix
// (e.g. "cache_bytes: 8KiB\n").
func cacheYAML(addr, top, batching, cache string) string {
	if batching == "" {
		batching = "max_batch_size: 16, max_queue_delay: 1ms, timeout: 10s"
	}
	return fmt.Sprintf(`%smodels:
  - name: m
    batching: {%s}
    cache: {%s}
    versions:
      - version: "1"
        endpoints: [{address: %s}]
`, top, batching, cache, addr)
}

// sampleSum is metricValue, but 0 when no sample has the prefix yet.
func sampleSum(t *testing.T, url, prefix string) float64 {
	t.Helper()
	sum := 0.0
	for _, line := range strings.Split(string(get(t, url).body), "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			sum += v
		}
	}
	return sum
}

// rows returns the rows the runtime has computed so far.
func (rt *runtime) rows(t *testing.T) int {
	t.Helper()
	return int(sampleSum(t, "http://"+rt.addr+"/metrics", "model_rows_total"))
}

// direct asks the runtime itself, for the answer a fresh computation gives.
func (rt *runtime) direct(t *testing.T, req inference.Request) []byte {
	t.Helper()
	r, resp, err := send("http://"+rt.addr+"/v2/models/m/infer", req, false, nil)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("direct call: %v %d %s", err, r.status, r.body)
	}
	return resp.Output("output").Data
}

// cached sends req through the sidecar and checks the status and the
// X-Batchmesh-Cache header; it returns the output's bytes.
func cached(t *testing.T, url string, req inference.Request, bin bool, headers map[string]string, wantCache string) []byte {
	t.Helper()
	r, resp, err := send(url, req, bin, headers)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("%s: %v %d %s", req.ID, err, r.status, r.body)
	}
	if got := r.header.Get(HeaderCache); got != wantCache {
		t.Errorf("%s (binary=%v, %v): %s = %q, want %q", req.ID, bin, headers, HeaderCache, got, wantCache)
	}
	if resp.ID != req.ID {
		t.Errorf("id %q echoed as %q", req.ID, resp.ID)
	}
	out := resp.Output("output")
	if out == nil || out.Shape[0] != req.Inputs[0].Shape[0] {
		t.Fatalf("%s: output %+v for %d rows", req.ID, out, req.Inputs[0].Shape[0])
	}
	return out.Data
}

// pick returns a request of rows idx of req, in that order.
func pick(req inference.Request, id string, idx ...int) inference.Request {
	in := req.Inputs[0]
	off := in.RowOffsets(nil)
	parts := make([]inference.Tensor, len(idx))
	for i, r := range idx {
		parts[i] = in.Slice(off, r, r+1)
	}
	t, err := inference.Concat(parts)
	if err != nil {
		panic(err)
	}
	if len(parts) == 1 { // Concat shares a single part; own it
		t.Data = slices.Clone(t.Data)
	}
	return inference.Request{ID: id, Inputs: []inference.Tensor{t}}
}

// TestCacheHitMatchesFresh: a hit answers with the bytes a fresh
// computation gives, and JSON and binary requests share the entry.
func TestCacheHitMatchesFresh(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/1ms+0s")
	sc := startSidecar(t, cacheYAML(rt.addr, "", "", "enabled: true"))
	url := sc.url + "/v2/models/m/infer"
	req := rowsRequest(4, 16, 1, 0)
	rows0 := rt.rows(t)

	miss := cached(t, url, req, false, nil, cacheMiss)
	if got := rt.rows(t) - rows0; got != 4 {
		t.Fatalf("runtime computed %d rows for a 4-row miss", got)
	}
	req.ID = "binary-retry"
	hitBin := cached(t, url, req, true, nil, cacheHit)
	req.ID = "json-retry"
	hitJSON := cached(t, url, req, false, nil, cacheHit)
	if got := rt.rows(t) - rows0; got != 4 {
		t.Errorf("runtime computed %d rows, want the 4 of the miss alone", got)
	}
	want := rt.direct(t, req)
	for name, got := range map[string][]byte{"miss": miss, "binary hit": hitBin, "JSON hit": hitJSON} {
		if !bytes.Equal(got, want) {
			t.Errorf("%s: answer differs from a direct call to the runtime", name)
		}
	}
	// Single rows of the request, in another order, are hits too.
	shuffled := pick(req, "shuffled", 3, 0, 2)
	got := cached(t, url, shuffled, true, nil, cacheHit)
	if !bytes.Equal(got, rt.direct(t, shuffled)) {
		t.Error("rows answered from the cache are not in the request's order")
	}
}

// TestCachePartialSendsOnlyMissing: with 5 of 8 rows cached, the runtime
// computes exactly the other 3, and the answer is reassembled in order.
func TestCachePartialSendsOnlyMissing(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/1ms+0s")
	sc := startSidecar(t, cacheYAML(rt.addr, "", "", "enabled: true"))
	url := sc.url + "/v2/models/m/infer"
	eight := rowsRequest(8, 16, 2, 0)
	cached(t, url, pick(eight, "five", 0, 2, 3, 5, 7), false, nil, cacheMiss)
	rows0 := rt.rows(t)
	r, resp, err := send(url, eight, true, nil)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("%v %d %s", err, r.status, r.body)
	}
	if got := r.header.Get(HeaderCache); got != cachePartial {
		t.Errorf("%s = %q, want %q", HeaderCache, got, cachePartial)
	}
	if got := rt.rows(t) - rows0; got != 3 {
		t.Errorf("runtime computed %d rows for a request with 3 rows missing", got)
	}
	if got := r.header.Get(HeaderBatchSize); got != "3" {
		t.Errorf("%s = %q, want 3 (the missing rows alone went upstream)", HeaderBatchSize, got)
	}
	if !bytes.Equal(resp.Output("output").Data, rt.direct(t, eight)) {
		t.Error("partial answer differs from a direct call to the runtime")
	}
	// Now every row is cached.
	cached(t, url, eight, false, nil, cacheHit)
}

// TestCacheDuplicateRowsComputedOnce: a row twice in one request goes
// upstream once.
func TestCacheDuplicateRowsComputedOnce(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/1ms+0s")
	sc := startSidecar(t, cacheYAML(rt.addr, "", "", "enabled: true"))
	url := sc.url + "/v2/models/m/infer"
	req := pick(rowsRequest(3, 16, 3, 0), "dups", 0, 1, 0, 2, 1)
	rows0 := rt.rows(t)
	r, resp, err := send(url, req, false, nil)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("%v %d %s", err, r.status, r.body)
	}
	if got := rt.rows(t) - rows0; got != 3 {
		t.Errorf("runtime computed %d rows for 3 distinct rows in 5", got)
	}
	if !bytes.Equal(resp.Output("output").Data, rt.direct(t, req)) {
		t.Error("answer differs from a direct call to the runtime")
	}
}

// TestCacheCoalescesConcurrent: 100 concurrent identical requests cause
// exactly one upstream row.
func TestCacheCoalescesConcurrent(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/50ms+0s")
	sc := startSidecar(t, cacheYAML(rt.addr, "", "", "enabled: true"))
	url := sc.url + "/v2/models/m/infer"
	req := rowsRequest(1, 16, 4, 0)
	rows0 := rt.rows(t)
	const n = 100
	headers := make([]string, n)
	answers := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, resp, err := send(url, req, i%2 == 1, nil)
			if err != nil || r.status != http.StatusOK {
				t.Errorf("request %d: %v %d %s", i, err, r.status, r.body)
				return
			}
			headers[i], answers[i] = r.header.Get(HeaderCache), resp.Output("output").Data
		})
	}
	wg.Wait()
	if got := rt.rows(t) - rows0; got != 1 {
		t.Errorf("runtime computed %d rows for %d identical requests, want 1", got, n)
	}
	count := map[string]int{}
	for _, h := range headers {
		count[h]++
	}
	if count[cacheMiss] != 1 || count[cacheMiss]+count[cacheCoalesced]+count[cacheHit] != n {
		t.Errorf("%s headers = %v, want one miss and the rest coalesced or hit", HeaderCache, count)
	}
	if count[cacheCoalesced] == 0 {
		t.Errorf("no request was coalesced (%v): the requests did not overlap", count)
	}
	if got := sampleSum(t, sc.adminU+"/metrics", "batchmesh_coalesced_total"); int(got) != count[cacheCoalesced] {
		t.Errorf("batchmesh_coalesced_total = %v, %d requests said coalesced", got, count[cacheCoalesced])
	}
	want := rt.direct(t, req)
	for i, a := range answers {
		if a != nil && !bytes.Equal(a, want) {
			t.Errorf("request %d (%s): answer differs from a direct call", i, headers[i])
		}
	}
}

// TestCacheLeaderDeadlineSparesFollowers: the leader of a row gives up on
// its short deadline (504); the requests that joined it with longer
// deadlines still get the right answer.
func TestCacheLeaderDeadlineSparesFollowers(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/600ms+0s")
	sc := startSidecar(t, cacheYAML(rt.addr, "", "", "enabled: true"))
	url := sc.url + "/v2/models/m/infer"
	req := rowsRequest(1, 16, 5, 0)
	leader := make(chan reply, 1)
	go func() {
		r, _, _ := send(url, req, false, map[string]string{HeaderTimeoutMs: "300"})
		leader <- r
	}()
	lane := sc.p.st.Load().models["m"].versions[0].lane
	waitFor(t, func() bool { eps, _ := lane.Status(); return eps[0].InFlight == 1 })

	const followers = 6
	type result struct {
		r    reply
		data []byte
	}
	results := make([]result, followers)
	var wg sync.WaitGroup
	for i := range followers {
		wg.Go(func() {
			r, resp, _ := send(url, req, i%2 == 0, nil)
			results[i].r = r
			if out := resp.Output("output"); out != nil {
				results[i].data = out.Data
			}
		})
	}
	waitFor(t, func() bool { return sampleSum(t, sc.adminU+"/metrics", "batchmesh_coalesced_total") >= followers })
	select {
	case r := <-leader:
		t.Fatalf("the leader answered (%d) before its followers had joined it; the test needs a slower runtime", r.status)
	default:
	}
	if r := <-leader; r.status != http.StatusGatewayTimeout {
		t.Errorf("leader: status %d %s, want 504", r.status, r.body)
	}
	wg.Wait()
	want := rt.direct(t, req)
	for i, res := range results {
		if res.r.status != http.StatusOK {
			t.Errorf("follower %d: status %d %s, want 200: the leader's deadline failed it", i, res.r.status, res.r.body)
			continue
		}
		if !bytes.Equal(res.data, want) {
			t.Errorf("follower %d: answer differs from a direct call", i)
		}
	}
}

// TestCacheShedLeaderSparesFollowers: the leader of a row is a
// low-priority request that the lane sheds for a later one; the
// high-priority request that joined it must not fail with it.
func TestCacheShedLeaderSparesFollowers(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/400ms+0s")
	sc := startSidecar(t, cacheYAML(rt.addr, "", "max_batch_size: 1, max_queue_size: 3, max_queue_delay: 1ms, timeout: 10s", "enabled: true"))
	url := sc.url + "/v2/models/m/infer"
	lane := sc.p.st.Load().models["m"].versions[0].lane
	var wg sync.WaitGroup
	// Occupy the runtime: one batch running, one in transit.
	for c := range 2 {
		wg.Go(func() { _, _, _ = send(url, rowsRequest(1, 16, 100+c, 0), false, nil) })
	}
	waitFor(t, func() bool { eps, _ := lane.Status(); return eps[0].InFlight == 2 })

	row := rowsRequest(1, 16, 6, 0)
	var low, high, pusher reply
	var highData []byte
	wg.Go(func() { low, _, _ = send(url, row, false, map[string]string{HeaderPriority: "low"}) })
	waitFor(t, func() bool { _, q := lane.Status(); return q == 1 })
	wg.Go(func() {
		var resp inference.Response
		high, resp, _ = send(url, row, true, map[string]string{HeaderPriority: "high"})
		if out := resp.Output("output"); out != nil {
			highData = out.Data
		}
	})
	waitFor(t, func() bool { return sampleSum(t, sc.adminU+"/metrics", "batchmesh_coalesced_total") == 1 })
	// Three normal rows fill the queue and push the low-priority leader out.
	wg.Go(func() { pusher, _, _ = send(url, rowsRequest(3, 16, 7, 0), false, nil) })
	wg.Wait()
	if low.status != http.StatusTooManyRequests {
		t.Errorf("low-priority leader: status %d %s, want 429 (shed)", low.status, low.body)
	}
	if high.status != http.StatusOK {
		t.Fatalf("high-priority follower: status %d %s, want 200: it failed with the leader it joined", high.status, high.body)
	}
	if !bytes.Equal(highData, rt.direct(t, row)) {
		t.Error("follower's answer differs from a direct call")
	}
	t.Logf("the request that pushed the leader out: %d", pusher.status)
}

// TestCacheLeadersOtherRowsSpareFollowers: the leader of a row fails
// because of the rest of its request (here a runtime that refuses more
// than 2 rows at once); the request that joined it for that one row must
// not fail with it.
func TestCacheLeadersOtherRowsSpareFollowers(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{MaxBatch: 2}, "m=sim:linear/300ms+0s")
	sc := startSidecar(t, cacheYAML(rt.addr, "", "", "enabled: true"))
	url := sc.url + "/v2/models/m/infer"
	lane := sc.p.st.Load().models["m"].versions[0].lane
	var wg sync.WaitGroup
	for c := range 2 { // one batch running, one in transit
		wg.Go(func() { _, _, _ = send(url, rowsRequest(1, 16, 200+c, 0), false, nil) })
	}
	waitFor(t, func() bool { eps, _ := lane.Status(); return eps[0].InFlight == 2 })
	three := rowsRequest(3, 16, 15, 0)
	var leader, follower reply
	var got []byte
	wg.Go(func() { leader, _, _ = send(url, three, false, nil) })
	waitFor(t, func() bool { _, q := lane.Status(); return q == 3 })
	one := pick(three, "one", 1)
	wg.Go(func() {
		var resp inference.Response
		follower, resp, _ = send(url, one, true, nil)
		if out := resp.Output("output"); out != nil {
			got = out.Data
		}
	})
	waitFor(t, func() bool { return sampleSum(t, sc.adminU+"/metrics", "batchmesh_coalesced_total") == 1 })
	wg.Wait()
	if leader.status != http.StatusBadRequest {
		t.Errorf("3-row leader: status %d %s, want 400 from the runtime", leader.status, leader.body)
	}
	if follower.status != http.StatusOK {
		t.Fatalf("1-row follower: status %d %s, want 200: it failed with its leader's other rows", follower.status, follower.body)
	}
	if !bytes.Equal(got, rt.direct(t, one)) {
		t.Error("follower's answer differs from a direct call")
	}
}

// configDumpCache is the cache part of /config_dump.
type configDumpCache struct {
	Cache struct {
		Enabled    bool  `json:"enabled"`
		MaxBytes   int64 `json:"max_bytes"`
		MaxEntries int   `json:"max_entries"`
		Bytes      int64 `json:"bytes"`
		Entries    int   `json:"entries"`
	} `json:"cache"`
	Models []struct {
		Cache map[string]any `json:"cache"`
	} `json:"models"`
}

func dumpCache(t *testing.T, sc *sidecar) configDumpCache {
	t.Helper()
	var d configDumpCache
	if err := json.Unmarshal(get(t, sc.adminU+"/config_dump").body, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCacheByteBound streams large distinct rows through a small cache:
// the bytes held stay within cache_bytes and rows are evicted.
func TestCacheByteBound(t *testing.T) {
	const maxBytes = 8 << 10
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/100us+0s")
	sc := startSidecar(t, cacheYAML(rt.addr, "cache_bytes: 8KiB\n", "", "enabled: true, ttl: 1h"))
	url := sc.url + "/v2/models/m/infer"
	const requests = 40
	for i := range requests {
		cached(t, url, rowsRequest(2, 1024, 8, i), i%2 == 0, nil, cacheMiss)
		if d := dumpCache(t, sc); d.Cache.Bytes > maxBytes {
			t.Fatalf("after %d requests the cache holds %d bytes, over cache_bytes %d", i+1, d.Cache.Bytes, maxBytes)
		}
	}
	d := dumpCache(t, sc)
	if !d.Cache.Enabled || d.Cache.MaxBytes != maxBytes || d.Cache.Entries <= 0 || d.Cache.Entries >= 2*requests || d.Cache.Bytes <= 0 {
		t.Errorf("config_dump cache = %+v, want max_bytes %d and some entries held", d.Cache, maxBytes)
	}
	if len(d.Models) != 1 || d.Models[0].Cache["enabled"] != true || d.Models[0].Cache["ttl"] != "1h0m0s" ||
		d.Models[0].Cache["granularity"] != "row" || d.Models[0].Cache["scope"] != "shared" {
		t.Errorf("config_dump model cache settings = %v", d.Models[0].Cache)
	}
	metrics := sc.adminU + "/metrics"
	if ev := sampleSum(t, metrics, "batchmesh_cache_evictions_total"); int(ev) != 2*requests-d.Cache.Entries {
		t.Errorf("batchmesh_cache_evictions_total = %v, want %d rows stored less %d held", ev, 2*requests, d.Cache.Entries)
	}
	if b := sampleSum(t, metrics, "batchmesh_cache_bytes"); b <= 0 || b > maxBytes {
		t.Errorf("batchmesh_cache_bytes = %v, want within (0, %d]", b, maxBytes)
	}
	// The newest rows are still there and still right.
	last := rowsRequest(2, 1024, 8, requests-1)
	if got := cached(t, url, last, false, nil, cacheHit); !bytes.Equal(got, rt.direct(t, last)) {
		t.Error("hit after evictions differs from a direct call")
	}
}

// TestCacheVersionChangeMisses: the same row for another version is a miss
// and is computed by that version's runtime.
func TestCacheVersionChangeMisses(t *testing.T) {
	v1 := startRuntime(t, modelrt.Config{}, "m=sim:linear/1ms+0s")
	v2 := startRuntime(t, modelrt.Config{Version: "2"}, "m=sim:linear/1ms+0s")
	sc := startSidecar(t, fmt.Sprintf(`models:
  - name: m
    batching: {max_batch_size: 16, max_queue_delay: 1ms, timeout: 10s}
    cache: {enabled: true}
    versions:
      - {version: "1", endpoints: [{address: %s}]}
      - {version: "2", endpoints: [{address: %s}]}
`, v1.addr, v2.addr))
	req := rowsRequest(1, 16, 9, 0)
	rows1, rows2 := v1.rows(t), v2.rows(t)
	cached(t, sc.url+"/v2/models/m/versions/1/infer", req, false, nil, cacheMiss)
	cached(t, sc.url+"/v2/models/m/versions/1/infer", req, false, nil, cacheHit)
	cached(t, sc.url+"/v2/models/m/versions/2/infer", req, false, nil, cacheMiss)
	cached(t, sc.url+"/v2/models/m/versions/2/infer", req, true, nil, cacheHit)
	if d1, d2 := v1.rows(t)-rows1, v2.rows(t)-rows2; d1 != 1 || d2 != 1 {
		t.Errorf("rows computed: version 1 %d, version 2 %d; want 1 each", d1, d2)
	}
}

// TestCacheControl: no-cache recomputes (and refreshes), no-store keeps
// nothing, both bypass the cache.
func TestCacheControl(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/1ms+0s")
	sc := startSidecar(t, cacheYAML(rt.addr, "", "", "enabled: true"))
	url := sc.url + "/v2/models/m/infer"
	a, b := rowsRequest(1, 16, 10, 0), rowsRequest(1, 16, 10, 1)
	want := map[string][]byte{"a": rt.direct(t, a), "b": rt.direct(t, b)}
	for _, step := range []struct {
		name     string
		row      string
		control  string
		want     string
		computed int
	}{
		{name: "first a", row: "a", want: cacheMiss, computed: 1},
		{name: "a again", row: "a", want: cacheHit},
		{name: "a with no-cache", row: "a", control: "no-cache", want: cacheMiss, computed: 1},
		{name: "a after no-cache", row: "a", want: cacheHit},
		{name: "b with no-store", row: "b", control: "max-age=0, No-Store", want: cacheMiss, computed: 1},
		{name: "b after no-store", row: "b", want: cacheMiss, computed: 1},
		{name: "b stored now", row: "b", want: cacheHit},
		{name: "a with both", row: "a", control: "no-cache, no-store", want: cacheBypass, computed: 1},
		{name: "a still cached", row: "a", want: cacheHit},
	} {
		req := a
		if step.row == "b" {
			req = b
		}
		req.ID = step.name
		var h map[string]string
		if step.control != "" {
			h = map[string]string{"Cache-Control": step.control}
		}
		rows0 := rt.rows(t)
		got := cached(t, url, req, false, h, step.want)
		if d := rt.rows(t) - rows0; d != step.computed {
			t.Errorf("%s: runtime computed %d rows, want %d", step.name, d, step.computed)
		}
		if !bytes.Equal(got, want[step.row]) {
			t.Errorf("%s: answer differs from a direct call", step.name)
		}
	}
}

// TestCacheTenantScope: with scope tenant, tenants do not share entries;
// with scope shared, they do.
func TestCacheTenantScope(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/1ms+0s")
	for _, tc := range []struct {
		scope string
		steps []struct{ tenant, want string }
	}{
		{scope: "tenant", steps: []struct{ tenant, want string }{
			{"a", cacheMiss}, {"b", cacheMiss}, {"a", cacheHit}, {"b", cacheHit}, {"", cacheMiss}, {"", cacheHit},
		}},
		{scope: "shared", steps: []struct{ tenant, want string }{
			{"a", cacheMiss}, {"b", cacheHit}, {"", cacheHit},
		}},
	} {
		t.Run(tc.scope, func(t *testing.T) {
			sc := startSidecar(t, cacheYAML(rt.addr, "", "", "enabled: true, scope: "+tc.scope))
			req := rowsRequest(2, 16, 11, 0)
			want := rt.direct(t, req)
			for i, s := range tc.steps {
				req.ID = fmt.Sprintf("step%d-tenant-%q", i, s.tenant)
				var h map[string]string
				if s.tenant != "" {
					h = map[string]string{HeaderTenant: s.tenant}
				}
				if got := cached(t, sc.url+"/v2/models/m/infer", req, i%2 == 1, h, s.want); !bytes.Equal(got, want) {
					t.Errorf("%s: answer differs from a direct call", req.ID)
				}
			}
		})
	}
}

// TestCacheGranularityRequest: a whole request is one entry; a request
// with one row changed is a miss computed in full.
func TestCacheGranularityRequest(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/1ms+0s")
	sc := startSidecar(t, cacheYAML(rt.addr, "", "", "enabled: true, granularity: request"))
	url := sc.url + "/v2/models/m/infer"
	req := rowsRequest(4, 16, 12, 0)
	changed := rowsRequest(4, 16, 12, 0)
	changed.Inputs[0].Data = slices.Clone(changed.Inputs[0].Data)
	changed.Inputs[0].Data[3*16*4] ^= 1 // row 3
	for _, step := range []struct {
		name     string
		req      inference.Request
		bin      bool
		want     string
		computed int
	}{
		{name: "first", req: req, want: cacheMiss, computed: 4},
		{name: "same request", req: req, bin: true, want: cacheHit},
		{name: "one row changed", req: changed, want: cacheMiss, computed: 4},
		{name: "first three rows", req: pick(req, "", 0, 1, 2), want: cacheMiss, computed: 3},
		{name: "changed again", req: changed, bin: true, want: cacheHit},
	} {
		step.req.ID = step.name
		rows0 := rt.rows(t)
		got := cached(t, url, step.req, step.bin, nil, step.want)
		if d := rt.rows(t) - rows0; d != step.computed {
			t.Errorf("%s: runtime computed %d rows, want %d", step.name, d, step.computed)
		}
		if !bytes.Equal(got, rt.direct(t, step.req)) {
			t.Errorf("%s: answer differs from a direct call", step.name)
		}
	}
}

// TestCacheMetrics: the cache's metrics are on the sidecar's /metrics and
// count what the requests did.
func TestCacheMetrics(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/1ms+0s")
	sc := startSidecar(t, cacheYAML(rt.addr, "cache_bytes: 2KiB\n", "", "enabled: true"))
	url := sc.url + "/v2/models/m/infer"
	req := rowsRequest(3, 16, 13, 0)
	cached(t, url, req, false, nil, cacheMiss)                       // 3 misses
	cached(t, url, req, true, nil, cacheHit)                         // 3 hits
	cached(t, url, rowsRequest(6, 16, 13, 1), false, nil, cacheMiss) // 6 misses, evicting
	dup := pick(rowsRequest(1, 16, 13, 2), "dup", 0, 0)              // 2 misses, 1 coalesced
	if r, _, err := send(url, dup, false, nil); err != nil || r.status != http.StatusOK {
		t.Fatalf("%v %d %s", err, r.status, r.body)
	}
	// A request that fails is counted under the cache result its
	// X-Batchmesh-Cache header shows.
	bad, err := http.Post(url, "application/json", strings.NewReader(`{"inputs":[`))
	if err != nil {
		t.Fatal(err)
	}
	bad.Body.Close()
	badCache := bad.Header.Get("X-Batchmesh-Cache")
	if bad.StatusCode != http.StatusBadRequest || badCache == "" {
		t.Fatalf("malformed request: status %d, X-Batchmesh-Cache %q; want 400 and a cache result", bad.StatusCode, badCache)
	}
	d := dumpCache(t, sc)
	m := sc.adminU + "/metrics"
	text := string(get(t, m).body)
	for _, name := range []string{
		"batchmesh_cache_hits_total", "batchmesh_cache_misses_total", "batchmesh_cache_evictions_total",
		"batchmesh_cache_bytes", "batchmesh_cache_entries", "batchmesh_coalesced_total",
	} {
		if !strings.Contains(text, "\n"+name+"{") && !strings.Contains(text, "\n"+name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	const stored = 3 + 6 + 1
	for _, c := range []struct {
		name string
		want float64
	}{
		{"batchmesh_cache_hits_total", 3},
		{"batchmesh_cache_misses_total", 3 + 6 + 2},
		{"batchmesh_coalesced_total", 1},
		{"batchmesh_cache_evictions_total", float64(stored - d.Cache.Entries)},
		{"batchmesh_cache_entries", float64(d.Cache.Entries)},
		{"batchmesh_cache_bytes", float64(d.Cache.Bytes)},
		{`batchmesh_requests_total{cache="hit",code="200",model="m"`, 1},
		{`batchmesh_requests_total{cache="miss",code="200",model="m"`, 3}, // the duplicate-row request computed all it needed: a miss
		{`batchmesh_requests_total{cache="` + badCache + `",code="400",model="m"`, 1},
	} {
		if got := sampleSum(t, m, c.name); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	if d.Cache.Entries <= 0 || d.Cache.Entries >= stored || d.Cache.Bytes <= 0 || d.Cache.Bytes > 2<<10 {
		t.Errorf("cache holds %d entries, %d bytes; want some evicted, within 2KiB", d.Cache.Entries, d.Cache.Bytes)
	}
}
