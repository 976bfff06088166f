package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// fakeRuntime answers every request with 200 and a batch-size header; it
// stands in for any v2 endpoint, since bench only needs one to talk to.
func fakeRuntime(t *testing.T, count *atomic.Int64) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count.Add(1)
		if r.Header.Get("X-Batchmesh-Priority") != "high" {
			http.Error(w, `{"error":"no priority"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Batchmesh-Batch-Size", "2")
		_, _ = w.Write([]byte(`{"model_name":"m","outputs":[]}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v2/models/m/infer"
}

func TestCompareJSON(t *testing.T) {
	var na, nb atomic.Int64
	a, b := fakeRuntime(t, &na), fakeRuntime(t, &nb)
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-target", a, "-compare", b, "-requests", "25", "-clients", "3",
		"-rows", "2", "-rows-max", "4", "-binary", "-header", "X-Batchmesh-Priority=high", "-json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var out output
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("stdout is not the JSON document: %v\n%s", err, stdout.String())
	}
	if out.Compare == nil || out.Ratio == nil {
		t.Fatalf("no compare or ratio in %s", stdout.String())
	}
	for _, r := range []namedResult{out.Target, *out.Compare} {
		if r.Result.Requests != 25 || r.Result.Errors != 0 || r.Result.MeanBatchRows != 2 {
			t.Errorf("%s: %+v, want 25 requests, no errors, batch 2", r.URL, r.Result)
		}
	}
	if out.Target.URL != a || out.Compare.URL != b || na.Load() != 25 || nb.Load() != 25 {
		t.Errorf("urls %s, %s; requests seen %d, %d", out.Target.URL, out.Compare.URL, na.Load(), nb.Load())
	}
	if out.Ratio.RowsPerSec <= 0 || out.Ratio.P50 <= 0 {
		t.Errorf("ratio %+v, want both > 0", *out.Ratio)
	}
}

func TestText(t *testing.T) {
	var n atomic.Int64
	a := fakeRuntime(t, &n)
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-target", a, "-compare", a, "-requests", "10", "-header", "X-Batchmesh-Priority=high"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	got := stdout.String()
	for _, want := range []string{"target: 10 req", "compare: 10 req", "rows/s", "ratio", "errors"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-target", "http://127.0.0.1:1/", "extra"},
		{"-target", "http://127.0.0.1:1/", "-header", "novalue"},
		{"-target", "http://127.0.0.1:1/", "-repeat", "2"},
		{"-target", "http://127.0.0.1:1/", "-duration", "1h"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), args, &stdout, &stderr)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}

// TestOpenLoopFlags checks that -rate makes an open-loop run that reports
// what it offered, and that a bad -rate-pattern is a usage error naming it.
func TestOpenLoopFlags(t *testing.T) {
	var n atomic.Int64
	a := fakeRuntime(t, &n)
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-target", a, "-rate", "1000", "-requests", "40", "-header", "X-Batchmesh-Priority=high", "-json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var out output
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("stdout is not the JSON document: %v\n%s", err, stdout.String())
	}
	if r := out.Target.Result; r.Offered != 40 || r.Requests+r.Dropped != 40 || r.Errors != 0 {
		t.Errorf("%+v: want 40 offered, each sent or dropped, no errors", r)
	}
	err = run(t.Context(), []string{"-target", a, "-rate", "1000", "-rate-pattern", "ramp:5@1s", "-requests", "1"}, &stdout, &stderr)
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "rate pattern") {
		t.Errorf("bad -rate-pattern: %v, want a usage error about the rate pattern", err)
	}
}
