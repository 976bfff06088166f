package main

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/xdsserver"
)

// stamp identifies a version of the file without reading it.
type stamp struct {
	mtime time.Time
	size  int64
}

func statStamp(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{fi.ModTime(), fi.Size()}, nil
}

// reloader feeds srv with the config file at path whenever the file
// changes. A file that fails to load or translate is refused: the reason is
// logged and kept for /snapshot, and srv keeps its last good snapshot.
type reloader struct {
	path string
	srv  *xdsserver.Server
	log  *slog.Logger
	// update applies a loaded config; nil means srv.Update. The control
	// plane passes its LRS's Update, which keeps the file's config as the
	// base of the adaptive weights.
	update func(context.Context, *config.Config) (string, error)

	// partial loads with config.LoadPartial: models may list no
	// versions (-kubernetes).
	partial bool

	last stamp // owned by the goroutine running run, after load

	// refusals counts batchmesh_xds_config_refused_total; nil counts nothing.
	refusals metric.Int64Counter

	mu      sync.Mutex
	refused int    // bad edits refused so far
	lastErr string // why the last edit was refused; "" after a good one
	ports   string // the model ports of the last good config (modelPorts)
}

// load reads the file and updates srv.
func (r *reloader) load(ctx context.Context) error {
	st, err := statStamp(r.path)
	if err != nil {
		return err
	}
	r.last = st
	load := config.Load
	if r.partial {
		load = config.LoadPartial
	}
	cfg, err := load(r.path)
	if err == nil {
		update := r.update
		if update == nil {
			update = r.srv.Update
		}
		_, err = update(ctx, cfg)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.refused++
		r.lastErr = err.Error()
		if r.refusals != nil {
			r.refusals.Add(context.Background(), 1)
		}
		return err
	}
	r.lastErr = ""
	r.ports = modelPorts(cfg)
	return nil
}

// run polls the file's mtime and size every interval until ctx ends. A
// change is loaded once the file has stayed the same for debounce, so an
// editor's several writes give one reload.
func (r *reloader) run(ctx context.Context, interval, debounce time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := statStamp(r.path)
		if err != nil || st == r.last {
			continue
		}
		// Debounce: wait until two stats debounce apart agree.
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(debounce):
			}
			next, err := statStamp(r.path)
			if err != nil || next == st {
				break
			}
			st = next
		}
		if err := r.load(ctx); err != nil {
			r.log.Error("config reload refused; serving the last good config",
				"file", r.path, "version", r.srv.Version(), "err", err)
			continue
		}
		r.log.Info("config reloaded", "file", r.path, "version", r.srv.Version())
	}
}

// state returns the refusals so far and the last reason.
func (r *reloader) state() (refused int, lastErr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused, r.lastErr
}

// modelPorts returns the ports of the last good config's endpoints: the
// webhook's default captured ports.
func (r *reloader) modelPorts() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ports
}
