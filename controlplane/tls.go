package main

import (
	"errors"
	"flag"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/batchmesh/batchmesh/internal/tlsfiles"
)

// tlsFlags are the files that secure the ADS and LRS listener.
type tlsFlags struct {
	cert, key, clientCA string
}

func registerTLSFlags(fs *flag.FlagSet) *tlsFlags {
	t := &tlsFlags{}
	fs.StringVar(&t.cert, "tls-cert", "", "serve ADS and LRS over TLS with this PEM certificate `file` (chain first to last); re-read when it changes")
	fs.StringVar(&t.key, "tls-key", "", "PEM private key `file` of -tls-cert; re-read when it changes")
	fs.StringVar(&t.clientCA, "client-ca", "", "PEM CA bundle `file`: with it, sidecars must present a client certificate it verifies (mutual TLS), and LRS reports are accepted only from a node id that the certificate names; re-read when it changes")
	return t
}

// security is how the ADS and LRS listener is protected.
type security int

const (
	plaintext security = iota
	serverTLS          // TLS, no client certificates
	mutualTLS          // TLS, client certificates required and verified
)

func (t *tlsFlags) mode() security {
	switch {
	case t.cert == "":
		return plaintext
	case t.clientCA == "":
		return serverTLS
	}
	return mutualTLS
}

func (t *tlsFlags) check() error {
	if t.cert == "" && t.key == "" && t.clientCA != "" {
		return errors.New("-client-ca needs -tls-cert and -tls-key: client certificates are only asked for over TLS")
	}
	return nil
}

// serverOption loads the files, or returns no option for plaintext. A
// file that cannot be read or does not fit is an error naming the flag and
// the file.
func (t *tlsFlags) serverOption(log *slog.Logger) ([]grpc.ServerOption, error) {
	if t.mode() == plaintext && t.key == "" {
		return nil, nil
	}
	cfg, err := tlsfiles.ServerConfig(tlsfiles.Files{
		Cert: tlsfiles.File{Flag: "-tls-cert", Path: t.cert},
		Key:  tlsfiles.File{Flag: "-tls-key", Path: t.key},
		CA:   tlsfiles.File{Flag: "-client-ca", Path: t.clientCA},
	}, log)
	if err != nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}, nil
}
