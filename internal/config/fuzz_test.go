package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics, and that what it accepts
// Validate accepts too.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		oneModel,
		modelHead + "    batching: &b {max_batch_size: 0}\n    cache: {<<: *b}\n" + versionsTail,
		"a: &a [*a]\nmodels: *a\n",
		"models: [{name: a, versions: [{version: 1, endpoints: [{address: \"[::1]:80\", weight: 0}, {address: \"h:1\"}]}]}]\n",
		"cache_bytes: 1TiB\nweights: adaptive\nmodels: ~\n",
		"models: [{name: a, versions: [{version: 1, endpoints: [{address: \"h:1\"}], service_addresses: [\"10.96.0.1:80\", \"[fd00::1]:80\", h:1, 7]}]}]\n",
		"models:\n- &m\n  name: a\n  <<: *m\n",
		"---\nmodels: []\n---\n",
		modelHead + "    circuit_breakers: {max_batches: 2, endpoint_max_rows: 64, retry_budget_percent: 100}\n    hedging: {p99_multiple: 0, min_delay: 1ms}\n" + versionsTail,
		modelHead + "    circuit_breakers: {max_rows: -1, min_retry_concurrency: x}\n    hedging: {min_delay: 5}\n" + versionsTail,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned a config and an error: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate refuses: %v\n%s", err, data)
		}
	})
}

// FuzzParsePartial checks that the parse of LoadPartial never panics and
// accepts everything Parse accepts, the same.
func FuzzParsePartial(f *testing.F) {
	for _, s := range []string{"", oneModel, "models: [{name: a}]\n", "models: []\n", "models: [{name: a, versions: []}]\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		partial, perr := parse("fuzz.yaml", data, true)
		full, err := Parse("fuzz.yaml", data)
		if err == nil && (perr != nil || !reflect.DeepEqual(partial, full)) {
			t.Fatalf("Parse accepted what the partial parse did not take the same: %v\n%s", perr, data)
		}
	})
}
