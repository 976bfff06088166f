package xdsserver

import (
	"context"
	"crypto/x509"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// AuthorizeNode checks that the peer of ctx, a gRPC stream's context,
// presented a TLS client certificate that the server verified, and that
// nodeID is one of its identities (Identities). It returns a gRPC
// Unauthenticated status without a verified certificate, PermissionDenied
// when the node id is not the certificate's.
func AuthorizeNode(ctx context.Context, nodeID string) error {
	leaf := verifiedClientCert(ctx)
	if leaf == nil {
		return status.Error(codes.Unauthenticated, "xdsserver: load reports need a verified TLS client certificate")
	}
	ids := Identities(leaf)
	if !slices.Contains(ids, nodeID) {
		return status.Errorf(codes.PermissionDenied, "xdsserver: node id %q is not an identity of the client certificate %v", nodeID, ids)
	}
	return nil
}

// Identities are the names a certificate vouches for, any of which a node
// id may be: its subject common name, DNS names and URIs (a SPIFFE id
// such as spiffe://cluster.local/ns/ml/sa/bert is one).
func Identities(c *x509.Certificate) []string {
	var ids []string
	if c.Subject.CommonName != "" {
		ids = append(ids, c.Subject.CommonName)
	}
	ids = append(ids, c.DNSNames...)
	for _, u := range c.URIs {
		ids = append(ids, u.String())
	}
	return ids
}

// verifiedClientCert returns the leaf of the peer's verified chain, or nil
// when the connection is not TLS or the server verified no certificate.
func verifiedClientCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}
