package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
)

// TestGRPCLoad runs -protocol grpc against a real runtime's gRPC port and
// checks that every call was answered, and that bad flag combinations are
// usage errors naming the flag.
func TestGRPCLoad(t *testing.T) {
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/0s+0s")})
	addr, _ := rt.ServeGRPC(t)
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-protocol", "grpc", "-model", "m", "-target", "grpc://" + addr,
		"-clients", "4", "-rows", "2", "-cols", "8", "-duration", "300ms", "-json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var out output
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	r := out.Target.Result
	if r.Requests == 0 || r.Errors != 0 || r.Rows != 2*r.Requests || r.ByStatus[0] != r.Requests {
		t.Errorf("result %+v: want every call answered OK with 2 rows", r)
	}
	for _, tc := range []struct {
		args    []string
		mention string
	}{
		{[]string{"-protocol", "grpc", "-target", "grpc://" + addr}, "-model"},
		{[]string{"-protocol", "grpc", "-model", "m", "-target", "http://" + addr + "/v2"}, "grpc://host:port"},
		{[]string{"-protocol", "grpc", "-model", "m", "-target", "grpc://" + addr, "-datatype", "INT8"}, "FP32"},
		{[]string{"-protocol", "grpc", "-model", "m", "-target", "grpc://" + addr, "-repeat", "1"}, "-repeat"},
	} {
		err := run(t.Context(), tc.args, &stdout, &stderr)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("run(%q) = %v, want a usage error mentioning %s", tc.args, err, tc.mention)
		}
	}
}
