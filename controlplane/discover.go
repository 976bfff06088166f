package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/discovery"
)

// errNoModels is what publish says while discovery has found no model
// with a ready endpoint and the file lists none with versions.
var errNoModels = errors.New("no model has a ready endpoint yet")

// discoverer serves the merge of the config file (its settings per model)
// and the versions and endpoints discovery finds (discovery.Merge),
// whenever either changes. Its methods are safe for concurrent use.
type discoverer struct {
	w      *discovery.Watcher
	update func(context.Context, *config.Config) (string, error) // the LRS's Update: applies a config
	log    *slog.Logger

	mu      sync.Mutex // orders publishes
	file    *config.Config
	synced  bool     // the watcher's caches have synced
	skipped []string // what the last Build skipped, logged once
	version string   // of the last good publish
}

// newKubeClient returns a client from the kubeconfig file at path, or from
// the pod's in-cluster credentials when path is "".
func newKubeClient(path string) (kubernetes.Interface, error) {
	var rc *rest.Config
	var err error
	if path == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", path)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	rc.UserAgent = "batchmesh-controlplane"
	return kubernetes.NewForConfig(rc)
}

// newDiscoverer returns a discoverer whose watcher uses client.
func newDiscoverer(client kubernetes.Interface, update func(context.Context, *config.Config) (string, error), log *slog.Logger) (*discoverer, error) {
	d := &discoverer{update: update, log: log}
	w, err := discovery.New(discovery.Config{Client: client, Logger: log, Changed: d.changed})
	if err != nil {
		return nil, err
	}
	d.w = w
	return d, nil
}

// setFile publishes with a new config file (config.LoadPartial's). An
// error refuses the file: the last good config keeps being served.
func (d *discoverer) setFile(ctx context.Context, cfg *config.Config) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	prev := d.file
	d.file = cfg
	v, err := d.publishLocked(ctx)
	if errors.Is(err, errNoModels) {
		return v, nil // nothing to serve yet is no fault of the file
	}
	if err != nil {
		d.file = prev
	}
	return v, err
}

// changed publishes what the watcher's caches hold now.
func (d *discoverer) changed(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	first := !d.synced
	d.synced = true
	v, err := d.publishLocked(ctx)
	switch {
	case errors.Is(err, errNoModels):
		if first {
			d.log.Info("kubernetes discovery synced; no labelled Service has a ready endpoint yet", "label", discovery.LabelModel)
		} else {
			d.log.Warn("kubernetes discovery: no model has a ready endpoint; serving the last resources", "version", v)
		}
	case err != nil:
		d.log.Error("kubernetes discovery: config refused; serving the last resources", "version", v, "err", err)
	default:
		d.log.Debug("kubernetes discovery applied", "version", v)
	}
}

// publishLocked merges the file and what the caches hold and applies the
// result; before the caches sync it applies nothing.
func (d *discoverer) publishLocked(ctx context.Context) (string, error) {
	if !d.synced {
		return d.version, nil
	}
	found, err := d.w.Found(discovery.Protocols(d.file))
	if err != nil {
		return d.version, err
	}
	if !slices.Equal(found.Skipped, d.skipped) {
		for _, s := range found.Skipped {
			d.log.Warn("kubernetes discovery skipped", "what", s)
		}
		d.skipped = found.Skipped
	}
	cfg := discovery.Merge(d.file, found.Models)
	if len(cfg.Models) == 0 {
		return d.version, errNoModels
	}
	v, err := d.update(ctx, cfg)
	if err != nil {
		return d.version, err
	}
	d.version = v
	return v, nil
}

// ready says why the control plane is not ready yet, or nil: in this mode
// it is ready once the caches have synced, even with nothing to serve, so
// that its webhook can admit the runtimes it will discover.
func (d *discoverer) ready() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.synced {
		return errors.New("kubernetes discovery has not synced yet")
	}
	return nil
}
