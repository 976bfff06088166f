package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/batchmesh/batchmesh/internal/redirect"
)

// Beside-Istio defaults: Envoy owns 1337, 15000, 15001, 15006 and the
// other 150xx ports; batchmesh takes its own user and ports next to them.
const (
	istioProxyUID   = 1338
	istioEnvoyUID   = 1337
	istioListenPort = 15201
	istioAdminPort  = 15200
)

// runRedirect is `sidecar redirect`: program (or -clean, or print with
// -dry-run) the NAT rules that send the application's outbound TCP to the
// sidecar. docs/capture.md describes them.
func runRedirect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sidecar redirect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ports := fs.String("ports", "", "captured TCP destination ports: a list like 8000,8080 or 9000-9100, or * for all (required)")
	excludePorts := fs.String("exclude-ports", "", "destination ports never captured, e.g. 5432 with -ports '*'")
	include := fs.String("include-cidrs", "", "capture only these destinations, e.g. 10.0.0.0/8,fd00::/8 (default: all)")
	exclude := fs.String("exclude-cidrs", "", "destinations never captured (127.0.0.1 and ::1 never are)")
	proxyPort := fs.Uint("proxy-port", redirect.DefaultProxyPort, "the sidecar's capture listener port (sidecar -capture -listen)")
	proxyUID := fs.Uint("proxy-uid", redirect.DefaultProxyUID, "the sidecar's user id: its own connections are never captured")
	proxyGID := fs.Int64("proxy-gid", -1, "a group id whose connections are never captured (-1: none)")
	excludeUIDs := fs.String("exclude-uids", "", "other user ids never captured, e.g. Envoy's 1337 beside Istio")
	priority := fs.Int("priority", redirect.DefaultPriority, "the NAT output chain's priority; below Istio's -100 so that batchmesh sees connections first")
	besideIstio := fs.Bool("beside-istio", false, fmt.Sprintf("defaults for a pod with Istio's sidecar: -proxy-port %d -proxy-uid %d -exclude-uids %d", istioListenPort, istioProxyUID, istioEnvoyUID))
	clean := fs.Bool("clean", false, "remove the rules (the table inet batchmesh) and exit")
	dryRun := fs.Bool("dry-run", false, "print the rules in nft syntax and change nothing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("redirect: unexpected argument %q", fs.Arg(0))
	}
	if *clean {
		return redirect.Clean()
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *besideIstio {
		if !set["proxy-port"] {
			*proxyPort = istioListenPort
		}
		if !set["proxy-uid"] {
			*proxyUID = istioProxyUID
		}
		if !set["exclude-uids"] {
			*excludeUIDs = fmt.Sprint(istioEnvoyUID)
		}
	}
	o, err := redirectOptions(*ports, *excludePorts, *include, *exclude, *excludeUIDs)
	if err != nil {
		return err
	}
	if *proxyPort == 0 || *proxyPort > 65535 {
		return fmt.Errorf("redirect: -proxy-port %d: want a port from 1 to 65535", *proxyPort)
	}
	if *proxyUID > 1<<32-1 {
		return fmt.Errorf("redirect: -proxy-uid %d: want a user id below 4294967296", *proxyUID)
	}
	o.ProxyPort, o.ProxyUID, o.ProxyGID, o.Priority = uint16(*proxyPort), uint32(*proxyUID), *proxyGID, int32(*priority)
	if err := o.Validate(); err != nil {
		return err
	}
	if *dryRun {
		_, err := io.WriteString(stdout, redirect.Render(&o))
		return err
	}
	return redirect.Apply(&o)
}

// redirectOptions parses the list flags.
func redirectOptions(ports, excludePorts, include, exclude, excludeUIDs string) (redirect.Options, error) {
	o := redirect.Options{}
	var err error
	if o.Ports, o.AllPorts, err = redirect.ParsePorts(ports); err != nil {
		return o, fmt.Errorf("redirect: -ports: %w", err)
	}
	var all bool
	if o.ExcludePorts, all, err = redirect.ParsePorts(excludePorts); err != nil || all {
		if all {
			err = fmt.Errorf("* excludes every port: capture nothing by not running redirect")
		}
		return o, fmt.Errorf("redirect: -exclude-ports: %w", err)
	}
	if o.IncludeCIDRs, err = redirect.ParseCIDRs(include); err != nil {
		return o, fmt.Errorf("redirect: -include-cidrs: %w", err)
	}
	if o.ExcludeCIDRs, err = redirect.ParseCIDRs(exclude); err != nil {
		return o, fmt.Errorf("redirect: -exclude-cidrs: %w", err)
	}
	if o.ExcludeUIDs, err = redirect.ParseUIDs(excludeUIDs); err != nil {
		return o, fmt.Errorf("redirect: -exclude-uids: %w", err)
	}
	return o, nil
}
