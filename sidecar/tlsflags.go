package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"log/slog"

	"github.com/batchmesh/batchmesh/internal/tlsfiles"
)

// xdsTLSFlags are the files that secure the connection to the control
// plane.
type xdsTLSFlags struct {
	ca, cert, key string
}

func registerXDSTLSFlags(fs *flag.FlagSet) *xdsTLSFlags {
	t := &xdsTLSFlags{}
	fs.StringVar(&t.ca, "xds-ca", "", "connect to -xds over TLS, verifying the control plane's certificate with this PEM CA bundle `file` (re-read when it changes); without it, but with -xds-cert, the system roots")
	fs.StringVar(&t.cert, "xds-cert", "", "PEM client certificate `file` presented to the control plane (mutual TLS; its CN, DNS or URI names must include -node-id for LRS reports to count); re-read when it changes")
	fs.StringVar(&t.key, "xds-key", "", "PEM private key `file` of -xds-cert; re-read when it changes")
	return t
}

// config loads the files and returns the TLS config maker of the xDS
// client, or nil when none is given (plain text).
func (t *xdsTLSFlags) config(server string, log *slog.Logger) (func() *tls.Config, error) {
	if t.ca == "" && t.cert == "" && t.key == "" {
		return nil, nil
	}
	if server == "" {
		return nil, errors.New("-xds-ca, -xds-cert and -xds-key secure the connection to -xds, which is not given")
	}
	c, err := tlsfiles.NewClient(tlsfiles.Files{
		Cert: tlsfiles.File{Flag: "-xds-cert", Path: t.cert},
		Key:  tlsfiles.File{Flag: "-xds-key", Path: t.key},
		CA:   tlsfiles.File{Flag: "-xds-ca", Path: t.ca},
	}, log)
	if err != nil {
		return nil, err
	}
	return c.Config, nil
}
