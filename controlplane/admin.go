package main

import (
	"encoding/json"
	"net/http"

	"github.com/batchmesh/batchmesh/internal/xdsserver"
)

// snapshotState is the JSON of /snapshot.
type snapshotState struct {
	Version string `json:"version"`
	// Resources is what every node is served, by type.
	Resources map[string]xdsserver.TypeState `json:"resources"`
	NACKs     map[string]uint64              `json:"nacks"`
	// Adaptive has the capacity estimate and pushed weight per endpoint.
	Adaptive []xdsserver.EndpointWeight `json:"adaptive,omitempty"`
	Reload   struct {
		Refused   int    `json:"refused"`
		LastError string `json:"last_error,omitempty"`
	} `json:"reload"`
}

// adminHandler serves /healthz, /readyz, /snapshot, with metrics /metrics,
// and with caPEM (the webhook's self-generated CA) /webhook/ca.pem. /readyz
// answers 503 with ready's error until that is nil.
func adminHandler(srv *xdsserver.Server, rl *reloader, lrs *xdsserver.LRS, metrics http.Handler, caPEM []byte, ready func() error) http.Handler {
	mux := http.NewServeMux()
	if caPEM != nil {
		mux.HandleFunc("GET /webhook/ca.pem", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/x-pem-file")
			_, _ = w.Write(caPEM)
		})
	}
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n")) // the client may have gone; nothing to do
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n")) // the client may have gone; nothing to do
	})
	mux.HandleFunc("GET /snapshot", func(w http.ResponseWriter, _ *http.Request) {
		var s snapshotState
		s.Version, s.Resources, s.NACKs = srv.Version(), srv.Served(), srv.NACKs()
		s.Reload.Refused, s.Reload.LastError = rl.state()
		if lrs != nil {
			s.Adaptive = lrs.Weights()
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s)
	})
	return mux
}
