package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/modelrt"
)

// TestDeadVersionLeavesTheSplit: versions 90/10, the 10% one's runtime
// dead. Its share goes to the other version (no request fails), a request
// naming it gets 503, /readyz stays ready, and /clusters and
// batchmesh_version_available show it out. Batched and pass-through alike.
func TestDeadVersionLeavesTheSplit(t *testing.T) {
	good := startRuntime(t, modelrt.Config{}, "b=sim:linear/1ms+0s", "p=sim:linear/1ms+0s")
	dead := startRuntime(t, modelrt.Config{}, "b=sim:linear/1ms+0s", "p=sim:linear/1ms+0s")
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`models:
  - name: b
    batching: {max_batch_size: 8, max_queue_delay: 1ms, timeout: 5s}
    versions: [{version: "1", weight: 90, endpoints: [{address: %[1]s}]}, {version: "2", weight: 10, endpoints: [{address: %[2]s}]}]
  - name: p
    batching: {max_batch_size: 0}
    versions: [{version: "1", weight: 90, endpoints: [{address: %[1]s}]}, {version: "2", weight: 10, endpoints: [{address: %[2]s}]}]
`, good.addr, dead.addr)))
	if err != nil {
		t.Fatal(err)
	}
	sc := startSidecarConfig(t, Config{Models: cfg})
	const gauge = `batchmesh_version_available{model="b",version="2"}`
	if v := metricValue(t, sc.adminU+"/metrics", gauge); v != 1 {
		t.Fatalf("%s = %v before the failure, want 1", gauge, v)
	}
	dead.stop()
	waitFor(t, func() bool {
		return !clusterAvailable(t, sc, "batchmesh|b|2") && !clusterAvailable(t, sc, "batchmesh|p|2")
	})
	if !clusterAvailable(t, sc, "batchmesh|b|1") {
		t.Fatal("/clusters: the healthy version is marked unavailable")
	}

	const n = 300
	for _, model := range []string{"b", "p"} {
		failed := 0
		for i := range n {
			r, _, err := send(sc.url+"/v2/models/"+model+"/infer", rowsRequest(1, 3, 0, i), false, nil)
			if err != nil || r.status != http.StatusOK {
				failed++
				if failed == 1 {
					t.Errorf("%s request %d: %d %v %s", model, i, r.status, err, r.body)
				}
			}
		}
		if failed != 0 {
			t.Errorf("model %s: %d of %d requests failed with version 2 dead, want 0", model, failed, n)
		}
		r, _, _ := send(sc.url+"/v2/models/"+model+"/versions/2/infer", rowsRequest(1, 3, 0, 0), false, nil)
		if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), `version \"2\" of model`) {
			t.Errorf("model %s: request naming the dead version: %d %s, want 503 naming it", model, r.status, r.body)
		}
	}
	if r := get(t, sc.adminU+"/readyz"); r.status != http.StatusOK {
		t.Errorf("/readyz with one version of every model serving: %d %s, want 200", r.status, r.body)
	}
	if v := metricValue(t, sc.adminU+"/metrics", gauge); v != 0 {
		t.Errorf("%s = %v with its runtime dead, want 0", gauge, v)
	}

	good.stop()
	waitFor(t, func() bool { return get(t, sc.adminU+"/readyz").status == http.StatusServiceUnavailable })
}

// clusterAvailable reads one cluster's "available" from /clusters.
func clusterAvailable(t *testing.T, sc *sidecar, cluster string) bool {
	t.Helper()
	var clusters []clusterStatus
	if err := json.Unmarshal(get(t, sc.adminU+"/clusters").body, &clusters); err != nil {
		t.Fatal(err)
	}
	for _, c := range clusters {
		if c.Cluster == cluster {
			return c.Available
		}
	}
	t.Fatalf("/clusters has no %s", cluster)
	return false
}
