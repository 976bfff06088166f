package codec

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// jsonEqual compares two JSON texts as values.
func jsonEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("invalid JSON %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestPredictRoundTrips(t *testing.T) {
	tests := []struct {
		name, body string
		columnar   bool
		names      []string
		shapes     [][]int64
		// up is the columnar body sent upstream; answer is what a runtime
		// answering the same tensors as outputs gives the caller.
		up, answer string
	}{
		{
			name: "rows", body: `{"instances":[[1,2.5],[3,-4e-3]]}`,
			names: []string{""}, shapes: [][]int64{{2, 2}},
			up: `{"inputs":[[1,2.5],[3,-4e-3]]}`, answer: `{"predictions":[[1,2.5],[3,-4e-3]]}`,
		},
		{
			name: "named rows", body: `{"signature_name":"serving_default","instances":[{"b":"x","a":[1]},{"a":[2],"b":{"b64":"AP8="}}]}`,
			names: []string{"a", "b"}, shapes: [][]int64{{2, 1}, {2}},
			up:     `{"inputs":{"a":[[1],[2]],"b":["x",{"b64":"AP8="}]}}`,
			answer: `{"predictions":[{"a":[1],"b":"x"},{"a":[2],"b":{"b64":"AP8="}}]}`,
		},
		{
			name: "columnar", body: `{"inputs":[[true],[false]]}`, columnar: true,
			names: []string{""}, shapes: [][]int64{{2, 1}},
			up: `{"inputs":[[true],[false]]}`, answer: `{"outputs":[[true],[false]]}`,
		},
		{
			name: "named columnar", body: `{"inputs":{"x":[1,2,3],"y":[[1,2],[3,4],[5,6]]}}`, columnar: true,
			names: []string{"x", "y"}, shapes: [][]int64{{3}, {3, 2}},
			up: `{"inputs":{"x":[1,2,3],"y":[[1,2],[3,4],[5,6]]}}`, answer: `{"outputs":{"x":[1,2,3],"y":[[1,2],[3,4],[5,6]]}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := DecodePredictRequest([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if p.Columnar != tc.columnar || len(p.Inputs) != len(tc.names) {
				t.Fatalf("got %+v", p)
			}
			for i, in := range p.Inputs {
				if in.Name != tc.names[i] || !reflect.DeepEqual(in.Shape, tc.shapes[i]) {
					t.Fatalf("input %d: %q %v, want %q %v", i, in.Name, in.Shape, tc.names[i], tc.shapes[i])
				}
				if err := in.Validate(); err != nil {
					t.Fatal(err)
				}
			}
			up, err := AppendPredictRequest(nil, p.Inputs)
			if err != nil {
				t.Fatal(err)
			}
			jsonEqual(t, up, tc.up)
			// The runtime's columnar answer decodes to the same tensors.
			outs, err := DecodePredictResponse([]byte(strings.Replace(string(up), `"inputs"`, `"outputs"`, 1)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(outs, p.Inputs) {
				t.Fatalf("response tensors %+v, want %+v", outs, p.Inputs)
			}
			ans, err := AppendPredictResponse(nil, outs, p.Columnar)
			if err != nil {
				t.Fatal(err)
			}
			jsonEqual(t, ans, tc.answer)
		})
	}
}

func TestDecodePredictResponseRows(t *testing.T) {
	outs, err := DecodePredictResponse([]byte(`{"predictions":[{"p":[0.5]},{"p":[1]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || outs[0].Name != "p" || !reflect.DeepEqual(outs[0].Shape, []int64{2, 1}) {
		t.Fatalf("got %+v", outs)
	}
}

func TestBytesOutputsNamedBytesAreBase64(t *testing.T) {
	p, err := DecodePredictRequest([]byte(`{"inputs":{"img_bytes":["abc"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	ans, err := AppendPredictResponse(nil, p.Inputs, true)
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, ans, `{"outputs":[{"b64":"YWJj"}]}`)
}

func TestDecodePredictRequestErrors(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"not JSON", `{`, []string{"malformed JSON"}},
		{"null", `null`, []string{"want a JSON object"}},
		{"neither", `{"x":1}`, []string{`neither "instances"`}},
		{"both", `{"instances":[1],"inputs":[1]}`, []string{"both"}},
		{"instances object", `{"instances":{"a":1}}`, []string{"instances must be an array"}},
		{"instances empty", `{"instances":[]}`, []string{"instances is empty"}},
		{"ragged", `{"instances":[[1,2],[3]]}`, []string{"instances[1] has 1 elements where the first has 2", "[2,2]"}},
		{"deeper", `{"instances":[1,[2]]}`, []string{"instances[1] is an array"}},
		{"shallower", `{"instances":[[1],2]}`, []string{"instances[1] is a value where an array is expected"}},
		{"mixed kinds", `{"instances":[1,"a"]}`, []string{`instances[1] is a string where instances holds a number`}},
		{"null value", `{"instances":[1,null]}`, []string{"instances[1] is null"}},
		{"bad b64", `{"instances":[{"b64":"%%"}]}`, []string{"instances[0].b64 is not standard base64"}},
		{"other object value", `{"inputs":{"x":[{"c":1}]}}`, []string{"inputs.x[0] is an object"}},
		{"named missing", `{"instances":[{"a":1,"b":2},{"a":1,"c":2}]}`, []string{`instances[1] lacks input "b"`}},
		{"named count", `{"instances":[{"a":1},{"a":1,"b":2}]}`, []string{"instances[1] has inputs [a b]"}},
		{"named not object", `{"instances":[{"a":1},[1]]}`, []string{"instances[1] is not an object of named inputs"}},
		{"named ragged", `{"instances":[{"a":[1]},{"a":[1,2]}]}`, []string{"instances[*].a[1] has 2 elements"}},
		{"empty name", `{"inputs":{"":[1]}}`, []string{"empty name"}},
		{"scalar", `{"inputs":3}`, []string{"inputs is a scalar"}},
		{"named scalar", `{"inputs":{"x":3}}`, []string{"inputs.x is a scalar"}},
		{"batch mismatch", `{"inputs":{"x":[1,2],"y":[1]}}`, []string{`inputs.y has 1 rows (dim 0) but inputs.x has 2`}},
		{"too deep", `{"inputs":` + strings.Repeat("[", 40) + "1" + strings.Repeat("]", 40) + `}`, []string{"nested deeper than 32"}},
		{"huge number", `{"inputs":[1e999]}`, []string{"inputs[0]: 1e999 is not a representable number"}},
		{"signature", `{"signature_name":1,"inputs":[1]}`, []string{"signature_name must be a string"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodePredictRequest([]byte(tc.body))
			if err == nil {
				t.Fatal("decoded")
			}
			checkDecodeError(t, err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func FuzzDecodePredictRequest(f *testing.F) {
	for _, s := range []string{
		`{"instances":[[1,2.5],[3,-4e-3]]}`, `{"instances":[{"a":[1],"b":"x"},{"a":[2],"b":{"b64":"AP8="}}]}`,
		`{"inputs":{"x":[1,2,3],"y":[[1,2],[3,4],[5,6]]}}`, `{"inputs":[[true],[false]]}`, `{"instances":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := DecodePredictRequest(body)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		var req inference.Request
		req.Inputs = p.Inputs
		rows, err := req.Rows()
		if err != nil {
			t.Fatalf("decoded inputs with no common batch: %v", err)
		}
		for i := range p.Inputs {
			if err := p.Inputs[i].Validate(); err != nil {
				t.Fatal(err)
			}
		}
		up, err := AppendPredictRequest(nil, p.Inputs)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodePredictRequest(up)
		if err != nil {
			t.Fatalf("re-encoded %s: %v", up, err)
		}
		if rows > 0 && !reflect.DeepEqual(back.Inputs, p.Inputs) {
			t.Fatalf("round trip through %s changed the inputs", up)
		}
		if rows > 0 && rows <= maxFuzzRows {
			if _, err := AppendPredictResponse(nil, p.Inputs, false); err != nil {
				t.Fatal(err)
			}
		}
	})
}
