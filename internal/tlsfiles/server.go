package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
)

// ServerConfig returns the TLS config of a server: f.Cert and f.Key are
// required; with f.CA, clients must present a certificate that it
// verifies (mutual TLS). Every handshake uses the files' current contents
// (see the package comment). The config offers ALPN "h2", as gRPC needs.
// log receives reloads and reload failures; nil discards them.
func ServerConfig(f Files, log *slog.Logger) (*tls.Config, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	if f.Cert.Path == "" {
		return nil, errors.New("a TLS server needs a certificate and key (" + f.Cert.Flag + ", " + f.Key.Flag + ")")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pair, err := newWatched("server certificate "+f.Cert.Path, log, func() (*tls.Certificate, error) { return loadPair(f.Cert, f.Key) }, f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	var pool *watched[*x509.CertPool]
	if f.CA.Path != "" {
		if pool, err = newWatched("client CA "+f.CA.Path, log, func() (*x509.CertPool, error) { return loadPool(f.CA) }, f.CA); err != nil {
			return nil, err
		}
	}
	each := func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := &tls.Config{
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2"},
			Certificates: []tls.Certificate{*pair.get()},
		}
		if pool != nil {
			c.ClientCAs = pool.get()
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
		return c, nil
	}
	// The outer config is what crypto/tls and gRPC see first; each
	// handshake switches to the one of the current files.
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}, GetConfigForClient: each}, nil
}
