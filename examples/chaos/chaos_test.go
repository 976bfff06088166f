// Package chaos_test is batchmesh's acceptance suite for faults and hostile
// clients, run against the real binaries: it builds sidecar, model and
// controlplane, starts them as processes on loopback, and breaks them while
// 32 clients send one-row requests with a 1 s deadline.
//
// Fault scenarios (this file): a runtime hung with SIGSTOP for 10 s, killed
// with SIGKILL, restarted; the control plane killed and restarted under a
// sidecar configured over xDS; a version whose only runtime dies. In each,
// every request sent gets exactly one answer, a 200 with the bytes the
// runtime gives on a direct call, and the sidecar's and the runtimes'
// Prometheus counters agree with the clients' counts.
//
// Hostile clients (hostile_test.go): header sizes, slow headers, request
// smuggling shapes, floods of idle connections, and the sidecar's peak RSS
// under eight concurrent 60 MB bodies.
//
// docs/chaos.md describes the suite; run it with
//
//	go test -count=1 ./examples/chaos/
package chaos_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// endpointYAML is a sidecar (or control plane) config of model m, one
// version per entry of versions, each a list of runtime addresses. Ejection
// is short (2 s) so that a restarted runtime is back within a scenario.
func endpointYAML(versions ...[]string) string {
	var b strings.Builder
	b.WriteString("outlier_detection: {consecutive_failures: 5, base_ejection_time: 2s, max_ejection_time: 10s, max_ejection_percent: 50}\n")
	b.WriteString("models:\n  - name: m\n    batching: {max_batch_size: 16, max_queue_delay: 1ms, timeout: 1s}\n    versions:\n")
	for i, addrs := range versions {
		fmt.Fprintf(&b, "      - version: %q\n        endpoints:\n", fmt.Sprint(i+1))
		for _, a := range addrs {
			fmt.Fprintf(&b, "          - {address: %q, slots: 2}\n", a)
		}
	}
	return b.String()
}

// rig is two runtimes behind one sidecar with the answers they give.
type rig struct {
	a, b  *runtime
	sc    *sidecarProc
	cases []loadCase
}

// newRig starts two runtimes serving version 1 of m behind a sidecar with a
// static config.
func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{a: startRuntime(t), b: startRuntime(t)}
	r.sc = startSidecar(t, "-config", sidecarConfig(t, endpointYAML([]string{r.a.addr, r.b.addr})))
	r.cases = expectedAnswers(t, r.a, r.b)
	return r
}

// Both thresholds are answered requests, not time: the fault comes once the
// load runs, and the load ends once the sidecar has served a good number
// after the fault.
const (
	answeredBefore = 500
	answeredAfter  = 3000
)

// underLoad runs the clients against r.sc, applies fault once they have
// had answeredBefore answers, keeps them going for answeredAfter more
// answers after fault returns (at most 10 s), and stops them. Then it checks
// both sides' counts: no client failure, the sidecar counted each request
// once, and each runtime of untouched answered exactly the batches the
// sidecar counts as its 200s.
func (r *rig) underLoad(t *testing.T, fault func(), untouched ...*runtime) {
	t.Helper()
	sc0 := scrape(t, r.sc.admin+"/metrics")
	rt0 := make([]metrics, len(untouched))
	for i, u := range untouched {
		rt0[i] = scrape(t, "http://"+u.addr+"/metrics")
	}

	extra0 := unsolicited.n.Load()
	res, stop := startLoad(r.sc.url, r.cases)
	if !waitAnswered(res, answeredBefore, 10*time.Second) {
		stop()
		t.Fatalf("the load did not get %d answers in 10s before the fault: %v", answeredBefore, res)
	}
	start := time.Now()
	fault()
	t.Logf("fault lasted %v", time.Since(start).Round(time.Millisecond))
	after := res.ok.Load() + answeredAfter
	if !waitAnswered(res, after, 10*time.Second) {
		t.Errorf("the load did not get %d more answers within 10s after the fault", answeredAfter)
	}
	stop()
	t.Logf("clients: %v", res)

	if n := unsolicited.n.Load() - extra0; n != 0 {
		t.Errorf("the clients got %d responses no request asked for (a second answer to a request)", n)
	}
	if n := res.sent.Load() - res.ok.Load(); n != 0 {
		t.Errorf("%d of %d requests did not get their right answer: %v", n, res.sent.Load(), res)
	}
	sc1 := scrape(t, r.sc.admin+"/metrics")
	if got := sc1.sum("batchmesh_requests_total", "model", "m") - sc0.sum("batchmesh_requests_total", "model", "m"); got != float64(res.sent.Load()) {
		t.Errorf("the sidecar counted %v requests (batchmesh_requests_total); the clients sent %d", got, res.sent.Load())
	}
	if got := sc1.sum("batchmesh_requests_total", "model", "m", "code", "200") - sc0.sum("batchmesh_requests_total", "model", "m", "code", "200"); got != float64(res.ok.Load()) {
		t.Errorf("the sidecar counted %v 200s; the clients got %d right answers", got, res.ok.Load())
	}
	// A hedged batch is computed twice and answered once: the loser's
	// answer is dropped, so a runtime may compute up to one batch per hedge
	// more than the sidecar took from it.
	hedges := sc1.sum("batchmesh_hedges_total", "model", "m") - sc0.sum("batchmesh_hedges_total", "model", "m")
	for i, u := range untouched {
		rt1 := scrape(t, "http://"+u.addr+"/metrics")
		computed := rt1.sum("model_batch_rows", "model", "m") - rt0[i].sum("model_batch_rows", "model", "m")
		received := sc1.sum("batchmesh_upstream_requests_total", "endpoint", u.addr, "code", "200") -
			sc0.sum("batchmesh_upstream_requests_total", "endpoint", u.addr, "code", "200")
		if computed < received || computed > received+hedges || computed == 0 {
			t.Errorf("runtime %s computed %v batches (model_batch_rows_count); the sidecar counted %v answered 200 (batchmesh_upstream_requests_total) and %v hedges: want computed above 0, and between the answered and the answered plus the hedges",
				u.addr, computed, received, hedges)
		}
	}
}

// waitAnswered waits for res to count n right answers, at most limit.
func waitAnswered(res *loadResult, n int64, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for res.ok.Load() < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// TestHungRuntime stops one runtime with SIGSTOP for 10 s (a stuck GPU
// driver or a long pause looks the same from outside): its connections stay
// open and nothing answers. Batches stuck on it must be sent again to the
// other runtime while their deadlines allow (hedging), and it must stop
// getting new ones (ejection on data-path timeouts). Without the lanes'
// hedging, the requests whose batch was on the hung runtime when it
// stopped (a handful to a few dozen) time out with 504.
func TestHungRuntime(t *testing.T) {
	r := newRig(t)
	r.underLoad(t, func() {
		r.b.proc.signal(t, syscall.SIGSTOP)
		time.Sleep(10 * time.Second) // the scenario: hung for 10 s
		r.b.proc.signal(t, syscall.SIGCONT)
	}, r.a)
}

// TestKilledRuntime kills one runtime with SIGKILL: batches in flight on it
// fail with a broken connection and are retried on the other. The sidecar
// logs the dead endpoint once, not once per failed probe.
func TestKilledRuntime(t *testing.T) {
	r := newRig(t)
	r.underLoad(t, func() {
		r.b.proc.kill()
	}, r.a)
	// The load ran for seconds after the kill: several probe intervals.
	down := regexp.MustCompile(`msg="endpoint down" endpoint=` + regexp.QuoteMeta(r.b.addr) + ` `)
	if n := len(down.FindAllString(r.sc.proc.out.String(), -1)); n != 1 {
		t.Errorf("the sidecar logged %d \"endpoint down\" lines for the dead runtime %s; want one, on the change", n, r.b.addr)
	}
}

// TestRestartedRuntime restarts one runtime (SIGTERM: it reports not ready,
// drains and exits; then it starts again on the same port) and checks that
// the sidecar sends it batches again afterwards.
func TestRestartedRuntime(t *testing.T) {
	r := newRig(t)
	var before float64
	r.underLoad(t, func() {
		r.b.restart(t)
		before = scrape(t, r.sc.admin+"/metrics").sum("batchmesh_upstream_requests_total", "endpoint", r.b.addr, "code", "200")
	}, r.a)
	// The runtime counts from zero after its restart: what it computed since
	// is what the sidecar sent it since.
	got := scrape(t, "http://"+r.b.addr+"/metrics").sum("model_batch_rows", "model", "m")
	after := scrape(t, r.sc.admin+"/metrics").sum("batchmesh_upstream_requests_total", "endpoint", r.b.addr, "code", "200")
	if got == 0 {
		t.Errorf("the restarted runtime %s computed no batch after its restart: it was not taken back into rotation", r.b.addr)
	}
	if after-before > got {
		t.Errorf("the sidecar counted %v batches answered by %s since its restart; the runtime computed %v", after-before, r.b.addr, got)
	}
}

var controlPlaneServing = regexp.MustCompile(`msg="controlplane serving" ads=(\S+) admin=(\S+)`)

// startControlPlane runs the control plane with config file path on the
// given loopback addresses (127.0.0.1:0 for ports the system picks), waits
// until it serves, and returns the process and its ADS and admin
// addresses, where a restart serves again.
func startControlPlane(t *testing.T, ads, admin, path string) (p *proc, adsAddr, adminAddr string) {
	t.Helper()
	p = startProc(t, "controlplane", "-listen", ads, "-admin", admin, "-config", path)
	m := p.waitLog(t, controlPlaneServing)
	return p, m[1], m[2]
}

// TestControlPlaneRestart kills the control plane (SIGKILL) under a sidecar
// run with -xds, changes its config while it is down, and starts it again
// on the same address: the sidecar keeps serving with the configuration it
// had, reconnects, and applies the new one. Both ADS variants.
func TestControlPlaneRestart(t *testing.T) {
	for _, protocol := range []string{"sotw", "delta"} {
		t.Run(protocol, func(t *testing.T) { controlPlaneRestart(t, protocol) })
	}
}

func controlPlaneRestart(t *testing.T, protocol string) {
	a, b := startRuntime(t), startRuntime(t)
	path := sidecarConfig(t, endpointYAML([]string{a.addr, b.addr}))
	cp, ads, admin := startControlPlane(t, "127.0.0.1:0", "127.0.0.1:0", path)
	r := &rig{a: a, b: b, sc: startSidecar(t, "-xds", ads, "-xds-protocol", protocol, "-node-id", "chaos")}
	r.cases = expectedAnswers(t, a, b)

	weighted := strings.Replace(endpointYAML([]string{a.addr, b.addr}), `{address: "`+a.addr+`", slots: 2}`, `{address: "`+a.addr+`", slots: 2, weight: 3}`, 1)
	r.underLoad(t, func() {
		cp.kill()
		if err := os.WriteFile(path, []byte(weighted), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the scenario: the sidecar serves with no control plane for a while
		cp, _, _ = startControlPlane(t, ads, admin, path)
		waitFor(t, 20*time.Second, "the sidecar to apply the restarted control plane's weight 3 for "+a.addr, func() bool {
			return scrape(t, r.sc.admin+"/metrics").sum("batchmesh_endpoint_weight", "endpoint", a.addr) == 3
		})
	}, a, b)
}

// TestDeadVersion splits model m between version 1 (runtime a) and version
// 2 (runtime b, started with -model-version 2), then kills b: version 2
// leaves the split and its share goes to version 1, the requests in flight
// on b are answered by version 1, and only a request that names version 2
// gets a 503, while /readyz stays ready.
func TestDeadVersion(t *testing.T) {
	a, b := startRuntime(t), startRuntime(t, "-model-version", "2")
	r := &rig{a: a, b: b}
	r.sc = startSidecar(t, "-config", sidecarConfig(t, endpointYAML([]string{a.addr}, []string{b.addr})))
	r.cases = expectedAnswers(t, a, b)
	if len(r.cases[0].want) != 2 {
		t.Fatalf("versions 1 and 2 give the same answer; want them told apart by model_version: %s", r.cases[0].want[0])
	}
	r.underLoad(t, func() {
		b.proc.kill()
		waitFor(t, 10*time.Second, "version 2 to leave the split", func() bool {
			m := scrape(t, r.sc.admin+"/metrics")
			return m.sum("batchmesh_version_available", "version", "2") == 0 && m.sum("batchmesh_version_available", "version", "1") == 1
		})
	}, a)

	if status, body := post(t, r.sc.url+"/v2/models/m/versions/2/infer", rowBody(1)); status != http.StatusServiceUnavailable {
		t.Errorf("a request naming the dead version 2: status %d (%s), want 503", status, body)
	}
	if status, body := get(t, r.sc.admin+"/readyz"); status != http.StatusOK {
		t.Errorf("/readyz with version 1 healthy: %d %s, want 200", status, body)
	}
	var clusters []struct {
		Cluster   string `json:"cluster"`
		Available bool   `json:"available"`
	}
	if _, body := get(t, r.sc.admin+"/clusters"); json.Unmarshal(body, &clusters) != nil {
		t.Fatalf("/clusters is not a JSON list of clusters: %s", body)
	}
	for _, c := range clusters {
		if want := c.Cluster == "batchmesh|m|1"; c.Available != want {
			t.Errorf("/clusters: %s available %v, want %v", c.Cluster, c.Available, want)
		}
	}
	if len(clusters) != 2 {
		t.Errorf("/clusters lists %d clusters, want 2 (one per version)", len(clusters))
	}
}

// waitFor polls cond every 50 ms until it holds, failing t after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
