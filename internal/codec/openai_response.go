package codec

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// EmbeddingsResponse is a decoded OpenAI embeddings answer.
type EmbeddingsResponse struct {
	Model string
	// Embedding is FP32 [n, dim]: row i is the vector of data index i.
	Embedding    inference.Tensor
	PromptTokens int64
	TotalTokens  int64
}

type wireEmbedding struct {
	Index     *int            `json:"index"`
	Embedding json.RawMessage `json:"embedding"`
}

type wireEmbeddingsResponse struct {
	Model string          `json:"model"`
	Data  []wireEmbedding `json:"data"`
	Usage struct {
		PromptTokens int64 `json:"prompt_tokens"`
		TotalTokens  int64 `json:"total_tokens"`
	} `json:"usage"`
}

// DecodeEmbeddingsResponse parses an OpenAI embeddings answer whose vectors
// are float arrays or base64 (little-endian float32), in any order of
// index. Every index from 0 to n-1 must appear once, and every vector must
// have the same length. Errors are KindInvalid.
func DecodeEmbeddingsResponse(body []byte) (EmbeddingsResponse, error) {
	var w wireEmbeddingsResponse
	if err := json.Unmarshal(body, &w); err != nil {
		return EmbeddingsResponse{}, invalid("embeddings response: malformed JSON: %v", err)
	}
	r := EmbeddingsResponse{Model: w.Model, PromptTokens: w.Usage.PromptTokens, TotalTokens: w.Usage.TotalTokens}
	n := len(w.Data)
	vecs := make([][]float32, n)
	dim := -1
	for i, d := range w.Data {
		if d.Index == nil || *d.Index < 0 || *d.Index >= n {
			return r, invalid("embeddings response: data[%d].index is missing or not in 0..%d", i, n-1)
		}
		if vecs[*d.Index] != nil {
			return r, invalid("embeddings response: data[%d].index %d appears twice", i, *d.Index)
		}
		v, err := decodeVector(d.Embedding)
		if err != nil {
			return r, invalid("embeddings response: data[%d].embedding: %v", i, err)
		}
		if dim >= 0 && len(v) != dim {
			return r, invalid("embeddings response: data[%d].embedding has %d values, data before it %d", i, len(v), dim)
		}
		dim = len(v)
		vecs[*d.Index] = v
	}
	dim = max(dim, 0)
	data := make([]byte, 0, 4*n*dim)
	for _, v := range vecs {
		for _, f := range v {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(f))
		}
	}
	r.Embedding = inference.Tensor{Name: EmbedOutput, DataType: inference.FP32, Shape: []int64{int64(n), int64(dim)}, Data: data}
	return r, nil
}

// decodeVector reads one embedding: a float array or a base64 string.
func decodeVector(raw json.RawMessage) ([]float32, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b)%4 != 0 {
			return nil, fmt.Errorf("not base64 of little-endian float32 values")
		}
		v := make([]float32, len(b)/4)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return v, nil
	}
	var nums []json.Number
	if err := json.Unmarshal(raw, &nums); err != nil {
		return nil, fmt.Errorf("want an array of numbers or a base64 string")
	}
	v := make([]float32, len(nums))
	for i, n := range nums {
		f, err := strconv.ParseFloat(string(n), 32)
		if err != nil {
			return nil, fmt.Errorf("value %d: %s is not a float32", i, n)
		}
		v[i] = float32(f)
	}
	return v, nil
}

// AppendEmbeddingsResponse appends the OpenAI answer for emb (FP32 [n, dim],
// row i the vector of index i) in the given encoding, with usage.
func AppendEmbeddingsResponse(dst []byte, model string, emb *inference.Tensor, promptTokens int64, encoding string) ([]byte, error) {
	if emb.DataType != inference.FP32 || len(emb.Shape) != 2 {
		return dst, fmt.Errorf("codec: embeddings must be FP32 [n, dim], got %s %s", emb.DataType, inference.FormatShape(emb.Shape))
	}
	n, dim := int(emb.Shape[0]), int(emb.Shape[1])
	if len(emb.Data) != 4*n*dim {
		return dst, fmt.Errorf("codec: embeddings of shape %s hold %d bytes", inference.FormatShape(emb.Shape), len(emb.Data))
	}
	dst = append(dst, `{"object":"list","data":[`...)
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"object":"embedding","index":`...)
		dst = strconv.AppendInt(dst, int64(i), 10)
		dst = append(dst, `,"embedding":`...)
		row := emb.Data[4*dim*i : 4*dim*(i+1)]
		if encoding == EncodingBase64 {
			dst = append(dst, '"')
			dst = base64.StdEncoding.AppendEncode(dst, row)
			dst = append(dst, '"')
		} else {
			dst = append(dst, '[')
			for j := range dim {
				if j > 0 {
					dst = append(dst, ',')
				}
				f := math.Float32frombits(binary.LittleEndian.Uint32(row[4*j:]))
				if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
					return dst, fmt.Errorf("codec: embedding %d value %d is %v, which JSON cannot carry; ask for base64", i, j, f)
				}
				dst = strconv.AppendFloat(dst, float64(f), 'g', -1, 32)
			}
			dst = append(dst, ']')
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `],"model":`...)
	dst = appendString(dst, model)
	dst = append(dst, `,"usage":{"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, promptTokens, 10)
	dst = append(dst, `,"total_tokens":`...)
	dst = strconv.AppendInt(dst, promptTokens, 10)
	return append(dst, `}}`...), nil
}

// OpenAI error types, by the status they come with.
const (
	OpenAIInvalidRequest = "invalid_request_error"
	OpenAINotFound       = "not_found_error"
	OpenAIRateLimit      = "rate_limit_error"
	OpenAIServerError    = "server_error"
	OpenAIUnavailable    = "service_unavailable_error"
	OpenAITimeout        = "timeout_error"
)

// OpenAIErrorType is the OpenAI error type that goes with an HTTP status.
func OpenAIErrorType(status int) string {
	switch {
	case status == 404:
		return OpenAINotFound
	case status == 429:
		return OpenAIRateLimit
	case status == 503:
		return OpenAIUnavailable
	case status == 504:
		return OpenAITimeout
	case status < 500:
		return OpenAIInvalidRequest
	}
	return OpenAIServerError
}

// AppendOpenAIError appends OpenAI's error shape
// {"error":{"message","type","param","code"}}; an empty param or code is
// null.
func AppendOpenAIError(dst []byte, msg, typ, param, code string) []byte {
	dst = append(dst, `{"error":{"message":`...)
	dst = appendString(dst, msg)
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, typ)
	dst = append(dst, `,"param":`...)
	dst = appendNullable(dst, param)
	dst = append(dst, `,"code":`...)
	dst = appendNullable(dst, code)
	return append(dst, `}}`...)
}

func appendNullable(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, "null"...)
	}
	return appendString(dst, s)
}

// OpenAIErrorText returns the message of an OpenAI error body, or "" when
// body is not one.
func OpenAIErrorText(body []byte) string {
	var e struct {
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != nil {
		return e.Error.Message
	}
	return ""
}
