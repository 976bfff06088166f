// Command kube-apiserver is Kubernetes' API server v1.37.2, built from the
// Go module proxy for the tests that need a real one (examples/kubernetes,
// TEST_ASSET_KUBE_APISERVER). It is cmd/kube-apiserver/apiserver.go; go.mod
// replaces every staging module that k8s.io/kubernetes lists at v0.0.0 by
// its v0.37.2. .ci/run builds it: see build.sh.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
