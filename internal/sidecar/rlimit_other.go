//go:build !unix

package sidecar

import "errors"

// raiseNoFile has no file-descriptor limit to raise here.
func raiseNoFile() (uint64, error) {
	return 0, errors.New("sidecar: no file-descriptor limit on this system")
}
