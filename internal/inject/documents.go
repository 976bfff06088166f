package inject

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// templatePaths says where each injectable kind keeps its pod template: the
// map keys from the document's root (none: the document is the pod).
var templatePaths = map[string][]string{
	"v1/Pod":              nil,
	"apps/v1/Deployment":  {"spec", "template"},
	"apps/v1/StatefulSet": {"spec", "template"},
	"apps/v1/DaemonSet":   {"spec", "template"},
	"apps/v1/ReplicaSet":  {"spec", "template"},
	"batch/v1/Job":        {"spec", "template"},
	"batch/v1/CronJob":    {"spec", "jobTemplate", "spec", "template"},
}

// DocumentResult says what Documents did with one document.
type DocumentResult struct {
	Kind, Name string
	Injected   bool
	Reason     string // why (or why not); "" for kinds without a pod template
}

// Documents injects the pod templates of a multi-document YAML stream, like
// `istioctl kube-inject`: Pods, Deployments, StatefulSets, DaemonSets,
// ReplicaSets, Jobs and CronJobs are injected as Decide says for a pod in an
// opted-in namespace (scope.NamespaceEnabled is forced on); an injected
// document is rewritten with sorted keys and no comments, every other
// document is copied unchanged.
func Documents(in []byte, s Settings, scope Scope) ([]byte, []DocumentResult, error) {
	scope.NamespaceEnabled = true
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(in)))
	var out bytes.Buffer
	var results []DocumentResult
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("inject: document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			i--
			continue
		}
		res, injected, err := document(doc, s, scope)
		if err != nil {
			// Template's errors have the package prefix already.
			return nil, nil, fmt.Errorf("inject: document %d%s: %s", i, res.describe(), strings.TrimPrefix(err.Error(), "inject: "))
		}
		if out.Len() > 0 {
			out.WriteString("---\n")
		}
		out.Write(injected)
		if !bytes.HasSuffix(injected, []byte("\n")) {
			out.WriteByte('\n')
		}
		results = append(results, res)
	}
	return out.Bytes(), results, nil
}

func (r DocumentResult) describe() string {
	if r.Kind == "" {
		return ""
	}
	return fmt.Sprintf(" (%s %s)", r.Kind, r.Name)
}

// document injects one document, or returns it unchanged. The pod template
// of an injected one is re-encoded from the typed corev1.PodTemplateSpec:
// fields this k8s.io/api version does not know are dropped from it.
func document(doc []byte, s Settings, scope Scope) (DocumentResult, []byte, error) {
	var root map[string]any
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return DocumentResult{}, nil, err
	}
	apiVersion, _ := root["apiVersion"].(string)
	kind, _ := root["kind"].(string)
	res := DocumentResult{Kind: kind}
	if meta, ok := root["metadata"].(map[string]any); ok {
		res.Name, _ = meta["name"].(string)
	}
	path, ok := templatePaths[apiVersion+"/"+kind]
	if !ok {
		return res, doc, nil
	}
	tpl, err := lookup(root, path)
	if err != nil {
		return res, nil, err
	}
	raw, err := json.Marshal(tpl)
	if err != nil {
		return res, nil, err
	}
	var before corev1.PodTemplateSpec
	if err := json.Unmarshal(raw, &before); err != nil {
		return res, nil, fmt.Errorf("%s: %w", "."+strings.Join(path, "."), err)
	}
	after := before.DeepCopy()
	res.Injected, res.Reason = Decide(&after.ObjectMeta, &after.Spec, scope)
	if !res.Injected {
		return res, doc, nil
	}
	if err := Template(&after.ObjectMeta, &after.Spec, s, scope); err != nil {
		return res, nil, err
	}
	raw, err = json.Marshal(after)
	if err != nil {
		return res, nil, err
	}
	var newTpl map[string]any
	if err := json.Unmarshal(raw, &newTpl); err != nil {
		return res, nil, err
	}
	prune(newTpl)
	if len(path) == 0 {
		// A pod: its metadata and spec are the template; the rest stays.
		root["metadata"], root["spec"] = newTpl["metadata"], newTpl["spec"]
	} else {
		parent, _ := lookup(root, path[:len(path)-1])
		parent[path[len(path)-1]] = newTpl
	}
	out, err := yaml.Marshal(root)
	return res, out, err
}

// prune removes the empty values the typed pod template's encoding adds
// and manifests leave out: creationTimestamp: null and resources: {}.
func prune(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if m, ok := e.(map[string]any); (k == "creationTimestamp" && e == nil) || (k == "resources" && ok && len(m) == 0) {
				delete(v, k)
				continue
			}
			prune(e)
		}
	case []any:
		for _, e := range v {
			prune(e)
		}
	}
}

// lookup returns the map at path under root, which must exist.
func lookup(root map[string]any, path []string) (map[string]any, error) {
	m := root
	for i, key := range path {
		next, ok := m[key].(map[string]any)
		if !ok {
			return nil, fmt.Errorf(".%s: want a mapping (the pod template)", strings.Join(path[:i+1], "."))
		}
		m = next
	}
	return m, nil
}
