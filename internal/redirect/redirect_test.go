package redirect_test

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/netnstest"
	"github.com/batchmesh/batchmesh/internal/redirect"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden are the flag sets whose printed tables are in testdata/NAME.nft.
var golden = map[string]redirect.Options{
	"ports": {
		Ports: []redirect.PortRange{{8000, 8000}, {8080, 8080}},
	},
	"all-ports-excluded": {
		AllPorts: true, ExcludePorts: []redirect.PortRange{{5432, 5432}, {6379, 6380}},
		ExcludeCIDRs: cidrs("10.96.0.10/32", "169.254.0.0/16", "fd00:1::/64"), ProxyGID: 1337,
	},
	"include-cidrs": {
		Ports: []redirect.PortRange{{8000, 8100}}, IncludeCIDRs: cidrs("10.0.0.0/8", "fd00::/8", "192.168.1.7"),
	},
	"beside-istio": {
		Ports: []redirect.PortRange{{8000, 8000}}, ProxyPort: 15201, ProxyUID: 1338, ExcludeUIDs: []uint32{1337},
	},
}

func cidrs(s ...string) []netip.Prefix {
	p, err := redirect.ParseCIDRs(strings.Join(s, ","))
	if err != nil {
		panic(err)
	}
	return p
}

// withDefaults fills what the flags default.
func withDefaults(o redirect.Options) redirect.Options {
	if o.ProxyPort == 0 {
		o.ProxyPort = redirect.DefaultProxyPort
	}
	if o.ProxyUID == 0 {
		o.ProxyUID = redirect.DefaultProxyUID
	}
	if o.ProxyGID == 0 {
		o.ProxyGID = -1
	}
	if o.Priority == 0 {
		o.Priority = redirect.DefaultPriority
	}
	return o
}

func TestRenderGolden(t *testing.T) {
	for name, o := range golden {
		t.Run(name, func(t *testing.T) {
			o := withDefaults(o)
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			got := redirect.Render(&o)
			path := filepath.Join("testdata", name+".nft")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if got != string(want) {
				t.Errorf("Render:\n%s\nwant (%s):\n%s", got, path, want)
			}
		})
	}
}

// TestApplyInNamespace programs every golden table for real in a fresh
// network namespace and reads it back with nft: the kernel holds exactly
// what -dry-run prints. Applying twice is the same as once; Clean removes
// the table and may run again.
func TestApplyInNamespace(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	if _, err := netnstest.Output("nft", "--version"); err != nil {
		t.Fatalf("the nft command reads the rules back (Debian package nftables): %v", err)
	}
	for name, o := range golden {
		o := withDefaults(o)
		for range 2 {
			if err := redirect.Apply(&o); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		got := netnstest.Run(t, "nft", "list", "ruleset")
		if want := redirect.Render(&o); got != want {
			t.Errorf("%s: nft list ruleset:\n%s\nwant what -dry-run prints:\n%s", name, got, want)
		}
	}
	for range 2 {
		if err := redirect.Clean(); err != nil {
			t.Fatal(err)
		}
	}
	if got := netnstest.Run(t, "nft", "list", "ruleset"); got != "" {
		t.Errorf("after Clean, nft list ruleset:\n%s\nwant nothing", got)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		o    redirect.Options
		want string
	}{
		{redirect.Options{}, "-ports is required"},
		{redirect.Options{AllPorts: true, Ports: []redirect.PortRange{{1, 1}}}, "cannot be combined"},
		{redirect.Options{Ports: []redirect.PortRange{{15000, 15002}}}, "includes -proxy-port 15001"},
		{redirect.Options{Ports: []redirect.PortRange{{80, 80}}, ProxyGID: -2}, "-proxy-gid -2"},
	} {
		o := withDefaults(tt.o)
		if tt.o.ProxyGID != 0 {
			o.ProxyGID = tt.o.ProxyGID
		}
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want an error with %q", tt.o, err, tt.want)
		}
	}
}

func TestParsePorts(t *testing.T) {
	ports, all, err := redirect.ParsePorts(" 8000, 9000-9100 ")
	if err != nil || all || len(ports) != 2 || ports[1] != (redirect.PortRange{9000, 9100}) {
		t.Errorf("ParsePorts = %v %v %v", ports, all, err)
	}
	if _, all, err := redirect.ParsePorts("*"); !all || err != nil {
		t.Errorf("ParsePorts(*) = %v %v", all, err)
	}
	for _, bad := range []string{"0", "65536", "80,", "x", "90-80", "-5", "1-2-3"} {
		if _, _, err := redirect.ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) = nil error", bad)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "fe80::1%eth0", "::ffff:10.0.0.1", "host", ","} {
		if _, err := redirect.ParseCIDRs(bad); err == nil {
			t.Errorf("ParseCIDRs(%q) = nil error", bad)
		}
	}
	if p, err := redirect.ParseCIDRs("10.1.2.3/8"); err != nil || p[0].String() != "10.0.0.0/8" {
		t.Errorf("ParseCIDRs masks: %v %v", p, err)
	}
}

// FuzzParse checks that the list parsers never panic, and that what they
// accept prints back to something they accept again, unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"8000,8080", "*", "1-65535", "10.0.0.0/8,fd00::/8", "::1", " 80 , 443"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ports, all, err := redirect.ParsePorts(s); err == nil && !all && len(ports) > 0 {
			var parts []string
			for _, p := range ports {
				parts = append(parts, p.String())
			}
			again, _, err := redirect.ParsePorts(strings.Join(parts, ","))
			if err != nil || len(again) != len(ports) {
				t.Fatalf("ParsePorts(%q) = %v; printed back: %v, %v", s, ports, again, err)
			}
		}
		if ps, err := redirect.ParseCIDRs(s); err == nil {
			for _, p := range ps {
				if !p.IsValid() || p != p.Masked() {
					t.Fatalf("ParseCIDRs(%q) gave %v", s, p)
				}
			}
		}
		_, _ = redirect.ParseUIDs(s)
	})
}
