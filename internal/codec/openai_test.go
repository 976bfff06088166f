package codec

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
)

func TestDecodeEmbeddingsRequestInputs(t *testing.T) {
	tests := []struct {
		name, body string
		input      string // EmbedInputText or EmbedInputTokens
		rows       []string
		tokens     [][]uint32
	}{
		{name: "string", body: `{"model":"e","input":"hello"}`, input: EmbedInputText, rows: []string{"hello"}},
		{name: "strings", body: `{"model":"e","input":["a","b é"]}`, input: EmbedInputText, rows: []string{"a", "b é"}},
		{name: "token ids", body: `{"model":"e","input":[1,2,4294967295]}`, input: EmbedInputTokens, tokens: [][]uint32{{1, 2, 4294967295}}},
		{name: "token arrays", body: `{"model":"e","input":[[1],[2,3]]}`, input: EmbedInputTokens, tokens: [][]uint32{{1}, {2, 3}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := DecodeEmbeddingsRequest([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.Model != "e" || r.Input.Name != tc.input || r.EncodingFormat != EncodingFloat {
				t.Fatalf("got model %q input %q encoding %q", r.Model, r.Input.Name, r.EncodingFormat)
			}
			if err := r.Input.Validate(); err != nil {
				t.Fatal(err)
			}
			els, err := BytesElements(r.Input.Data)
			if err != nil {
				t.Fatal(err)
			}
			var want [][]byte
			for _, s := range tc.rows {
				want = append(want, []byte(s))
			}
			for _, ids := range tc.tokens {
				var b []byte
				for _, id := range ids {
					b = binary.LittleEndian.AppendUint32(b, id)
				}
				want = append(want, b)
			}
			if len(els) != len(want) || r.Input.Shape[0] != int64(len(want)) {
				t.Fatalf("got %d rows (shape %v), want %d", len(els), r.Input.Shape, len(want))
			}
			for i := range want {
				if string(els[i]) != string(want[i]) {
					t.Fatalf("row %d: got %x, want %x", i, els[i], want[i])
				}
			}
			// The upstream body carries the same rows back.
			up, err := AppendEmbeddingsRequest(nil, "e", &r.Input, 8)
			if err != nil {
				t.Fatal(err)
			}
			back, err := DecodeEmbeddingsRequest(up)
			if err != nil {
				t.Fatalf("%s: %v", up, err)
			}
			if string(back.Input.Data) != string(r.Input.Data) || back.Dimensions != 8 {
				t.Fatalf("round trip of %s changed the rows", up)
			}
		})
	}
}

func TestDecodeEmbeddingsRequestFields(t *testing.T) {
	r, err := DecodeEmbeddingsRequest([]byte(`{"model":"m","input":"x","encoding_format":"base64","dimensions":64,"user":"u-1","extra":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.EncodingFormat != EncodingBase64 || r.Dimensions != 64 || r.User != "u-1" {
		t.Fatalf("got %+v", r)
	}
}

func TestDecodeEmbeddingsRequestErrors(t *testing.T) {
	long := `[` + strings.Repeat(`"a",`, MaxEmbeddingInputs) + `"a"]`
	tests := []struct {
		name, body, param string
		want              []string
	}{
		{"not JSON", `{`, "", []string{"malformed JSON"}},
		{"trailing", `{"model":"m","input":"x"}{}`, "", []string{"data after"}},
		{"no model", `{"input":"x"}`, "model", []string{"model must be a non-empty string"}},
		{"model number", `{"model":3,"input":"x"}`, "model", []string{"model must be"}},
		{"no input", `{"model":"m"}`, "input", []string{"input is missing"}},
		{"input number", `{"model":"m","input":3}`, "input", []string{"input 3 is not allowed", "array of strings"}},
		{"input null", `{"model":"m","input":null}`, "input", []string{"input is missing"}},
		{"empty string", `{"model":"m","input":""}`, "input", []string{"empty string"}},
		{"empty array", `{"model":"m","input":[]}`, "input", []string{"empty array"}},
		{"empty item", `{"model":"m","input":["a",""]}`, "input", []string{"input[1] is an empty string"}},
		{"mixed", `{"model":"m","input":["a",2]}`, "input", []string{"input[1] is 2, not a string"}},
		{"negative token", `{"model":"m","input":[1,-1]}`, "input", []string{"input[1]: -1 is not a token id", "0 to 4294967295"}},
		{"fractional token", `{"model":"m","input":[[1.5]]}`, "input", []string{"input[0][0]: 1.5 is not a token id"}},
		{"token too big", `{"model":"m","input":[4294967296]}`, "input", []string{"4294967296 is not a token id"}},
		{"empty token array", `{"model":"m","input":[[1],[]]}`, "input", []string{"input[1] is an empty token array"}},
		{"ragged kinds", `{"model":"m","input":[[1],"a"]}`, "input", []string{`input[1] is "a", not an array`}},
		{"too many", `{"model":"m","input":` + long + `}`, "input", []string{"2049 items", "at most 2048"}},
		{"encoding", `{"model":"m","input":"x","encoding_format":"int8"}`, "encoding_format", []string{`"int8" is not allowed`, `"float" or "base64"`}},
		{"dimensions zero", `{"model":"m","input":"x","dimensions":0}`, "dimensions", []string{"dimensions 0 is not allowed", "1 or more"}},
		{"dimensions float", `{"model":"m","input":"x","dimensions":1.5}`, "dimensions", []string{"dimensions 1.5"}},
		{"user number", `{"model":"m","input":"x","user":1}`, "user", []string{"user must be a string"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeEmbeddingsRequest([]byte(tc.body))
			if err == nil {
				t.Fatal("decoded")
			}
			checkDecodeError(t, err)
			if got := ParamOf(err); got != tc.param {
				t.Errorf("param %q, want %q (%v)", got, tc.param, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func vectors(t *testing.T, dim int, vs ...[]float32) inference.Tensor {
	t.Helper()
	var data []byte
	for _, v := range vs {
		for _, f := range v {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(f))
		}
	}
	return inference.Tensor{Name: EmbedOutput, DataType: inference.FP32, Shape: []int64{int64(len(vs)), int64(dim)}, Data: data}
}

func TestEmbeddingsResponseRoundTrip(t *testing.T) {
	emb := vectors(t, 3, []float32{0.1, -2.5e-7, 1}, []float32{float32(math.Pi), 0, -0.33333334})
	for _, enc := range []string{EncodingFloat, EncodingBase64} {
		body, err := AppendEmbeddingsResponse(nil, "e", &emb, 7, enc)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(body) {
			t.Fatalf("%s: invalid JSON %s", enc, body)
		}
		r, err := DecodeEmbeddingsResponse(body)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Embedding.Data) != string(emb.Data) || r.PromptTokens != 7 || r.TotalTokens != 7 || r.Model != "e" {
			t.Fatalf("%s: round trip changed the answer: %s", enc, body)
		}
	}
	// The base64 form is exactly the little-endian float32 bytes.
	body, _ := AppendEmbeddingsResponse(nil, "e", &emb, 0, EncodingBase64)
	if !strings.Contains(string(body), base64.StdEncoding.EncodeToString(emb.Data[:12])) {
		t.Fatalf("base64 vector is not the float32 bytes: %s", body)
	}
}

func TestDecodeEmbeddingsResponseOrderAndErrors(t *testing.T) {
	r, err := DecodeEmbeddingsResponse([]byte(`{"data":[{"index":1,"embedding":[2,3]},{"index":0,"embedding":[0,1]}],"usage":{"prompt_tokens":4,"total_tokens":4}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := vectors(t, 2, []float32{0, 1}, []float32{2, 3})
	if string(r.Embedding.Data) != string(want.Data) {
		t.Fatal("data not put in index order")
	}
	for body, msg := range map[string]string{
		`{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[2]}]}`:   "appears twice",
		`{"data":[{"index":5,"embedding":[1]}]}`:                               "data[0].index",
		`{"data":[{"index":0,"embedding":[1]},{"index":1,"embedding":[1,2]}]}`: "has 2 values",
		`{"data":[{"index":0,"embedding":"!!"}]}`:                              "not base64",
		`{"data":[{"index":0,"embedding":{}}]}`:                                "array of numbers",
	} {
		if _, err := DecodeEmbeddingsResponse([]byte(body)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: error %v, want %q", body, err, msg)
		}
	}
}

func TestAppendOpenAIError(t *testing.T) {
	body := AppendOpenAIError(nil, `bad "x"`, OpenAIInvalidRequest, "input", "")
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatal(err)
	}
	if e.Error.Message != `bad "x"` || e.Error.Type != OpenAIInvalidRequest || e.Error.Param == nil || *e.Error.Param != "input" || e.Error.Code != nil {
		t.Fatalf("got %s", body)
	}
	if OpenAIErrorText(body) != `bad "x"` {
		t.Fatal("OpenAIErrorText")
	}
}

func FuzzDecodeEmbeddingsRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"e","input":"hello"}`, `{"model":"e","input":["a","b"],"encoding_format":"base64","dimensions":3}`,
		`{"model":"e","input":[1,2,3]}`, `{"model":"e","input":[[1],[2,3]],"user":"u"}`, `{"model":"e","input":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeEmbeddingsRequest(body)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		if err := r.Input.Validate(); err != nil {
			t.Fatalf("decoded an invalid tensor: %v", err)
		}
		n := r.Input.Shape[0]
		if n < 1 || n > MaxEmbeddingInputs || r.Model == "" {
			t.Fatalf("decoded %d rows, model %q", n, r.Model)
		}
		up, err := AppendEmbeddingsRequest(nil, r.Model, &r.Input, r.Dimensions)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeEmbeddingsRequest(up)
		if err != nil {
			t.Fatalf("re-encoded %s: %v", up, err)
		}
		if back.Input.Name != r.Input.Name || string(back.Input.Data) != string(r.Input.Data) {
			t.Fatal("round trip changed the rows")
		}
	})
}

func FuzzDecodeEmbeddingsResponse(f *testing.F) {
	f.Add([]byte(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,1]}],"model":"e","usage":{"prompt_tokens":1,"total_tokens":1}}`))
	f.Add([]byte(`{"data":[{"index":0,"embedding":"AACAPwAAAEA="}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeEmbeddingsResponse(body)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		if err := r.Embedding.Validate(); err != nil {
			t.Fatal(err)
		}
		if _, err := AppendEmbeddingsResponse(nil, r.Model, &r.Embedding, r.PromptTokens, EncodingBase64); err != nil {
			t.Fatal(err)
		}
	})
}
