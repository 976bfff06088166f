package modelrt

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestParseModelFlag(t *testing.T) {
	dir := t.TempDir()
	weights := filepath.Join(dir, "w.safetensors")
	if err := GenerateWeightsFile(weights, 1, []int{4, 8, 2}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		flag     string
		wantName string
		wantType string // "mlp" or "sim" on success
		wantErr  string
	}{
		{flag: "bert=sim:h200/bert-base", wantName: "bert", wantType: "sim"},
		{flag: "fast.v2_x-1=sim:linear/5ms+200us", wantName: "fast.v2_x-1", wantType: "sim"},
		{flag: "m=mlp:" + weights, wantName: "m", wantType: "mlp"},
		{flag: "bert", wantErr: `modelrt: model flag "bert": missing '='; want NAME=KIND:ARG`},
		{flag: "=sim:h200/bert-base", wantErr: "empty model name"},
		{flag: "-x=sim:h200/bert-base", wantErr: `model name "-x": use letters, digits`},
		{flag: "a/b=sim:h200/bert-base", wantErr: `model name "a/b"`},
		{flag: strings.Repeat("a", 129) + "=sim:h200/bert-base", wantErr: "at most 128"},
		{flag: "x=onnx:model.onnx", wantErr: `unknown kind "onnx"; allowed: mlp, sim`},
		{flag: "x=", wantErr: `unknown kind ""; allowed: mlp, sim`},
		{flag: "x=sim", wantErr: `modelrt: model "x": sim needs a profile: x=sim:PROFILE with PROFILE one of h200/bert-base, h200/minilm-l6, h200/resnet50, or linear/BASE+PERROW`},
		{flag: "x=sim:", wantErr: "sim needs a profile"},
		{flag: "x=sim:h200/gpt", wantErr: `modelrt: model "x": sim "h200/gpt": unknown profile; known: h200/bert-base`},
		{flag: "x=sim:linear/5ms", wantErr: `want linear/BASE+PERROW`},
		{flag: "x=mlp", wantErr: `modelrt: model "x": mlp needs a weights file: x=mlp:PATH`},
		{flag: "x=mlp:" + filepath.Join(dir, "missing"), wantErr: `modelrt: model "x": open ` + filepath.Join(dir, "missing")},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			name, m, err := ParseModelFlag(tt.flag)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if name != tt.wantName {
				t.Errorf("name %q, want %q", name, tt.wantName)
			}
			switch m.(type) {
			case *MLP:
				if tt.wantType != "mlp" {
					t.Errorf("got an MLP, want %s", tt.wantType)
				}
			case *Sim:
				if tt.wantType != "sim" {
					t.Errorf("got a Sim, want %s", tt.wantType)
				}
			default:
				t.Errorf("model %T", m)
			}
		})
	}
}

func FuzzParseModelFlag(f *testing.F) {
	for _, s := range []string{
		"bert=sim:h200/bert-base", "x=sim:linear/5ms+200us", "x=sim:linear/1h+1h", "x", "=", "x=sim:",
		"x=sim:linear/+1s+-1s", "x=sim:linear/9223372036854775807ns+1ns", "x=foo:bar",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// mlp loads files; fuzz only what touches no file system.
		if _, spec, ok := strings.Cut(s, "="); ok && strings.HasPrefix(spec, "mlp:") {
			t.Skip()
		}
		name, m, err := ParseModelFlag(s)
		if err != nil {
			if m != nil || name != "" || !strings.HasPrefix(err.Error(), "modelrt: ") {
				t.Fatalf("error %q with name %q and model %v", err, name, m)
			}
			return
		}
		if checkModelName(name) != nil || !strings.HasPrefix(s, name+"=sim:") {
			t.Fatalf("accepted %q as name %q", s, name)
		}
		sim := m.(*Sim)
		for _, n := range []int{0, 1, 3, 1000, 1 << 40} {
			if sim.Latency(n) < 0 {
				t.Fatalf("Latency(%d) = %v", n, sim.Latency(n))
			}
		}
	})
}
