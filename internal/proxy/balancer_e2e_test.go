package proxy

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/modelrt"
)

func twoEndpoints(t *testing.T, zoneA, zoneB string, weightA, weightB int) (*config.Config, string, string) {
	t.Helper()
	a := startRuntime(t, modelrt.Config{}, "m=sim:linear/0s+0s")
	b := startRuntime(t, modelrt.Config{}, "m=sim:linear/0s+0s")
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`models:
  - name: m
    batching: {max_batch_size: 8, timeout: 5s}
    hedging: {p99_multiple: 0} # a hedge would answer from the endpoint the balancer did not pick
    versions: [{version: "1", endpoints: [{address: %s, weight: %d, zone: %s}, {address: %s, weight: %d, zone: %s}]}]
`, a.addr, weightA, zoneA, b.addr, weightB, zoneB)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, a.addr, b.addr
}

// upstreams sends n sequential one-row requests (so each is its own batch)
// with the given tenant and counts X-Batchmesh-Upstream.
func upstreams(t *testing.T, url, tenant string, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := range n {
		h := map[string]string{}
		if tenant != "" {
			h[HeaderTenant] = tenant
		}
		r, _, err := send(url, rowsRequest(1, 2, i, 0), false, h)
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("request %d: %v %d %s", i, err, r.status, r.body)
		}
		counts[r.header.Get(HeaderUpstream)]++
	}
	return counts
}

func TestBalancerWRRFollowsWeights(t *testing.T) {
	cfg, a, b := twoEndpoints(t, "x", "x", 3, 1)
	// One probe at start only: a periodic probe that times out on a busy
	// machine takes an endpoint out for a moment, and the count with it.
	sc := startSidecarConfig(t, Config{Models: cfg, Balancer: BalancerWRR, ProbeInterval: time.Hour})
	counts := upstreams(t, sc.url+"/v2/models/m/infer", "", 400)
	if counts[a] != 300 || counts[b] != 100 {
		t.Errorf("wrr with weights 3:1 sent %v, want exactly 300 and 100", counts)
	}
}

func TestBalancerRingHashKeepsTenants(t *testing.T) {
	cfg, a, b := twoEndpoints(t, "x", "x", 1, 1)
	sc := startSidecarConfig(t, Config{Models: cfg, Balancer: BalancerRingHash})
	url := sc.url + "/v2/models/m/infer"
	seen := map[string]bool{}
	for i := range 20 {
		tenant := fmt.Sprint("tenant-", i)
		counts := upstreams(t, url, tenant, 10)
		if len(counts) != 1 {
			t.Errorf("tenant %s spread over %v; want one endpoint", tenant, counts)
		}
		for ep := range counts {
			seen[ep] = true
		}
	}
	if !seen[a] || !seen[b] {
		t.Errorf("20 tenants all hashed to %v; want both endpoints used", seen)
	}
}

func TestBalancerPrefersLocalZone(t *testing.T) {
	cfg, a, _ := twoEndpoints(t, "local", "far", 1, 1)
	sc := startSidecarConfig(t, Config{Models: cfg, Zone: "local"})
	if counts := upstreams(t, sc.url+"/v2/models/m/infer", "", 50); counts[a] != 50 {
		t.Errorf("with an idle local endpoint the sidecar sent %v; want all 50 local", counts)
	}
}

func TestBalancerUnknown(t *testing.T) {
	if _, err := New(Config{Balancer: "random"}); err == nil {
		t.Error("balancer random accepted")
	}
}
