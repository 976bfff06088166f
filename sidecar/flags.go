package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/proxy"
	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/xdsclient"
)

// parseFlags turns the command line into the sidecar's Config, with its
// logger writing to stderr. It reads the -config file.
func parseFlags(args []string, stderr io.Writer) (sidecar.Config, error) {
	var cfg sidecar.Config
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Listen, "listen", sidecar.DefaultListen, "inference listener the application calls (with -capture, default "+sidecar.DefaultCaptureListen+": every address, IPv4 and IPv6)")
	fs.StringVar(&cfg.Admin, "admin", sidecar.DefaultAdmin, "admin listener: /healthz /readyz /metrics /config_dump /clusters POST /drain")
	fs.BoolVar(&cfg.Capture.Enabled, "capture", false, "serve the connections `sidecar redirect` captures: original destination, HTTP/1.x to a configured endpoint batched, anything else passed through (docs/capture.md)")
	fs.DurationVar(&cfg.Capture.SniffTimeout, "capture-sniff-timeout", 500*time.Millisecond, "with -capture, how long to wait for a connection's first bytes before splicing it as raw TCP")
	besideIstio := fs.Bool("beside-istio", false, fmt.Sprintf("listen on port %d and admin 127.0.0.1:%d, clear of Envoy's ports (run as user %d; see sidecar redirect -beside-istio)", istioListenPort, istioAdminPort, istioProxyUID))
	cfgPath := fs.String("config", "", "YAML file of models, versions, endpoints, batching and cache (required unless -xds)")
	fs.StringVar(&cfg.XDS.Server, "xds", "", "control plane ADS address host:port; its configuration replaces -config's when it arrives")
	fs.StringVar(&cfg.XDS.NodeID, "node-id", "", "xDS node id (default: the host name)")
	fs.StringVar(&cfg.XDS.NodeCluster, "node-cluster", "batchmesh-sidecars", "xDS node cluster, sent to the control plane (it shows in its logs)")
	xdsTLS := registerXDSTLSFlags(fs)
	fs.StringVar(&cfg.XDS.Protocol, "xds-protocol", xdsclient.ProtocolSotW, "ADS variant: sotw (state of the world) or delta (incremental: only changed resources are sent)")
	fs.StringVar(&cfg.Proxy.Zone, "zone", "", "this sidecar's zone: sent to the control plane, and endpoints of this zone are preferred while they have capacity")
	fs.StringVar(&cfg.Proxy.Balancer, "balancer", "p2c", "endpoint policy: p2c (weighted least-request), wrr (weighted round robin) or ring_hash (affinity on X-Batchmesh-Tenant, bounded load)")
	maxBody := fs.String("max-body", "64MiB", "largest application request body; more is a 413")
	maxInFlight := fs.String("max-body-in-flight", "", "budget of request body bytes read and not yet answered, over every connection; past it a request gets 429 (default 4 × -max-body)")
	fs.DurationVar(&cfg.Proxy.HeaderTimeout, "header-timeout", proxy.DefaultHeaderTimeout, "time allowed to send a request's headers; a slower client is disconnected")
	fs.DurationVar(&cfg.Proxy.BodyTimeout, "body-timeout", proxy.DefaultBodyTimeout, "time allowed to send a request's body, after its headers")
	fs.DurationVar(&cfg.Proxy.IdleTimeout, "idle-timeout", proxy.DefaultIdleTimeout, "an idle keep-alive connection is closed, quietly, after this")
	fs.IntVar(&cfg.Proxy.MaxConns, "max-conns", 0, "inference listener connection limit (default: half the file-descriptor limit, less 64)")
	fs.DurationVar(&cfg.Proxy.ProbeInterval, "probe-interval", time.Second, "how often every endpoint's readiness is probed")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, how long to wait for queued and in-flight requests")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *cfgPath == "" && cfg.XDS.Server == "" {
		return cfg, errors.New("-config FILE or -xds ADDR is required (docs/config.md describes the file)")
	}
	setListeners(fs, &cfg, *besideIstio)
	if p := cfg.XDS.Protocol; p != xdsclient.ProtocolSotW && p != xdsclient.ProtocolDelta {
		return cfg, fmt.Errorf("-xds-protocol %q: want %s or %s", p, xdsclient.ProtocolSotW, xdsclient.ProtocolDelta)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, fmt.Errorf("-log-level: %w", err)
	}
	bodyLimit, err := config.ParseSize(*maxBody)
	if err != nil || bodyLimit <= 0 || bodyLimit > 1<<31-1 {
		return cfg, fmt.Errorf("-max-body %q: want a positive size below 2GiB, like 64MiB", *maxBody)
	}
	cfg.Proxy.MaxBodyBytes = int(bodyLimit)
	if *maxInFlight != "" {
		n, err := config.ParseSize(*maxInFlight)
		if err != nil || n < bodyLimit || n > 1<<40 {
			return cfg, fmt.Errorf("-max-body-in-flight %q: want a size of at least -max-body (%d bytes), like 256MiB", *maxInFlight, bodyLimit)
		}
		cfg.Proxy.MaxBodyBytesInFlight = int(n)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if cfg.XDS.TLS, err = xdsTLS.config(cfg.XDS.Server, cfg.Logger); err != nil {
		return cfg, err
	}
	cfg.XDS.Zone = cfg.Proxy.Zone
	if cfg.XDS.Server != "" && cfg.XDS.NodeID == "" {
		cfg.XDS.NodeID, _ = os.Hostname()
	}
	if *cfgPath != "" {
		if cfg.Models, err = config.Load(*cfgPath); err != nil {
			return cfg, err
		}
		cfg.Source = *cfgPath
	}
	return cfg, nil
}

// setListeners applies the listener defaults of -capture and -beside-istio
// to the flags not given.
func setListeners(fs *flag.FlagSet, cfg *sidecar.Config, besideIstio bool) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["listen"] {
		host := "127.0.0.1"
		if cfg.Capture.Enabled {
			host = ""
		}
		port := sidecar.DefaultListen[strings.LastIndexByte(sidecar.DefaultListen, ':')+1:]
		if besideIstio {
			port = strconv.Itoa(istioListenPort)
		}
		cfg.Listen = net.JoinHostPort(host, port)
	}
	if !set["admin"] && besideIstio {
		cfg.Admin = net.JoinHostPort("127.0.0.1", strconv.Itoa(istioAdminPort))
	}
}
