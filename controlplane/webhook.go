package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/batchmesh/batchmesh/internal/inject"
)

// webhookFlags are the flags of the injection webhook.
type webhookFlags struct {
	addr     string // "" turns the webhook off
	hosts    string // comma-separated names of the self-generated certificate
	certDir  string // tls.crt and tls.key, e.g. from cert-manager
	caOut    string // where to write the self-generated CA
	config   string // the MutatingWebhookConfiguration whose caBundle to fill
	settings func() (inject.Settings, error)
}

func registerWebhookFlags(fs *flag.FlagSet) *webhookFlags {
	w := &webhookFlags{}
	fs.StringVar(&w.addr, "webhook", "", "injection webhook HTTPS `address`, e.g. :15017 (default off): AdmissionReview v1 on /inject and /inject/istio")
	fs.StringVar(&w.hosts, "webhook-hosts", "batchmesh-controlplane.batchmesh-system.svc", "comma-separated DNS `names` (or IPs) of the self-generated serving certificate")
	fs.StringVar(&w.certDir, "webhook-cert-dir", "", "a `directory` with tls.crt and tls.key (e.g. a cert-manager Secret), read at each handshake, instead of a self-generated certificate")
	fs.StringVar(&w.caOut, "webhook-ca-out", "", "write the self-generated certificate's CA (PEM, the webhook configuration's caBundle) to this `file`")
	fs.StringVar(&w.config, "webhook-config", "", "at start, fill the caBundle of this MutatingWebhookConfiguration `name` with the self-generated CA (in-cluster credentials)")
	w.settings = injectFlags(fs)
	return w
}

// webhook is a started injection webhook.
type webhook struct {
	lis   net.Listener
	srv   *http.Server
	caPEM []byte // nil with -webhook-cert-dir
}

// newWebhook opens the webhook's TLS listener; the caller serves it.
// ports gives the default captured ports at each request. With
// -webhook-config it fills that configuration's caBundle first, through
// api (nil: the in-cluster API).
func newWebhook(ctx context.Context, f *webhookFlags, ports func() string, api *kubeAPI, log *slog.Logger) (*webhook, error) {
	s, err := f.settings()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var caPEM []byte
	if f.certDir != "" {
		if f.config != "" {
			return nil, errors.New("-webhook-config fills the caBundle with the self-generated CA; with -webhook-cert-dir let cert-manager's CA injector fill it")
		}
		crt, key := filepath.Join(f.certDir, "tls.crt"), filepath.Join(f.certDir, "tls.key")
		if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
			return nil, fmt.Errorf("-webhook-cert-dir: %w", err)
		}
		// cert-manager renews the files in place: read them at each handshake.
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(crt, key)
			return &c, err
		}
	} else {
		var hosts []string
		for h := range strings.SplitSeq(f.hosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hosts = append(hosts, h)
			}
		}
		if len(hosts) == 0 {
			return nil, errors.New("-webhook-hosts: want at least one DNS name or IP address")
		}
		cert, err := inject.NewServingCert(hosts, time.Now())
		if err != nil {
			return nil, err
		}
		cfg.Certificates, caPEM = []tls.Certificate{cert.Cert}, cert.CAPEM
		if f.caOut != "" {
			if err := os.WriteFile(f.caOut, caPEM, 0o644); err != nil {
				return nil, fmt.Errorf("-webhook-ca-out: %w", err)
			}
		}
		log.Info("webhook serving certificate generated", "hosts", hosts,
			"ca_bundle", base64.StdEncoding.EncodeToString(caPEM))
		if f.config != "" {
			if err := fillCABundle(ctx, api, f.config, caPEM, log); err != nil {
				return nil, err
			}
		}
	}
	lis, err := net.Listen("tcp", f.addr)
	if err != nil {
		return nil, fmt.Errorf("-webhook: %w", err)
	}
	wh := &inject.Webhook{Settings: s, DefaultPorts: ports, Logger: log}
	srv := &http.Server{Handler: wh.Handler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	return &webhook{lis: tls.NewListener(lis, cfg), srv: srv, caPEM: caPEM}, nil
}

// fillCABundle writes caPEM into the caBundle of the MutatingWebhookConfiguration name.
func fillCABundle(ctx context.Context, api *kubeAPI, name string, caPEM []byte, log *slog.Logger) error {
	if api == nil {
		var err error
		if api, err = inClusterAPI(serviceAccountDir, os.Getenv); err != nil {
			return fmt.Errorf("-webhook-config %s: %w", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := api.fillCABundle(ctx, name, caPEM)
	if err != nil {
		return fmt.Errorf("-webhook-config %s: %w", name, err)
	}
	log.Info("webhook caBundle filled", "mutatingwebhookconfiguration", name, "webhooks", n)
	return nil
}
