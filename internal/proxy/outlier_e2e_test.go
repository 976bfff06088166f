package proxy

import (
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/health"
	"github.com/batchmesh/batchmesh/internal/modelrt"
)

// TestOutlierEjectedFromDataPath: an endpoint that passes every probe but
// answers every call with a 500 is ejected after five failed calls in a
// row, and its peer takes every request after that.
func TestOutlierEjectedFromDataPath(t *testing.T) {
	good := startRuntime(t, modelrt.Config{}, "p=sim:linear/1ms+0s")
	var calls atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bad := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet { // probes: ready
			fmt.Fprint(w, `{"name":"bad","version":"1","extensions":[]}`)
			return
		}
		calls.Add(1)
		http.Error(w, `{"error":"boom"}`, http.StatusInternalServerError)
	})}
	go func() { _ = bad.Serve(ln) }()
	t.Cleanup(func() { bad.Close() })
	badAddr := ln.Addr().String()
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`models:
  - name: p
    batching: {max_batch_size: 0}
    versions: [{version: "1", endpoints: [{address: %s}, {address: %s}]}]
`, good.addr, badAddr)))
	if err != nil {
		t.Fatal(err)
	}
	sc := startSidecarConfig(t, Config{Models: cfg})
	for i := 0; calls.Load() < 5; i++ {
		if i > 1000 {
			t.Fatalf("the bad endpoint got %d calls in 1000 requests", calls.Load())
		}
		_, _, _ = send(sc.url+"/v2/models/p/infer", rowsRequest(1, 3, 0, i), false, nil)
	}
	if !sc.p.health.Ejected(badAddr) {
		t.Fatal("not ejected after 5 failed calls in a row")
	}
	for i := range 100 {
		r, _, err := send(sc.url+"/v2/models/p/infer", rowsRequest(1, 3, 0, i), false, nil)
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("request %d after the ejection: %d %v %s", i, r.status, err, r.body)
		}
	}
	if n := calls.Load(); n != 5 {
		t.Errorf("the ejected endpoint got %d calls, want 5 (none after its ejection, probes passing)", n)
	}
}

// TestOutlierSettingsFromTheFile: the file's outlier_detection reaches the
// health table; consecutive_failures 0 and enforcing_failure_percentage 0
// turn their ejections off; a Config built in
// code (zero value) takes the defaults.
func TestOutlierSettingsFromTheFile(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(`outlier_detection: {consecutive_failures: 0, base_ejection_time: 2s, max_ejection_percent: 50, enforcing_failure_percentage: 0, failure_percentage_threshold: 60}
models:
  - name: p
    versions: [{version: "1", endpoints: [{address: 127.0.0.1:1}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := health.Outlier{ConsecutiveFailures: -1, BaseEjectionTime: 2 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 50,
		Interval: 10 * time.Second, FailurePercentageThreshold: 60, FailurePercentageMinimumHosts: 5, FailurePercentageRequestVolume: 50, EnforcingFailurePercentage: -1}
	if got := outlierOf(cfg); got != want {
		t.Errorf("outlierOf = %+v, want %+v", got, want)
	}
	if got := outlierOf(&config.Config{}); got != (health.Outlier{}) {
		t.Errorf("outlierOf(zero) = %+v, want the zero value (the defaults)", got)
	}
}
