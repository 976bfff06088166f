package modelrt

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// embedDims is the vector width of each profile's model; a linear profile
// gives DefaultEmbedDim.
var embedDims = map[string]int{"h200/minilm-l6": 384, "h200/bert-base": 768, "h200/resnet50": 2048}

// DefaultEmbedDim is the width of an embedding model on a linear profile.
const DefaultEmbedDim = 384

// Seeds that keep text and token inputs of the same bytes apart.
const (
	seedText   = 0x7465787400000000
	seedTokens = 0x746f6b656e730000
)

// Embed is a simulated embedding model, served at POST /v1/embeddings (the
// OpenAI API) and through v2. Its batch latency is a Sim's (the same
// profiles: ParseModelFlag's embed:h200/minilm-l6, embed:linear/2ms+20us);
// its width is the profiled model's (minilm-l6 384, bert-base 768, resnet50
// 2048; 384 on a line).
//
// It takes one BYTES input of shape [n]: codec.EmbedInputText (UTF-8 text)
// or codec.EmbedInputTokens (token ids, little-endian uint32), and the
// optional integer parameter codec.ParamDimensions (1 to the width). Row i
// of codec.EmbedOutput (FP32 [n, d]) is a unit-length vector that depends
// only on the input's name and row i's bytes: the first d values of the row's
// full-width pseudo-random vector, scaled to length 1 (so a shorter vector is
// a prefix of the longer one, renormalised, as Matryoshka models give).
// codec.EmbedOutputTokens (INT64 [n]) is each row's token count by the
// tokenizer rule of TokenCount. Every row is bit-identical alone or in any
// batch.
type Embed struct {
	sim *Sim
	dim int
}

// TokenCount is the reference tokenizer's rule: a text input counts one
// token per 4 bytes of UTF-8, rounded up (so at least 1); a token-id input
// counts its ids.
func TokenCount(input string, row []byte) int64 {
	if input == codec.EmbedInputTokens {
		return int64(len(row) / 4)
	}
	return int64(max(1, (len(row)+3)/4))
}

func parseEmbed(arg string) (*Embed, error) {
	sim, err := parseSim(arg)
	if err != nil {
		return nil, err
	}
	dim := DefaultEmbedDim
	if d, ok := embedDims[arg]; ok {
		dim = d
	}
	return &Embed{sim: sim, dim: dim}, nil
}

// Dim returns the width of the model's vectors.
func (e *Embed) Dim() int { return e.dim }

// Inputs describes the text input (codec.EmbedInputTokens is accepted too).
func (e *Embed) Inputs() []TensorSpec {
	return []TensorSpec{{Name: codec.EmbedInputText, DataType: "BYTES", Shape: []int64{-1}}}
}

// Outputs describes the vectors and the token counts.
func (e *Embed) Outputs() []TensorSpec {
	return []TensorSpec{
		{Name: codec.EmbedOutput, DataType: "FP32", Shape: []int64{-1, int64(e.dim)}},
		{Name: codec.EmbedOutputTokens, DataType: "INT64", Shape: []int64{-1}},
	}
}

// Validate checks the one BYTES input and the dimensions parameter.
func (e *Embed) Validate(req *inference.Request) error {
	if len(req.Inputs) != 1 {
		return inference.Errorf(inference.KindInvalid, "modelrt: an embedding model takes one input, %q or %q, got %d", codec.EmbedInputText, codec.EmbedInputTokens, len(req.Inputs))
	}
	t := &req.Inputs[0]
	if t.Name != codec.EmbedInputText && t.Name != codec.EmbedInputTokens {
		return inference.Errorf(inference.KindInvalid, "modelrt: unknown input %q; an embedding model takes %q or %q", t.Name, codec.EmbedInputText, codec.EmbedInputTokens)
	}
	if t.DataType != inference.Bytes || len(t.Shape) != 1 {
		return inference.Errorf(inference.KindInvalid, "modelrt: input %q: expected BYTES of shape [-1], got %s %s", t.Name, t.DataType, inference.FormatShape(t.Shape))
	}
	if err := t.Validate(); err != nil {
		return inference.Errorf(inference.KindInvalid, "modelrt: %w", err)
	}
	if t.Name == codec.EmbedInputTokens {
		rows, _ := codec.BytesElements(t.Data)
		for i, r := range rows {
			if len(r)%4 != 0 || len(r) == 0 {
				return inference.Errorf(inference.KindInvalid, "modelrt: input %q row %d holds %d bytes; a row is 1 or more little-endian uint32 token ids", t.Name, i, len(r))
			}
		}
	}
	_, err := e.dims(req)
	return err
}

// dims is the requested width: the dimensions parameter, or the model's.
func (e *Embed) dims(req *inference.Request) (int, error) {
	v, present := req.Parameters[codec.ParamDimensions]
	if !present {
		return e.dim, nil
	}
	d, ok := req.Parameters.Int(codec.ParamDimensions)
	if !ok || d < 1 || d > int64(e.dim) {
		return 0, inference.Errorf(inference.KindInvalid, "modelrt: dimensions %v is not allowed; this model gives 1 to %d", v, e.dim)
	}
	return int(d), nil
}

// Infer computes the vectors and token counts, then sleeps for the profile's
// latency of the batch.
func (e *Embed) Infer(ctx context.Context, req *inference.Request) ([]inference.Tensor, error) {
	if err := e.Validate(req); err != nil {
		return nil, err
	}
	d, _ := e.dims(req)
	t := &req.Inputs[0]
	rows, err := codec.BytesElements(t.Data)
	if err != nil {
		return nil, inference.Errorf(inference.KindInvalid, "modelrt: %w", err)
	}
	deadline := time.Now().Add(e.sim.Latency(len(rows)))
	vecs := make([]byte, 0, 4*d*len(rows))
	tokens := make([]byte, 0, 8*len(rows))
	for _, r := range rows {
		vecs = appendEmbedding(vecs, t.Name, r, d)
		tokens = binary.LittleEndian.AppendUint64(tokens, uint64(TokenCount(t.Name, r)))
	}
	if err := waitUntil(ctx, deadline); err != nil {
		return nil, err
	}
	n := int64(len(rows))
	return []inference.Tensor{
		{Name: codec.EmbedOutput, DataType: inference.FP32, Shape: []int64{n, int64(d)}, Data: vecs},
		{Name: codec.EmbedOutputTokens, DataType: inference.Int64, Shape: []int64{n}, Data: tokens},
	}, nil
}

// appendEmbedding appends the unit-length vector of one row, d values.
func appendEmbedding(dst []byte, input string, row []byte, d int) []byte {
	seed := uint64(seedText)
	if input == codec.EmbedInputTokens {
		seed = seedTokens
	}
	h := xxh64(row, seed)
	v := make([]float64, d)
	var norm float64
	for i := range v {
		z := mix64(h + uint64(i+1)*0x9E3779B97F4A7C15)
		v[i] = float64(int32(z>>40)-1<<23) / (1 << 23)
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	if norm == 0 {
		norm, v[0] = 1, 1
	}
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(x/norm)))
	}
	return dst
}

// String names the model's profile.
func (e *Embed) String() string { return fmt.Sprintf("embed:%s (%d dims)", e.sim.spec, e.dim) }

// embedModels lists the names of the served embedding models.
func embedModels(models map[string]Model, names []string) []string {
	var out []string
	for _, n := range names {
		if _, ok := models[n].(*Embed); ok {
			out = append(out, n)
		}
	}
	return out
}
