package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/modelrt"
)

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		mention string
	}{
		{"no model", []string{"-listen", "127.0.0.1:0"}, "-model"},
		{"unknown kind", []string{"-model", "m=gpu:x"}, "unknown kind"},
		{"missing equals", []string{"-model", "sim:h200/bert-base"}, "missing '='"},
		{"unknown profile", []string{"-model", "m=sim:h100/bert"}, "h200/bert-base"},
		{"duplicate", []string{"-model", "m=sim:linear/1ms+0s", "-model", "m=sim:linear/1ms+0s"}, "twice"},
		{"missing weights", []string{"-model", "m=mlp:/nonexistent.safetensors"}, "nonexistent"},
		{"bad slots", []string{"-model", "m=sim:linear/1ms+0s", "-slots", "-1"}, "slots"},
		{"bad model version", []string{"-model", "m=sim:linear/1ms+0s", "-model-version", "2/x"}, "-model-version"},
		{"empty model version", []string{"-model", "m=sim:linear/1ms+0s", "-model-version", ""}, "-model-version"},
		{"gen-weights without -o", []string{"gen-weights"}, "-o"},
		{"gen-weights bad sizes", []string{"gen-weights", "-o", "x", "-sizes", "4,zero"}, "zero"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(tc.args, &stderr)
			if err == nil || !strings.Contains(err.Error()+stderr.String(), tc.mention) {
				t.Errorf("run(%q) = %v (stderr %q), want an error mentioning %q", tc.args, err, stderr.String(), tc.mention)
			}
		})
	}
}

func TestGenWeights(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.safetensors")
	if err := run([]string{"gen-weights", "-o", path, "-seed", "3", "-sizes", "4,8,2"}, os.Stderr); err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(t.TempDir(), "w2.safetensors")
	if err := run([]string{"gen-weights", "-o", again, "-seed", "3", "-sizes", "4,8,2"}, os.Stderr); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(path)
	b, _ := os.ReadFile(again)
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Errorf("gen-weights is not deterministic: %d and %d bytes", len(a), len(b))
	}
}

// TestGenWeightsUsage checks that the usage text of -sizes, in -h and in the
// package documentation, shows the real default.
func TestGenWeightsUsage(t *testing.T) {
	want := joinInts(modelrt.DefaultMLPSizes())
	var stderr bytes.Buffer
	if err := run([]string{"gen-weights", "-h"}, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("gen-weights -h = %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(stderr.String(), `(default "`+want+`")`) {
		t.Errorf("gen-weights -h prints %q, want the default sizes %s", stderr.String(), want)
	}
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), "[-sizes "+want+"]") {
		t.Errorf("the package documentation does not show -sizes %s", want)
	}
}
