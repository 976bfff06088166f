package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
)

// Client makes the TLS configs of a client's connections. Its methods are
// safe for concurrent use.
type Client struct {
	pair *watched[*tls.Certificate] // nil: no client certificate
	pool *watched[*x509.CertPool]   // nil: the system roots
}

// NewClient loads f: f.CA verifies the server (the system roots when not
// given); f.Cert and f.Key, when given, are presented as the client
// certificate. log receives reloads and reload failures; nil discards
// them.
func NewClient(f Files, log *slog.Logger) (*Client, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{}
	var err error
	if f.Cert.Path != "" {
		if c.pair, err = newWatched("client certificate "+f.Cert.Path, log, func() (*tls.Certificate, error) { return loadPair(f.Cert, f.Key) }, f.Cert, f.Key); err != nil {
			return nil, err
		}
	}
	if f.CA.Path != "" {
		if c.pool, err = newWatched("server CA "+f.CA.Path, log, func() (*x509.CertPool, error) { return loadPool(f.CA) }, f.CA); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Config returns the TLS config of a new connection: the CA bundle as it
// is now, and a client certificate read again, if changed, at each
// handshake. The result is the caller's.
func (c *Client) Config() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.pool != nil {
		cfg.RootCAs = c.pool.get()
	}
	if c.pair != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.pair.get(), nil
		}
	}
	return cfg
}
