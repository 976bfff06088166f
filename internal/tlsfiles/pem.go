package tlsfiles

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// parseCerts parses every CERTIFICATE block of a PEM bundle; other blocks
// are skipped. It fails when a certificate does not parse or none is
// there.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errNoCert
	}
	return certs, nil
}
