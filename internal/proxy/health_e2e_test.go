package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/modelrt"
)

// TestOneHealthView: a batch that finds its runtime gone takes the endpoint
// down for everything that sends there — the pass-through model on the same
// runtime included — at once, not at the next probe (the probe interval is
// an hour here, so only the data path can have told).
func TestOneHealthView(t *testing.T) {
	rt := startRuntime(t, modelrt.Config{}, "b=sim:linear/1ms+0s", "p=sim:linear/1ms+0s")
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`models:
  - name: b
    batching: {max_batch_size: 8, timeout: 2s}
    versions: [{version: "1", endpoints: [{address: %[1]s}]}]
  - name: p
    batching: {max_batch_size: 0}
    versions: [{version: "1", endpoints: [{address: %[1]s}]}]
`, rt.addr)))
	if err != nil {
		t.Fatal(err)
	}
	sc := startSidecarConfig(t, Config{Models: cfg, ProbeInterval: time.Hour})
	if r, _, err := send(sc.url+"/v2/models/p/infer", rowsRequest(1, 3, 0, 0), false, nil); err != nil || r.status != http.StatusOK {
		t.Fatalf("pass-through before the failure: %d %v %s", r.status, err, r.body)
	}
	rt.stop()
	if r, _, _ := send(sc.url+"/v2/models/b/infer", rowsRequest(1, 3, 0, 1), false, nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("batched request to a dead runtime: %d %s, want 503", r.status, r.body)
	}
	resp, err := http.Get(sc.adminU + "/clusters")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var clusters []clusterStatus
	if err := json.NewDecoder(resp.Body).Decode(&clusters); err != nil {
		t.Fatal(err)
	}
	for _, c := range clusters {
		if len(c.Endpoints) != 1 || c.Endpoints[0].Healthy {
			t.Errorf("%s: endpoints %+v, want the dead runtime marked unhealthy", c.Cluster, c.Endpoints)
		}
	}
	r, _, _ := send(sc.url+"/v2/models/p/infer", rowsRequest(1, 3, 0, 2), false, nil)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "no healthy endpoint") {
		t.Errorf("pass-through after the batch failure: %d %s, want 503 naming no healthy endpoint", r.status, r.body)
	}
}
