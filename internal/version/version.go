// Package version is the build's version, stamped at link time:
//
//	go build -ldflags "-X github.com/batchmesh/batchmesh/internal/version.stamp=v1.2.3" ./sidecar
//
// Without a stamp it is the main module's version from the build
// information (a tagged `go install`), or "devel".
package version

import "runtime/debug"

// stamp is set by the linker (-X); it is never written at run time.
var stamp string

// String returns the version: the linker stamp, else the module version,
// else "devel".
func String() string {
	if stamp != "" {
		return stamp
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// Requested reports whether args (a command line without the program name)
// ask for the version: -version or --version among the flags.
func Requested(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-version", "--version", "-version=true", "--version=true":
			return true
		}
	}
	return false
}
