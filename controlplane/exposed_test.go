package main

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// TestWarnIfExposed checks the warning for plaintext listeners beyond
// loopback, from addresses alone: tests never listen beyond loopback.
func TestWarnIfExposed(t *testing.T) {
	for _, tt := range []struct {
		addr net.Addr
		warn bool
	}{
		{addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 18000}},
		{addr: &net.TCPAddr{IP: net.IPv6loopback, Port: 18000}},
		{addr: &net.TCPAddr{IP: net.IPv4zero, Port: 18000}, warn: true},
		{addr: &net.TCPAddr{IP: net.IPv6unspecified, Port: 18000}, warn: true},
		{addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 18000}, warn: true},
	} {
		var buf bytes.Buffer
		warnIfExposed(slog.New(slog.NewTextHandler(&buf, nil)), "ADS and LRS", tt.addr, plaintext)
		got := buf.String()
		if warned := strings.Contains(got, "level=WARN"); warned != tt.warn {
			t.Errorf("%v: warned %v, want %v (log %q)", tt.addr, warned, tt.warn, got)
		}
		if tt.warn && (!strings.Contains(got, tt.addr.String()) || !strings.Contains(got, "network policy")) {
			t.Errorf("%v: warning %q does not name the address and what protects it", tt.addr, got)
		}
	}
}

// TestDefaultsStayOnLoopback: without flags, nothing listens beyond
// loopback.
func TestDefaultsStayOnLoopback(t *testing.T) {
	f, err := parseFlags([]string{"-config", "x.yaml"}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{f.listen, f.admin} {
		host, _, err := net.SplitHostPort(a)
		if err != nil || !net.ParseIP(host).IsLoopback() {
			t.Errorf("default address %q is not on loopback", a)
		}
	}
}
