package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRedirectFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "-ports is required"},
		{[]string{"-ports", "80,http"}, `-ports: "http"`},
		{[]string{"-ports", "*", "-exclude-ports", "*"}, "-exclude-ports: * excludes every port"},
		{[]string{"-ports", "80", "-include-cidrs", "10.0.0.0/40"}, "-include-cidrs"},
		{[]string{"-ports", "80", "-exclude-cidrs", "bert"}, "-exclude-cidrs"},
		{[]string{"-ports", "80", "-exclude-uids", "envoy"}, "-exclude-uids"},
		{[]string{"-ports", "80", "-proxy-port", "70000"}, "-proxy-port 70000"},
		{[]string{"-ports", "15000-15010"}, "includes -proxy-port 15001"},
		{[]string{"-ports", "80", "extra"}, `unexpected argument "extra"`},
	} {
		var out, errs bytes.Buffer
		err := runRedirect(tt.args, &out, &errs)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("redirect %q: %v, want an error with %q", tt.args, err, tt.want)
		}
	}
}

func TestRedirectDryRun(t *testing.T) {
	var out, errs bytes.Buffer
	if err := runRedirect([]string{"-ports", "8000", "-beside-istio", "-proxy-port", "15301", "-dry-run"}, &out, &errs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"table inet batchmesh {", "priority -110;", "meta skuid 1338 return\n\t\tmeta skuid 1337 return",
		"tcp dport 8000 redirect to :15301",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run printed:\n%s\nwant %q in it", out.String(), want)
		}
	}
}
