package inject

import (
	"bytes"
	"strings"
	"testing"
)

func TestDocumentsKinds(t *testing.T) {
	in := `apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: a, image: a}]
---
apiVersion: example.com/v1
kind: Deployment
metadata: {name: not-apps}
spec: {template: {spec: {containers: [{name: a, image: a}]}}}
---
# only a comment
`
	out, res, err := Documents([]byte(in), testSettings, Scope{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || !res[0].Injected || res[1].Injected || res[1].Reason != "" {
		t.Fatalf("results %+v; want the CronJob injected, the other Deployment kind passed through", res)
	}
	docs := strings.Split(string(out), "---\n")
	if len(docs) != 3 || !strings.Contains(docs[0], "name: "+SidecarName) {
		t.Fatalf("output:\n%s", out)
	}
	if !strings.Contains(in, docs[1]) || !strings.Contains(in, docs[2]) {
		t.Fatalf("documents not injected changed:\n%s", out)
	}
	again, _, err := Documents(out, testSettings, Scope{})
	if err != nil || !bytes.Equal(again, out) {
		t.Fatalf("injecting twice changed the output (%v):\n%s", err, again)
	}
}

func FuzzDocuments(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a}]}\n"))
	f.Add([]byte("apiVersion: apps/v1\nkind: Deployment\nspec: {template: 3}\n---\nkind: x\n"))
	f.Add([]byte("apiVersion: batch/v1\nkind: CronJob\nspec: {jobTemplate: {spec: {template: {metadata: {annotations: {batchmesh.io/ports: '*'}}}}}}\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, _, err := Documents(in, testSettings, Scope{})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "inject: ") {
				t.Fatalf("error %q lacks the prefix", err)
			}
			return
		}
		if len(bytes.TrimSpace(in)) > 0 && len(out) == 0 && bytes.Contains(in, []byte("kind")) {
			t.Fatalf("input %q gave no output", in)
		}
	})
}
