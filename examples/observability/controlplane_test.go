package observability_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// binDir holds the binaries the tests build; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildControlPlane builds ./controlplane once per test binary. The
// control plane is a main package, so the tests run the command itself:
// what they scrape is exactly the admin /metrics Prometheus scrapes.
var buildControlPlane = sync.OnceValues(func() (string, error) {
	goBin, err := exec.LookPath("go") // go test puts its GOROOT/bin first on PATH
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "batchmesh-observability-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "controlplane")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/batchmesh/batchmesh/controlplane").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./controlplane: %w\n%s", err, out)
	}
	return bin, nil
})

// cpProcess is a controlplane process of the test's own, serving a
// config of one model on loopback.
type cpProcess struct {
	adminURL, adsAddr string
	config            string // the -config file
	out               *syncBuffer
}

// The control plane's config: cachedModel at one runtime address.
const controlPlaneYAML = `models:
  - name: ` + cachedModel + `
    versions: [{version: "1", endpoints: [{address: %s, slots: 2}]}]
`

var servingRE = regexp.MustCompile(`msg="controlplane serving" ads=(\S+) admin=(\S+)`)

// startControlPlane runs the control plane with its ADS and admin
// listeners on 127.0.0.1:0 and a config routing cachedModel to
// runtimeAddr, and reads the bound addresses from its log. At cleanup it is
// stopped with SIGINT (killed if it has not exited 10 s later); its output
// is logged if the test failed.
func startControlPlane(t *testing.T, runtimeAddr string) *cpProcess {
	t.Helper()
	bin, err := buildControlPlane()
	if err != nil {
		t.Fatal(err)
	}
	cp := &cpProcess{config: filepath.Join(t.TempDir(), "controlplane.yaml"), out: &syncBuffer{}}
	if err := os.WriteFile(cp.config, fmt.Appendf(nil, controlPlaneYAML, runtimeAddr), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-config", cp.config)
	cmd.Stdout, cmd.Stderr = cp.out, cp.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { defer close(exited); _ = cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("the control plane did not exit 10s after SIGINT")
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("control plane output:\n%s", cp.out.String())
		}
	})

	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := servingRE.FindStringSubmatch(cp.out.String()); m != nil {
			cp.adsAddr, cp.adminURL = m[1], "http://"+m[2]
			return cp
		}
		select {
		case <-exited:
			t.Fatalf("the control plane exited before serving:\n%s", cp.out.String())
		case <-deadline:
			t.Fatalf("the control plane logged no %q line in 30s:\n%s", "controlplane serving", cp.out.String())
		case <-tick.C:
		}
	}
}

// exercise makes every control plane metric appear: an ADS client ACKs the
// clusters and NACKs the listeners it is sent (updates, push-to-ACK time,
// NACKs), then a broken edit of the config file is refused.
func (cp *cpProcess) exercise(t *testing.T) {
	t.Helper()
	cp.subscribe(t)
	cp.refuseEdit(t)
}

// subscribe opens an ADS stream that stays open until cleanup, asks for the
// clusters and ACKs them, then asks for the listeners and NACKs them; it
// returns once /metrics shows the updates, the ACK and the NACK.
func (cp *cpProcess) subscribe(t *testing.T) {
	t.Helper()
	conn, err := grpc.NewClient(cp.adsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	// The deadline bounds every Recv below.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(func() {
		cancel()
		_ = conn.Close()
	})
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &core.Node{Id: "observability-test", Cluster: "sidecars"}
	exchange := func(typ string) *discovery.DiscoveryResponse {
		t.Helper()
		if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			t.Fatalf("ADS request for %s: %v", typ, err)
		}
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("ADS response for %s: %v", typ, err)
		}
		if r.GetTypeUrl() != typ || len(r.GetResources()) == 0 {
			t.Fatalf("ADS response of type %s with %d resources, want %s with some", r.GetTypeUrl(), len(r.GetResources()), typ)
		}
		return r
	}
	clusters := exchange(resource.ClusterType)
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType,
		VersionInfo: clusters.GetVersionInfo(), ResponseNonce: clusters.GetNonce()}); err != nil {
		t.Fatalf("ADS ACK: %v", err)
	}
	listeners := exchange(resource.ListenerType)
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType,
		ResponseNonce: listeners.GetNonce(), ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: "rejected by the observability test"}}); err != nil {
		t.Fatalf("ADS NACK: %v", err)
	}
	// The ACK and the NACK are counted when the server reads them.
	cp.waitFor(t, "the ACK of the clusters and the NACK of the listeners", func(fams families) bool {
		acks, _ := fams.sum("batchmesh_xds_push_ack_seconds")
		nacks, _ := fams.sum("batchmesh_xds_nacks_total")
		return acks >= 1 && nacks >= 1
	})
}

// refuseEdit breaks the config file and waits for the control plane to
// count the refusal (it polls the file every second).
func (cp *cpProcess) refuseEdit(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(cp.config, []byte("models: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A size and an mtime of their own: a change whatever the clock's
	// resolution.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(cp.config, later, later); err != nil {
		t.Fatal(err)
	}
	cp.waitFor(t, "the refusal of a broken config", func(fams families) bool {
		v, _ := fams.sum("batchmesh_xds_config_refused_total")
		return v >= 1
	})
}

// waitFor scrapes /metrics until ok holds, for at most 30 s.
func (cp *cpProcess) waitFor(t *testing.T, what string, ok func(families) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ok(scrape(t, cp.adminURL+"/metrics")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics of the control plane does not show %s after 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
