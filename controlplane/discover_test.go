package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/batchmesh/batchmesh/internal/apiservertest"
	"github.com/batchmesh/batchmesh/internal/discovery"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/netnstest"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/sidecartest"
	"github.com/batchmesh/batchmesh/internal/xdsclient"
)

// discoveryBound is how soon after an API write a connected sidecar must
// see the change: the acceptance criterion of Kubernetes discovery.
const discoveryBound = time.Second

// TestAPIServerDiscovery runs everything for real in a network
// namespace of its own: kube-apiserver and etcd, the control plane with
// -kubeconfig, a sidecar with a real -xds client, and three runtimes on
// documentation addresses (192.0.2.10-12, added to the namespace's lo: the
// API server refuses loopback endpoint addresses). Creating, scaling and
// deleting EndpointSlices of a labelled Service reaches the sidecar within
// discoveryBound each time, with zones kept, a duplicate address counted
// once, a terminating endpoint drained (its batch in flight finishes, new
// ones go elsewhere), and requests reach the runtimes the slices name.
func TestAPIServerDiscovery(t *testing.T) {
	if os.Getenv("TEST_ASSET_KUBE_APISERVER") == "" || os.Getenv("TEST_ASSET_ETCD") == "" {
		apiservertest.Start(t) // skips, saying how to get the binaries
	}
	if !netnstest.Enter(t) {
		return
	}
	rts := map[string]*runtimetest.Runtime{}
	for _, ip := range []string{"192.0.2.10", "192.0.2.11", "192.0.2.12"} {
		netnstest.Run(t, "ip", "addr", "add", ip+"/32", "dev", "lo")
		rts[ip] = runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/300ms+0s")},
			runtimetest.Listen(ip+":8000"), runtimetest.WithMetrics())
	}
	// kube-apiserver picks its advertised address from the default route's
	// interface: lo, whose global address is 192.0.2.10.
	netnstest.Run(t, "ip", "route", "add", "default", "dev", "lo")
	a := apiservertest.Start(t)
	kubeconfig := writeKubeconfig(t, a)
	client := kubeClient(t, kubeconfig)
	ctx := t.Context()

	// The file gives model m its batching; discovery gives its versions.
	cfgPath := filepath.Join(t.TempDir(), "models.yaml")
	if err := os.WriteFile(cfgPath, []byte("models:\n  - name: m\n    batching: {max_batch_size: 8, max_queue_delay: 1ms, timeout: 5s}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ads := startDiscovering(t, "-kubeconfig", kubeconfig, "-config", cfgPath)

	// The sidecar connects before the control plane has anything to serve.
	sc := sidecartest.Start(t, sidecar.Config{XDS: xdsclient.Config{Server: ads, NodeID: "app.models"}})

	mustDo(t, func() error {
		_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "models"}}, metav1.CreateOptions{})
		return err
	})
	mustDo(t, func() error {
		_, err := client.CoreV1().Services("models").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "m-v1", Labels: map[string]string{discovery.LabelModel: "m", discovery.LabelVersion: "1"}},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8000}}},
		}, metav1.CreateOptions{})
		return err
	})
	ready := endpointState{ready: true}
	sliceA := slice("m-v1-a", "m-v1", ep("192.0.2.10", "zone-a", ready))
	start := time.Now()
	mustDo(t, func() error {
		_, err := client.DiscoveryV1().EndpointSlices("models").Create(ctx, sliceA, metav1.CreateOptions{})
		return err
	})

	waitEndpoints(t, sc, start, discoveryBound, "192.0.2.10:8000@zone-a")
	wantServiceAddresses(t, client, sc)
	infer(t, sc, 200)
	wantRows(t, rts, map[string]int{"192.0.2.10": 1})

	// Drain: a batch in flight at .10 when the slice marks it terminating
	// (and adds .11) finishes there; the sidecar sends nothing new to it.
	inflight := make(chan int, 1)
	go func() { inflight <- inferCode(sc) }()
	waitInFlight(t, sc, "192.0.2.10:8000")
	sliceA.Endpoints = []discoveryv1.Endpoint{
		ep("192.0.2.10", "zone-a", endpointState{serving: true, terminating: true}),
		ep("192.0.2.11", "zone-b", ready),
	}
	start = time.Now()
	updateSlice(t, client, sliceA)
	waitEndpoints(t, sc, start, discoveryBound, "192.0.2.11:8000@zone-b")
	if code := <-inflight; code != http.StatusOK {
		t.Fatalf("the batch in flight at the draining endpoint got %d, want 200", code)
	}
	infer(t, sc, 200)
	wantRows(t, rts, map[string]int{"192.0.2.10": 2, "192.0.2.11": 1})

	// Scale out with a second slice that lists .11 again: counted once.
	start = time.Now()
	mustDo(t, func() error {
		_, err := client.DiscoveryV1().EndpointSlices("models").Create(ctx,
			slice("m-v1-b", "m-v1", ep("192.0.2.11", "zone-b", ready), ep("192.0.2.12", "zone-c", ready)), metav1.CreateOptions{})
		return err
	})
	waitEndpoints(t, sc, start, discoveryBound, "192.0.2.11:8000@zone-b", "192.0.2.12:8000@zone-c")

	// Delete the second slice: .12 goes, .11 stays by the first.
	start = time.Now()
	mustDo(t, func() error {
		return client.DiscoveryV1().EndpointSlices("models").Delete(ctx, "m-v1-b", metav1.DeleteOptions{})
	})
	waitEndpoints(t, sc, start, discoveryBound, "192.0.2.11:8000@zone-b")

	// Roll on: .10 leaves the slice, .11 is not ready (absent), .12 comes
	// back in zone-c; every request reaches .12.
	sliceA, err := client.DiscoveryV1().EndpointSlices("models").Get(ctx, "m-v1-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sliceA.Endpoints = []discoveryv1.Endpoint{ep("192.0.2.11", "zone-b", endpointState{}), ep("192.0.2.12", "zone-c", ready)}
	start = time.Now()
	updateSlice(t, client, sliceA)
	waitEndpoints(t, sc, start, discoveryBound, "192.0.2.12:8000@zone-c")
	before := rows(t, rts["192.0.2.12"])
	for range 3 {
		infer(t, sc, 200)
	}
	if got := rows(t, rts["192.0.2.12"]); got != before+3 {
		t.Fatalf("runtime 192.0.2.12 served %d rows of 3 sent after the others left", got-before)
	}
}

// endpointState is an EndpointSlice endpoint's conditions.
type endpointState struct{ ready, serving, terminating bool }

func conditions(s endpointState) discoveryv1.EndpointConditions {
	serving := s.serving || s.ready
	return discoveryv1.EndpointConditions{Ready: &s.ready, Serving: &serving, Terminating: &s.terminating}
}

func ep(ip, zone string, s endpointState) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, Zone: &zone, Conditions: conditions(s)}
}

func slice(name, service string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	port, portName := int32(8000), "http"
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}
}

func updateSlice(t *testing.T, client kubernetes.Interface, s *discoveryv1.EndpointSlice) {
	t.Helper()
	mustDo(t, func() error {
		_, err := client.DiscoveryV1().EndpointSlices("models").Update(t.Context(), s, metav1.UpdateOptions{})
		return err
	})
}

func mustDo(t *testing.T, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}

// writeKubeconfig writes a kubeconfig for a's admin token.
func writeKubeconfig(t *testing.T, a *apiservertest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	data := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, a.URL, a.Token)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func kubeClient(t *testing.T, kubeconfig string) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startDiscovering runs the control plane with args (and loopback
// listeners) until the test ends and returns its ADS address.
func startDiscovering(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, append([]string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, args...), testLog{t},
			func(ads, _, _ net.Addr) { addrs <- ads.String() })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("controlplane: %v", err)
		}
	})
	select {
	case a := <-addrs:
		return a
	case err := <-errc:
		t.Fatalf("controlplane: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("controlplane not serving after 30s")
	}
	return ""
}

// testLog writes the control plane's log to the test's.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// sidecarEndpoints lists model m's endpoints in the sidecar's
// /config_dump as "address@zone", sorted.
func sidecarEndpoints(sc *sidecartest.Sidecar) ([]string, error) {
	resp, err := http.Get(sc.AdminURL + "/config_dump")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var dump struct {
		Models []struct {
			Name     string
			Versions []struct {
				Endpoints []struct{ Address, Zone string }
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return nil, err
	}
	var out []string
	for _, m := range dump.Models {
		for _, v := range m.Versions {
			for _, e := range v.Endpoints {
				out = append(out, e.Address+"@"+e.Zone)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// wantServiceAddresses checks that the sidecar's /config_dump gives model
// m's version the ClusterIP the API server allocated to Service m-v1, at
// its port 8000: the address transparent capture takes as the model.
func wantServiceAddresses(t *testing.T, client kubernetes.Interface, sc *sidecartest.Sidecar) {
	t.Helper()
	svc, err := client.CoreV1().Services("models").Get(t.Context(), "m-v1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.ClusterIPs) == 0 || svc.Spec.ClusterIPs[0] == corev1.ClusterIPNone {
		t.Fatalf("service m-v1 has cluster IPs %q; want one allocated", svc.Spec.ClusterIPs)
	}
	var want []string
	for _, ip := range svc.Spec.ClusterIPs {
		want = append(want, net.JoinHostPort(ip, "8000"))
	}
	resp, err := http.Get(sc.AdminURL + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dump struct {
		Models []struct {
			Versions []struct {
				ServiceAddresses []string `json:"service_addresses"`
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		t.Fatal(err)
	}
	if len(dump.Models) != 1 || len(dump.Models[0].Versions) != 1 || !slices.Equal(dump.Models[0].Versions[0].ServiceAddresses, want) {
		t.Fatalf("sidecar config_dump models %+v; want one version with service addresses %q", dump.Models, want)
	}
}

// waitEndpoints polls the sidecar until its endpoints are want, failing t
// if that takes longer than bound from start.
func waitEndpoints(t *testing.T, sc *sidecartest.Sidecar, start time.Time, bound time.Duration, want ...string) {
	t.Helper()
	var got []string
	var err error
	for {
		got, err = sidecarEndpoints(sc)
		if err == nil && slices.Equal(got, want) {
			t.Logf("sidecar sees %v after %v", want, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > bound {
			t.Fatalf("sidecar endpoints after %v: %v (err %v), want %v", bound, got, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitInFlight polls the sidecar's /clusters until a batch is in flight at
// addr (10 s at most).
func waitInFlight(t *testing.T, sc *sidecartest.Sidecar, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(sc.AdminURL + "/clusters")
		if err != nil {
			t.Fatal(err)
		}
		var cs []struct {
			Endpoints []struct {
				Address  string
				InFlight int `json:"in_flight_batches"`
			}
		}
		err = json.NewDecoder(resp.Body).Decode(&cs)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			for _, e := range c.Endpoints {
				if e.Address == addr && e.InFlight > 0 {
					return
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no batch in flight at %s after 10s", addr)
}

const inferBody = `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`

// inferCode sends one request through the sidecar and returns its status
// (0 when it fails).
func inferCode(sc *sidecartest.Sidecar) int {
	resp, err := http.Post(sc.URL+"/v2/models/m/infer", "application/json", bytes.NewReader([]byte(inferBody)))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func infer(t *testing.T, sc *sidecartest.Sidecar, want int) {
	t.Helper()
	if code := inferCode(sc); code != want {
		t.Fatalf("POST /v2/models/m/infer through the sidecar: %d, want %d", code, want)
	}
}

var rowsRE = regexp.MustCompile(`(?m)^model_rows_total\{[^}]*model="m"[^}]*\} (\d+)`)

// rows reads the rows runtime r has served.
func rows(t *testing.T, r *runtimetest.Runtime) int {
	t.Helper()
	resp, err := http.Get(r.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := rowsRE.FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// wantRows checks the rows each runtime has served.
func wantRows(t *testing.T, rts map[string]*runtimetest.Runtime, want map[string]int) {
	t.Helper()
	for ip, r := range rts {
		if got := rows(t, r); got != want[ip] {
			t.Errorf("runtime %s served %d rows, want %d", ip, got, want[ip])
		}
	}
}
