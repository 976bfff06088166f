// Package tlsfiles builds tls.Configs from PEM files that are read again
// when they change, so that a rotated certificate, key or CA bundle is
// used by the next handshake without a restart.
//
// A change is noticed by the file's modification time and size, checked
// (one stat per file) at every handshake: no goroutine, no watcher. A
// Kubernetes Secret volume swaps a symlink, which stat follows. While a
// changed set of files does not load (a certificate written before its
// key), the last good one stays in use and the error is logged once per
// change; the next handshake after the files agree picks them up.
//
// The errors of the first load name the flag, the file and what was wrong,
// for a command's start-up message.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// File is a PEM file and the flag that names it, for error messages.
type File struct {
	Flag string // e.g. "-tls-cert"; may be empty
	Path string // "" when not given
}

func (f File) String() string {
	if f.Flag == "" {
		return f.Path
	}
	return f.Flag + " " + f.Path
}

// Files are the PEM files of one side of a TLS connection.
type Files struct {
	// Cert and Key are this side's certificate chain and private key:
	// both or neither.
	Cert, Key File
	// CA is the bundle that verifies the other side: on a server, client
	// certificates (given, they are required); on a client, the server's
	// certificate (not given, the system roots).
	CA File
}

// stamp identifies one version of a file.
type stamp struct {
	mod  time.Time
	size int64
}

// watched is a value loaded from files, loaded again when their stamps
// change. Its methods are safe for concurrent use.
type watched[T any] struct {
	files []File
	load  func() (T, error)
	log   *slog.Logger
	what  string

	mu     sync.Mutex
	stamps []stamp
	val    T
	failed string // the last failure logged, so that each is logged once
}

// newWatched loads the value once; its error is the start-up error.
func newWatched[T any](what string, log *slog.Logger, load func() (T, error), files ...File) (*watched[T], error) {
	w := &watched[T]{files: files, load: load, log: log, what: what}
	stamps, err := w.stat()
	if err != nil {
		return nil, err
	}
	if w.val, err = load(); err != nil {
		return nil, err
	}
	w.stamps = stamps
	return w, nil
}

func (w *watched[T]) stat() ([]stamp, error) {
	s := make([]stamp, len(w.files))
	for i, f := range w.files {
		fi, err := os.Stat(f.Path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		s[i] = stamp{fi.ModTime(), fi.Size()}
	}
	return s, nil
}

// get returns the value, loaded again first when a file has changed; a
// failed load keeps the last good value.
func (w *watched[T]) get() T {
	w.mu.Lock()
	defer w.mu.Unlock()
	stamps, err := w.stat()
	if err == nil && equal(stamps, w.stamps) {
		return w.val
	}
	var v T
	if err == nil {
		v, err = w.load()
	}
	if err != nil {
		if msg := fmt.Sprint(stamps, err); msg != w.failed {
			w.log.Warn("tls files changed but do not load; the previous ones stay in use", "what", w.what, "err", err)
			w.failed = msg
		}
		return w.val
	}
	w.val, w.stamps, w.failed = v, stamps, ""
	w.log.Info("tls files reloaded", "what", w.what)
	return v
}

func equal(a, b []stamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].mod.Equal(b[i].mod) || a[i].size != b[i].size {
			return false
		}
	}
	return true
}

// loadPair reads and checks a certificate and its key.
func loadPair(cert, key File) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(cert.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cert, err)
	}
	keyPEM, err := os.ReadFile(key.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if _, err := parseCerts(certPEM); err != nil {
		return nil, fmt.Errorf("%s: %w", cert, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s with %s: %w (is the key PEM, and the key of this certificate?)", cert, key, err)
	}
	return &pair, nil
}

// loadPool reads a CA bundle.
func loadPool(ca File) (*x509.CertPool, error) {
	b, err := os.ReadFile(ca.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ca, err)
	}
	certs, err := parseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ca, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

func (f Files) check() error {
	switch {
	case f.Cert.Path == "" && f.Key.Path != "":
		return fmt.Errorf("%s is given without %s: give both", f.Key, f.Cert.Flag)
	case f.Cert.Path != "" && f.Key.Path == "":
		return fmt.Errorf("%s is given without %s: give both", f.Cert, f.Key.Flag)
	}
	return nil
}

var errNoCert = errors.New("no PEM CERTIFICATE block found")
