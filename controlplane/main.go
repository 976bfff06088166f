// Command controlplane serves batchmesh's xDS resources over ADS (SotW and
// delta) from the YAML config of docs/config.md, reloading it when the file
// changes.
//
// Flags:
//
//	-listen ADDR   ADS gRPC address (default 127.0.0.1:18000)
//	-admin ADDR    admin HTTP address (default 127.0.0.1:18001): /healthz, /readyz, /metrics, /snapshot
//	-config FILE   the config file (required without -kubernetes); polled every second
//	-kubernetes    discover runtimes from labelled Services and their EndpointSlices (in-cluster credentials)
//	-kubeconfig F  the same, with the credentials of a kubeconfig file
//	-tls-cert FILE, -tls-key FILE   serve ADS and LRS over TLS
//	-client-ca FILE                 and require client certificates (mTLS)
//
// `controlplane inject -f IN [-o OUT]` applies the injection template of
// internal/inject to a multi-document YAML file instead (docs/kubernetes.md).
//
// A bad edit of the file is refused with the reason in the log and on
// /snapshot, and the last good snapshot keeps being served. SIGTERM or
// SIGINT ends the streams and stops gracefully.
//
// /metrics serves, in the Prometheus text format, the metrics of package
// xdsserver: batchmesh_xds_updates_total, batchmesh_xds_nacks_total and
// batchmesh_xds_push_ack_seconds, each by {type}.
//
// The same gRPC address serves envoy.service.load_stats.v3 (LRS): sidecars
// report per-endpoint load there, and with weights: adaptive in the file
// the control plane sets the endpoint weights from it (xdsserver.LRS);
// /snapshot shows the estimates and weights under "adaptive".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/metric"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/batchmesh/batchmesh/internal/telemetry"
	"github.com/batchmesh/batchmesh/internal/version"
	"github.com/batchmesh/batchmesh/internal/xdsserver"
)

func main() {
	if version.Requested(os.Args[1:]) {
		fmt.Println("controlplane", version.String())
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "inject" {
		err := runInject(os.Args[2:], os.Stdin, os.Stdout, os.Stderr)
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "controlplane:", err)
			os.Exit(2)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr, nil)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		stop()
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(2)
	}
}

// run serves until ctx ends. If ready is not nil, it receives the bound ADS,
// admin and webhook addresses once all listen (webhook nil when off).
func run(ctx context.Context, args []string, stderr io.Writer, ready func(ads, admin, webhook net.Addr)) error {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	// A listener that fails ends the background work too, not only a signal.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	metrics, err := telemetry.NewMetrics()
	if err != nil {
		return err
	}
	defer metrics.Close(context.Background())
	creds, err := f.tls.serverOption(log)
	if err != nil {
		return err
	}
	srv, lrs, rl, disc, err := newControlPlane(ctx, f, log, metrics)
	if err != nil {
		return err
	}
	readiness := func() error {
		if srv.Version() == "" {
			return errors.New("no config loaded")
		}
		return nil
	}
	if disc != nil {
		readiness = disc.ready
	}
	servers, err := listen(ctx, f, rl, log)
	if err != nil {
		return err
	}

	g := newGRPCServer(creds...)
	// The xDS streams end when ctx does, which lets GracefulStop finish.
	srv.Register(ctx, g)
	lrs.Register(g)
	hs := &http.Server{Handler: adminHandler(srv, rl, lrs, metrics.Handler(), servers.caPEM(), readiness), ReadHeaderTimeout: 5 * time.Second}

	errc := make(chan error, 4)
	go func() { errc <- g.Serve(servers.ads) }()
	go func() { errc <- hs.Serve(servers.admin) }()
	if servers.webhook != nil {
		go func() { errc <- servers.webhook.srv.Serve(servers.webhook.lis) }()
	}
	wait := startBackground(ctx, rl, disc, lrs, errc)
	warnIfExposed(log, "ADS and LRS", servers.ads.Addr(), f.tls.mode())
	warnIfExposed(log, "admin", servers.admin.Addr(), plaintext)
	log.Info("controlplane serving", "ads", servers.ads.Addr().String(), "admin", servers.admin.Addr().String(),
		"webhook", servers.webhookAddr(), "version", srv.Version())
	if ready != nil {
		ready(servers.ads.Addr(), servers.admin.Addr(), servers.webhookAddr())
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	log.Info("controlplane stopping")
	cancel()
	stopServers(g, hs, servers.webhook)
	wait()
	if errors.Is(serveErr, http.ErrServerClosed) || errors.Is(serveErr, grpc.ErrServerStopped) {
		serveErr = nil
	}
	return serveErr
}

// startBackground runs the config file's reloader, Kubernetes discovery
// (its error ends run through errc) and the adaptive weights until ctx
// ends; wait returns once all three have stopped.
func startBackground(ctx context.Context, rl *reloader, disc *discoverer, lrs *xdsserver.LRS, errc chan<- error) (wait func()) {
	var wg sync.WaitGroup
	if rl.path != "" {
		wg.Go(func() { rl.run(ctx, time.Second, 100*time.Millisecond) })
	}
	if disc != nil {
		wg.Go(func() {
			if err := disc.w.Run(ctx); err != nil {
				errc <- err
			}
		})
	}
	wg.Go(func() { lrs.Run(ctx) })
	return wg.Wait
}

// flags are the command line's settings.
type flags struct {
	listen  string // ADS gRPC address
	admin   string // admin HTTP address
	config  string // config file; may be "" with discover
	webhook *webhookFlags
	tls     *tlsFlags
	// discover turns on Kubernetes discovery, with the credentials of
	// kubeconfig, or in-cluster ones when that is "".
	discover   bool
	kubeconfig string
}

func parseFlags(args []string, stderr io.Writer) (flags, error) {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:18000", "ADS and LRS gRPC `address` (without -tls-cert and -client-ca, set a reachable address, e.g. :18000, only behind a network policy)")
	adminAddr := fs.String("admin", "127.0.0.1:18001", "admin HTTP `address`: /healthz, /readyz, /metrics, /snapshot")
	path := fs.String("config", "", "config `file` (required without -kubernetes: then its models may list no versions)")
	webhook := registerWebhookFlags(fs)
	tls := registerTLSFlags(fs)
	kubernetes := fs.Bool("kubernetes", false, "discover runtimes from Services labelled batchmesh.io/model and their EndpointSlices, with the pod's in-cluster credentials")
	kubeconfig := fs.String("kubeconfig", "", "discover runtimes as -kubernetes does, with the credentials of this kubeconfig `file`")
	fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return flags{}, err
	}
	discover := *kubernetes || *kubeconfig != ""
	if *path == "" && !discover {
		return flags{}, errors.New("-config is required (or -kubernetes or -kubeconfig, to discover the runtimes)")
	}
	if err := tls.check(); err != nil {
		return flags{}, err
	}
	return flags{listen: *listen, admin: *adminAddr, config: *path, webhook: webhook, tls: tls, discover: discover, kubeconfig: *kubeconfig}, nil
}

// newControlPlane builds the xDS server, its LRS server (requiring client
// certificates with f's -client-ca), the reloader of the config file and,
// with f.discover, the discoverer that merges the file with what
// Kubernetes holds (nil without); it loads the file.
func newControlPlane(ctx context.Context, f flags, log *slog.Logger, metrics *telemetry.Metrics) (*xdsserver.Server, *xdsserver.LRS, *reloader, *discoverer, error) {
	srv := xdsserver.New(xdsserver.Config{Logger: log, Meter: metrics.Meter("batchmesh/controlplane")})
	lrs := xdsserver.NewLRS(srv, xdsserver.LRSConfig{Logger: log, RequireClientCert: f.tls.mode() == mutualTLS})
	refusals, err := metrics.Meter("batchmesh/controlplane").Int64Counter("batchmesh_xds_config_refused",
		metric.WithDescription("Edits of the -config file refused (the last good config kept serving)."))
	if err != nil {
		return nil, nil, nil, nil, err
	}
	rl := &reloader{path: f.config, srv: srv, log: log, update: lrs.Update, refusals: refusals}
	var disc *discoverer
	if f.discover {
		client, err := newKubeClient(f.kubeconfig)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		if disc, err = newDiscoverer(client, lrs.Update, log); err != nil {
			return nil, nil, nil, nil, err
		}
		rl.update, rl.partial = disc.setFile, true
	}
	if rl.path != "" {
		if err := rl.load(ctx); err != nil {
			return nil, nil, nil, nil, err
		}
	}
	return srv, lrs, rl, disc, nil
}

// listeners are the control plane's open listeners.
type listeners struct {
	ads, admin net.Listener
	webhook    *webhook // nil when -webhook is not given
}

func (l *listeners) webhookAddr() net.Addr {
	if l.webhook == nil {
		return nil
	}
	return l.webhook.lis.Addr()
}

func (l *listeners) caPEM() []byte {
	if l.webhook == nil {
		return nil
	}
	return l.webhook.caPEM
}

// listen opens the ADS, admin and (with -webhook) webhook listeners, or
// none. The webhook's default captured ports are rl's current model ports.
func listen(ctx context.Context, f flags, rl *reloader, log *slog.Logger) (*listeners, error) {
	ads, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, err
	}
	admin, err := net.Listen("tcp", f.admin)
	if err != nil {
		ads.Close()
		return nil, err
	}
	l := &listeners{ads: ads, admin: admin}
	if f.webhook.addr != "" {
		if l.webhook, err = newWebhook(ctx, f.webhook, rl.modelPorts, nil, log); err != nil {
			ads.Close()
			admin.Close()
			return nil, err
		}
	}
	return l, nil
}

func newGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append([]grpc.ServerOption{
		grpc.MaxConcurrentStreams(1_000_000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 30 * time.Second, PermitWithoutStream: true}),
	}, opts...)...)
}

// stopServers stops g gracefully, or at once when that takes over 5
// seconds, and then shuts hs and the webhook (if any) down, waiting up to 5
// seconds more.
func stopServers(g *grpc.Server, hs *http.Server, wh *webhook) {
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		g.Stop()
		<-stopped
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutdownCtx)
	if wh != nil {
		_ = wh.srv.Shutdown(shutdownCtx)
	}
}
