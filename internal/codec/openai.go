package codec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// The OpenAI embeddings API (POST /v1/embeddings), as OpenAI, Hugging Face
// text-embeddings-inference, vLLM, Infinity, llama.cpp and Ollama serve it.
//
// Inside batchmesh an embeddings request is one inference.Request: one
// BYTES input of shape [n] — EmbedInputText (each element a UTF-8 string)
// or EmbedInputTokens (each element the token ids as little-endian uint32)
// — and, when the caller asked for it, the integer parameter
// ParamDimensions. Its answer has two outputs: EmbedOutput, FP32 [n, dim],
// and EmbedOutputTokens, INT64 [n], each row's share of the prompt tokens.

// Names of the tensors and parameters of an embeddings request.
const (
	EmbedInputText    = "text"
	EmbedInputTokens  = "tokens"
	EmbedOutput       = "embedding"
	EmbedOutputTokens = "prompt_tokens"
	ParamDimensions   = "dimensions"
)

// Encoding formats of an embeddings answer.
const (
	EncodingFloat  = "float"
	EncodingBase64 = "base64"
)

// MaxEmbeddingInputs is the most inputs one request may carry (OpenAI's
// own limit).
const MaxEmbeddingInputs = 2048

// MaxTokenID is the largest token id an input may hold.
const MaxTokenID = math.MaxUint32

// ParamError names the request field an error is about. Decode errors of
// the OpenAI decoders wrap one, so that the OpenAI error shape can carry it
// as "param".
type ParamError struct{ Param string }

func (e *ParamError) Error() string { return "invalid field " + e.Param }

// ParamOf returns the field an error is about, or "".
func ParamOf(err error) string {
	var pe *ParamError
	if errors.As(err, &pe) {
		return pe.Param
	}
	return ""
}

func invalidParam(param, format string, args ...any) error {
	return &inference.Error{Kind: inference.KindInvalid, Msg: "codec: " + fmt.Sprintf(format, args...), Err: &ParamError{Param: param}}
}

// EmbeddingsRequest is a decoded OpenAI embeddings request.
type EmbeddingsRequest struct {
	Model string
	// Input is the one BYTES tensor of shape [n] (EmbedInputText or
	// EmbedInputTokens) described in the file comment.
	Input          inference.Tensor
	EncodingFormat string // EncodingFloat or EncodingBase64; float when absent
	Dimensions     int    // 0 when absent
	User           string
}

type wireEmbeddingsRequest struct {
	Model          *json.RawMessage `json:"model"`
	Input          *json.RawMessage `json:"input"`
	EncodingFormat *json.RawMessage `json:"encoding_format"`
	Dimensions     *json.RawMessage `json:"dimensions"`
	User           *json.RawMessage `json:"user"`
}

// DecodeEmbeddingsRequest parses an OpenAI embeddings request body. Unknown
// fields are ignored, as OpenAI-compatible servers do. Errors are KindInvalid,
// name the field (ParamOf) and say what is allowed. The tensor owns its
// bytes.
func DecodeEmbeddingsRequest(body []byte) (EmbeddingsRequest, error) {
	var w wireEmbeddingsRequest
	if err := strictUnmarshal(body, &w); err != nil {
		return EmbeddingsRequest{}, invalidParam("", "embeddings request: %v; want a JSON object with model and input", err)
	}
	var r EmbeddingsRequest
	if w.Model == nil || json.Unmarshal(*w.Model, &r.Model) != nil || r.Model == "" {
		return r, invalidParam("model", "model must be a non-empty string naming the model")
	}
	if w.Input == nil {
		return r, invalidParam("input", "input is missing; give a string, an array of strings, an array of token ids or an array of token id arrays")
	}
	var err error
	if r.Input, err = decodeEmbeddingInput(*w.Input); err != nil {
		return r, err
	}
	r.EncodingFormat = EncodingFloat
	if w.EncodingFormat != nil && string(*w.EncodingFormat) != "null" {
		if json.Unmarshal(*w.EncodingFormat, &r.EncodingFormat) != nil ||
			r.EncodingFormat != EncodingFloat && r.EncodingFormat != EncodingBase64 {
			return r, invalidParam("encoding_format", "encoding_format %s is not allowed; use \"float\" or \"base64\"", clip(*w.EncodingFormat))
		}
	}
	if w.Dimensions != nil && string(*w.Dimensions) != "null" {
		d, err := strconv.ParseInt(string(*w.Dimensions), 10, 32)
		if err != nil || d < 1 {
			return r, invalidParam("dimensions", "dimensions %s is not allowed; must be a whole number, 1 or more", clip(*w.Dimensions))
		}
		r.Dimensions = int(d)
	}
	if w.User != nil && string(*w.User) != "null" {
		if json.Unmarshal(*w.User, &r.User) != nil {
			return r, invalidParam("user", "user must be a string")
		}
	}
	return r, nil
}

// strictUnmarshal decodes one JSON value into v, refusing trailing data.
func strictUnmarshal(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed JSON: %w", err)
	}
	if _, err := dec.Token(); err == nil {
		return errors.New("data after the top-level value")
	}
	return nil
}

// clip quotes a raw JSON value for a message, cut to 48 bytes.
func clip(raw []byte) string {
	if len(raw) > 48 {
		return string(raw[:48]) + "…"
	}
	return string(raw)
}

// decodeEmbeddingInput turns input (string | []string | []int | [][]int)
// into one BYTES tensor.
func decodeEmbeddingInput(raw json.RawMessage) (inference.Tensor, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return inference.Tensor{}, invalidParam("input", "input is not a valid JSON string")
		}
		if s == "" {
			return inference.Tensor{}, invalidParam("input", "input is an empty string; each input must hold at least one character")
		}
		return bytesTensor(EmbedInputText, [][]byte{[]byte(s)}), nil
	}
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return inference.Tensor{}, invalidParam("input", "input %s is not allowed; give a string, an array of strings, an array of token ids or an array of token id arrays", clip(raw))
	}
	if len(items) == 0 {
		return inference.Tensor{}, invalidParam("input", "input is an empty array; give at least one input")
	}
	if len(items) > MaxEmbeddingInputs {
		return inference.Tensor{}, invalidParam("input", "input has %d items; at most %d are allowed", len(items), MaxEmbeddingInputs)
	}
	first := bytes.TrimSpace(items[0])
	switch {
	case len(first) > 0 && first[0] == '"':
		rows := make([][]byte, len(items))
		for i, it := range items {
			var s string
			if json.Unmarshal(it, &s) != nil {
				return inference.Tensor{}, invalidParam("input", "input[%d] is %s, not a string; an array of strings must hold only strings", i, clip(it))
			}
			if s == "" {
				return inference.Tensor{}, invalidParam("input", "input[%d] is an empty string; each input must hold at least one character", i)
			}
			rows[i] = []byte(s)
		}
		return bytesTensor(EmbedInputText, rows), nil
	case len(first) > 0 && first[0] == '[':
		rows := make([][]byte, len(items))
		for i, it := range items {
			var ids []json.RawMessage
			if json.Unmarshal(it, &ids) != nil {
				return inference.Tensor{}, invalidParam("input", "input[%d] is %s, not an array of token ids; an array of token arrays must hold only arrays", i, clip(it))
			}
			if len(ids) == 0 {
				return inference.Tensor{}, invalidParam("input", "input[%d] is an empty token array; each input must hold at least one token", i)
			}
			row := make([]byte, 0, 4*len(ids))
			for j, id := range ids {
				v, err := tokenID(id)
				if err != nil {
					return inference.Tensor{}, invalidParam("input", "input[%d][%d]: %v", i, j, err)
				}
				row = binary.LittleEndian.AppendUint32(row, v)
			}
			rows[i] = row
		}
		return bytesTensor(EmbedInputTokens, rows), nil
	default:
		row := make([]byte, 0, 4*len(items))
		for j, id := range items {
			v, err := tokenID(id)
			if err != nil {
				return inference.Tensor{}, invalidParam("input", "input[%d]: %v", j, err)
			}
			row = binary.LittleEndian.AppendUint32(row, v)
		}
		return bytesTensor(EmbedInputTokens, [][]byte{row}), nil
	}
}

func tokenID(raw json.RawMessage) (uint32, error) {
	v, err := strconv.ParseUint(string(bytes.TrimSpace(raw)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s is not a token id; token ids are whole numbers from 0 to %d", clip(raw), uint32(MaxTokenID))
	}
	return uint32(v), nil
}

// bytesTensor builds a BYTES tensor of shape [len(rows)].
func bytesTensor(name string, rows [][]byte) inference.Tensor {
	n := 0
	for _, r := range rows {
		n += 4 + len(r)
	}
	data := make([]byte, 0, n)
	for _, r := range rows {
		data = binary.LittleEndian.AppendUint32(data, uint32(len(r)))
		data = append(data, r...)
	}
	return inference.Tensor{Name: name, DataType: inference.Bytes, Shape: []int64{int64(len(rows))}, Data: data}
}

// BytesElements splits a BYTES tensor's data into its elements, which alias
// it.
func BytesElements(data []byte) ([][]byte, error) {
	var out [][]byte
	for off := 0; off < len(data); {
		if len(data)-off < 4 {
			return nil, fmt.Errorf("codec: BYTES element %d is cut short", len(out))
		}
		n := int(binary.LittleEndian.Uint32(data[off:]))
		off += 4
		if n > len(data)-off {
			return nil, fmt.Errorf("codec: BYTES element %d claims %d bytes, %d are left", len(out), n, len(data)-off)
		}
		out = append(out, data[off:off+n:off+n])
		off += n
	}
	return out, nil
}

// AppendEmbeddingsRequest appends the OpenAI request body for the rows of
// input (a tensor as DecodeEmbeddingsRequest makes), always as an array, with
// encoding_format float and dimensions when above 0.
func AppendEmbeddingsRequest(dst []byte, model string, input *inference.Tensor, dimensions int) ([]byte, error) {
	rows, err := BytesElements(input.Data)
	if err != nil {
		return dst, err
	}
	dst = append(dst, `{"model":`...)
	dst = appendString(dst, model)
	dst = append(dst, `,"input":[`...)
	for i, r := range rows {
		if i > 0 {
			dst = append(dst, ',')
		}
		switch input.Name {
		case EmbedInputText:
			if !utf8.Valid(r) {
				return dst, fmt.Errorf("codec: input %d is not UTF-8", i)
			}
			dst = appendString(dst, r)
		case EmbedInputTokens:
			if len(r)%4 != 0 {
				return dst, fmt.Errorf("codec: input %d holds %d bytes, not whole uint32 token ids", i, len(r))
			}
			dst = append(dst, '[')
			for j := 0; j < len(r); j += 4 {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint32(r[j:])), 10)
			}
			dst = append(dst, ']')
		default:
			return dst, fmt.Errorf("codec: embeddings input %q is neither %q nor %q", input.Name, EmbedInputText, EmbedInputTokens)
		}
	}
	dst = append(dst, `],"encoding_format":"float"`...)
	if dimensions > 0 {
		dst = append(dst, `,"dimensions":`...)
		dst = strconv.AppendInt(dst, int64(dimensions), 10)
	}
	return append(dst, '}'), nil
}
