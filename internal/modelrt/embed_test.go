package modelrt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/batchmesh/batchmesh/internal/codec"
)

func post(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func embedServer(t *testing.T, maxQueue int) string {
	t.Helper()
	_, e, err := ParseModelFlag("e=embed:linear/1ms+0s")
	if err != nil {
		t.Fatal(err)
	}
	_, sim, err := ParseModelFlag("s=sim:linear/0s+0s")
	if err != nil {
		t.Fatal(err)
	}
	_, url := startServer(t, Config{Models: map[string]Model{"e": e, "s": sim}, MaxQueue: maxQueue, Slots: 1}, false)
	return url
}

func TestEmbedVectors(t *testing.T) {
	_, m, err := ParseModelFlag("e=embed:h200/minilm-l6")
	if err != nil {
		t.Fatal(err)
	}
	e := m.(*Embed)
	if e.Dim() != 384 {
		t.Fatalf("minilm-l6 width %d, want 384", e.Dim())
	}
	full := appendEmbedding(nil, codec.EmbedInputText, []byte("hello"), 384)
	short := appendEmbedding(nil, codec.EmbedInputText, []byte("hello"), 8)
	other := appendEmbedding(nil, codec.EmbedInputTokens, []byte("hello"), 384)
	for _, v := range [][]byte{full, short, other} {
		var n float64
		for i := 0; i < len(v); i += 4 {
			f := float64(math.Float32frombits(binary.LittleEndian.Uint32(v[i:])))
			n += f * f
		}
		if math.Abs(n-1) > 1e-5 {
			t.Fatalf("squared length %v, want 1", n)
		}
	}
	if bytes.Equal(full, other) {
		t.Fatal("text and token inputs of the same bytes gave the same vector")
	}
	if got := TokenCount(codec.EmbedInputText, []byte("hello")); got != 2 {
		t.Fatalf("tokens of hello: %d, want 2 (ceil(5/4))", got)
	}
	if got := TokenCount(codec.EmbedInputTokens, make([]byte, 12)); got != 3 {
		t.Fatalf("tokens of 3 ids: %d", got)
	}
}

type embAnswer struct {
	Data []struct {
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Model string `json:"model"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
	} `json:"usage"`
}

func TestEmbeddingsRoute(t *testing.T) {
	url := embedServer(t, 0)
	code, body := post(t, url+"/v1/embeddings", `{"model":"e","input":["one","two words"],"dimensions":4}`)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var a embAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatal(err)
	}
	if len(a.Data) != 2 || a.Model != "e" || a.Usage.PromptTokens != 1+3 {
		t.Fatalf("got %s", body)
	}
	var v []float64
	if err := json.Unmarshal(a.Data[1].Embedding, &v); err != nil || len(v) != 4 {
		t.Fatalf("vector %s: %v", a.Data[1].Embedding, err)
	}
	// Batched rows are the rows computed alone, in base64 too.
	_, alone := post(t, url+"/embeddings", `{"model":"e","input":"two words","dimensions":4}`)
	var b embAnswer
	if err := json.Unmarshal(alone, &b); err != nil {
		t.Fatal(err)
	}
	if string(b.Data[0].Embedding) != string(a.Data[1].Embedding) {
		t.Fatalf("alone %s, batched %s", b.Data[0].Embedding, a.Data[1].Embedding)
	}
	_, b64 := post(t, url+"/v1/embeddings", `{"model":"e","input":["one","two words"],"dimensions":4,"encoding_format":"base64"}`)
	r64, err := codec.DecodeEmbeddingsResponse(b64)
	if err != nil {
		t.Fatal(err)
	}
	rf, err := codec.DecodeEmbeddingsResponse(body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r64.Embedding.Data, rf.Embedding.Data) {
		t.Fatal("base64 and float answers differ")
	}
	for _, tc := range []struct {
		body       string
		code       int
		param, msg string
	}{
		{`{"model":"e","input":"x","dimensions":385}`, 400, "input", "dimensions 385 is not allowed; this model gives 1 to 384"},
		{`{"model":"s","input":"x"}`, 404, "model", "not an embedding model"},
		{`{"model":"e","input":[]}`, 400, "input", "empty array"},
	} {
		code, body := post(t, url+"/v1/embeddings", tc.body)
		var e struct {
			Error struct{ Message, Type, Param string } `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || code != tc.code || e.Error.Param != tc.param || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("%s: %d %s, want %d param %q with %q", tc.body, code, body, tc.code, tc.param, tc.msg)
		}
	}
	resp, err := http.Get(url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	models, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(models), `"id":"e"`) {
		t.Fatalf("/v1/models: %s", models)
	}
}

func TestMaxQueueRefusesWith429(t *testing.T) {
	_, e, _ := ParseModelFlag("e=embed:linear/50ms+0s")
	srv, url := startServer(t, Config{Models: map[string]Model{"e": e}, MaxQueue: 1, Slots: 1}, false)
	var wg sync.WaitGroup
	codes := make(chan int, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := post(t, url+"/v1/embeddings", `{"model":"e","input":"x"}`)
			codes <- code
		}()
	}
	wg.Wait()
	close(codes)
	n429 := 0
	for c := range codes {
		if c == 429 {
			n429++
		} else if c != 200 {
			t.Fatalf("status %d", c)
		}
	}
	if n429 == 0 {
		t.Fatal("8 concurrent 50 ms batches on 1 slot with max-queue 1: none refused")
	}
	_ = srv.Shutdown(context.Background())
}

func TestPredictRoute(t *testing.T) {
	url := embedServer(t, 0)
	code, rows := post(t, url+"/v1/models/s:predict", `{"instances":[[1,2],[3,4]]}`)
	if code != 200 || !strings.HasPrefix(string(rows), `{"predictions":[[`) {
		t.Fatalf("%d %s", code, rows)
	}
	code, cols := post(t, url+"/v1/models/s/versions/1:predict", `{"inputs":[[3,4]]}`)
	if code != 200 || !strings.HasPrefix(string(cols), `{"outputs":[[`) {
		t.Fatalf("%d %s", code, cols)
	}
	var r struct{ Predictions [][]float64 }
	var c struct{ Outputs [][]float64 }
	if json.Unmarshal(rows, &r) != nil || json.Unmarshal(cols, &c) != nil || len(r.Predictions) != 2 {
		t.Fatal("bad JSON")
	}
	for i := range c.Outputs[0] {
		if c.Outputs[0][i] != r.Predictions[1][i] {
			t.Fatalf("row 1 batched %v, alone %v", r.Predictions[1], c.Outputs[0])
		}
	}
	code, body := post(t, url+"/v1/models/s:predict", `{"instances":[[1,2],[3]]}`)
	if code != 400 || !strings.Contains(string(body), `"error":"codec: instances[1] has 1 elements`) {
		t.Fatalf("%d %s", code, body)
	}
	code, body = post(t, url+"/v1/models/nope:predict", `{"instances":[1]}`)
	if code != 404 {
		t.Fatalf("%d %s", code, body)
	}
	resp, err := http.Get(url + "/v1/models/s")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(st), "AVAILABLE") {
		t.Fatalf("status: %s", st)
	}
}
