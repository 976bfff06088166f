package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/inject"
	"github.com/batchmesh/batchmesh/internal/version"
)

// Defaults of the injection settings, matching examples/kubernetes/install.
const (
	defaultXDS   = "batchmesh-controlplane.batchmesh-system.svc:18000"
	defaultImage = "batchmesh"
)

// injectFlags registers the flags that make inject.Settings on fs; settings
// reads them once fs is parsed.
func injectFlags(fs *flag.FlagSet) (settings func() (inject.Settings, error)) {
	image := fs.String("image", defaultImage+":"+version.String(), "the batchmesh `image` injected (sidecar and redirect)")
	xds := fs.String("inject-xds", defaultXDS, "the control plane's ADS `address` injected sidecars connect to (its Service)")
	ports := fs.String("inject-ports", "", "captured `ports` of pods without the batchmesh.io/ports annotation (default: the model ports of -config)")
	legacy := fs.Bool("inject-legacy-sidecar", false, "for Kubernetes before 1.29: the sidecar as a regular container, first, with a postStart `sidecar wait`, instead of a native sidecar")
	return func() (inject.Settings, error) {
		s := inject.Settings{Image: *image, Version: version.String(), XDS: *xds, Ports: *ports, LegacySidecar: *legacy}
		switch {
		case s.Image == "":
			return s, errors.New("-image is required")
		case s.XDS == "":
			return s, errors.New("-inject-xds is required")
		}
		if _, _, err := net.SplitHostPort(s.XDS); err != nil {
			return s, fmt.Errorf("-inject-xds %q: want host:port", s.XDS)
		}
		if err := s.Validate(); err != nil {
			return s, fmt.Errorf("-inject-ports %q: %s", s.Ports, strings.TrimPrefix(err.Error(), "inject: default ports: "))
		}
		return s, nil
	}
}

// modelPorts returns the ports of cfg's endpoints in `sidecar redirect
// -ports` syntax, sorted: the default captured ports.
func modelPorts(cfg *config.Config) string {
	var ports []int
	for _, m := range cfg.Models {
		for _, v := range m.Versions {
			for _, e := range v.Endpoints {
				_, p, err := net.SplitHostPort(e.Address)
				if n, perr := strconv.Atoi(p); err == nil && perr == nil && !slices.Contains(ports, n) {
					ports = append(ports, n)
				}
			}
		}
	}
	slices.Sort(ports)
	items := make([]string, len(ports))
	for i, p := range ports {
		items[i] = strconv.Itoa(p)
	}
	return strings.Join(items, ",")
}

// runInject is `controlplane inject -f IN [-o OUT]`: the injection template
// applied offline to a multi-document YAML file.
func runInject(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("controlplane inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("f", "", "the YAML `file` to inject, - for standard input (required)")
	out := fs.String("o", "", "where to write the result (default standard output)")
	cfgPath := fs.String("config", "", "a config `file` whose model ports are the default captured ports")
	settings := injectFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("inject: unexpected argument %q", fs.Arg(0))
	}
	if *in == "" {
		return errors.New("inject: -f FILE is required (- reads standard input)")
	}
	s, err := settings()
	if err != nil {
		return fmt.Errorf("inject: %w", err)
	}
	if *cfgPath != "" && s.Ports == "" {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return fmt.Errorf("inject: -config: %w", err)
		}
		s.Ports = modelPorts(cfg)
	}
	var data []byte
	if *in == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(*in)
	}
	if err != nil {
		return fmt.Errorf("inject: -f: %w", err)
	}
	result, docs, err := inject.Documents(data, s, inject.Scope{})
	if err != nil {
		return err
	}
	for _, d := range docs {
		switch {
		case d.Injected:
			fmt.Fprintf(stderr, "inject: %s %s: injected\n", d.Kind, d.Name)
		case d.Reason != "":
			fmt.Fprintf(stderr, "inject: %s %s: left alone: %s\n", d.Kind, d.Name, d.Reason)
		}
	}
	if *out == "" {
		_, err = stdout.Write(result)
		return err
	}
	if err := os.WriteFile(*out, result, 0o644); err != nil {
		return fmt.Errorf("inject: -o: %w", err)
	}
	return nil
}
