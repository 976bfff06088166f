package cache_test

import (
	"encoding/binary"
	"math"
	"slices"
	"testing"

	"github.com/batchmesh/batchmesh/internal/cache"
	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// rowKeys is RowKeys over a whole request's inputs.
func rowKeys(s *cache.Scope, inputs []inference.Tensor) []cache.Key {
	rows := int(inputs[0].Shape[0])
	offsets := make([][]int, len(inputs))
	for i := range inputs {
		offsets[i] = inputs[i].RowOffsets(nil)
	}
	return cache.RowKeys(nil, s, inputs, offsets, rows)
}

func fp32Row(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func bytesElems(ss ...string) []byte {
	var b []byte
	for _, s := range ss {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// keyCase builds a scope and one-row inputs from scratch, so that cases
// never share maps or slices.
type keyCase struct {
	scope  cache.Scope
	inputs []inference.Tensor
}

func baseCase() keyCase {
	return keyCase{
		scope: cache.Scope{Model: "m", Version: "1", Protocol: "v2", Route: "infer"},
		inputs: []inference.Tensor{{
			Name: "input", DataType: inference.FP32, Shape: []int64{1, 4}, Data: fp32Row(1, 2, 3, 4),
		}},
	}
}

// TestRowKeyDependsOn changes one thing at a time and says whether the key
// must stay the same.
func TestRowKeyDependsOn(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(c *keyCase) // applied to both cases first; nil for none
		change func(c *keyCase)
		same   bool
	}{
		{name: "nothing", change: func(*keyCase) {}, same: true},
		{name: "binary_data_output parameter", same: true, change: func(c *keyCase) {
			c.scope.Parameters = inference.Parameters{inference.ParamBinaryDataOutput: true}
		}},
		{name: "binary_data on an output", same: true,
			setup: func(c *keyCase) { c.scope.Outputs = []inference.OutputSpec{{Name: "out"}} },
			change: func(c *keyCase) {
				c.scope.Outputs[0].Parameters = inference.Parameters{inference.ParamBinaryData: true}
			}},
		{name: "input binary_data_size", same: true, change: func(c *keyCase) {
			c.inputs[0].Parameters = inference.Parameters{inference.ParamBinaryDataSize: int64(16)}
		}},
		{name: "priority and timeout parameters", same: true, change: func(c *keyCase) {
			c.scope.Parameters = inference.Parameters{"priority": int64(1), "timeout": int64(100)}
		}},
		{name: "model", change: func(c *keyCase) { c.scope.Model = "n" }},
		{name: "version", change: func(c *keyCase) { c.scope.Version = "2" }},
		{name: "protocol", change: func(c *keyCase) { c.scope.Protocol = "openai" }},
		{name: "route", change: func(c *keyCase) { c.scope.Route = "generate" }},
		{name: "tenant", change: func(c *keyCase) { c.scope.Tenant = "a" }},
		{name: "a semantic parameter", change: func(c *keyCase) {
			c.scope.Parameters = inference.Parameters{"temperature": 0.5}
		}},
		{name: "a parameter's type", change: func(c *keyCase) {
			c.scope.Parameters = inference.Parameters{"top_k": "1"}
		}},
		{name: "requested outputs", change: func(c *keyCase) {
			c.scope.Outputs = []inference.OutputSpec{{Name: "other"}}
		}},
		{name: "an output's parameter", change: func(c *keyCase) {
			c.scope.Outputs = []inference.OutputSpec{{Name: "out", Parameters: inference.Parameters{"classification": int64(3)}}}
		}},
		{name: "input name", change: func(c *keyCase) { c.inputs[0].Name = "x" }},
		{name: "datatype with the same bytes", change: func(c *keyCase) { c.inputs[0].DataType = inference.Int32 }},
		{name: "row shape with the same bytes", change: func(c *keyCase) { c.inputs[0].Shape = []int64{1, 2, 2} }},
		{name: "an input parameter", change: func(c *keyCase) {
			c.inputs[0].Parameters = inference.Parameters{"content_type": "str"}
		}},
		{name: "one bit of the row", change: func(c *keyCase) { c.inputs[0].Data[15] ^= 1 }},
		{name: "negative zero",
			setup:  func(c *keyCase) { c.inputs[0].Data = fp32Row(0, 2, 3, 4) },
			change: func(c *keyCase) { c.inputs[0].Data = fp32Row(float32(math.Copysign(0, -1)), 2, 3, 4) }},
		{name: "a second input", change: func(c *keyCase) {
			c.inputs = append(c.inputs, inference.Tensor{Name: "mask", DataType: inference.Bool, Shape: []int64{1, 1}, Data: []byte{1}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, changed := baseCase(), baseCase()
			if tc.setup != nil {
				tc.setup(&base)
				tc.setup(&changed)
			}
			tc.change(&changed)
			a, b := rowKeys(&base.scope, base.inputs), rowKeys(&changed.scope, changed.inputs)
			if (a[0] == b[0]) != tc.same {
				t.Errorf("keys equal = %v, want %v", a[0] == b[0], tc.same)
			}
			ra, rb := cache.RequestKey(&base.scope, base.inputs), cache.RequestKey(&changed.scope, changed.inputs)
			if (ra == rb) != tc.same {
				t.Errorf("request keys equal = %v, want %v", ra == rb, tc.same)
			}
		})
	}
}

// TestRowKeyIndependentOfBatch: a row's key is the same alone and at any
// position of a larger request, and duplicate rows share a key.
func TestRowKeyIndependentOfBatch(t *testing.T) {
	s := cache.Scope{Model: "m", Version: "1", Protocol: "v2", Route: "infer"}
	rows := [][]float32{{1, 2}, {3, 4}, {1, 2}, {5, 6}, {0, 0}}
	var data []byte
	for _, r := range rows {
		data = append(data, fp32Row(r...)...)
	}
	big := []inference.Tensor{{Name: "input", DataType: inference.FP32, Shape: []int64{int64(len(rows)), 2}, Data: data}}
	keys := rowKeys(&s, big)
	if len(keys) != len(rows) {
		t.Fatalf("%d keys for %d rows", len(keys), len(rows))
	}
	for i, r := range rows {
		one := []inference.Tensor{{Name: "input", DataType: inference.FP32, Shape: []int64{1, 2}, Data: fp32Row(r...)}}
		if k := rowKeys(&s, one)[0]; k != keys[i] {
			t.Errorf("row %d: key differs alone and in a batch", i)
		}
		for j := range i {
			if same := slices.Equal(rows[i], rows[j]); same != (keys[i] == keys[j]) {
				t.Errorf("rows %d and %d: equal rows %v but equal keys %v", j, i, same, keys[i] == keys[j])
			}
		}
	}
	// RowKeys appends.
	prefix := []cache.Key{{1}}
	out := cache.RowKeys(prefix, &s, big, [][]int{big[0].RowOffsets(nil)}, len(rows))
	if len(out) != 1+len(rows) || out[0] != (cache.Key{1}) || out[1] != keys[0] {
		t.Error("RowKeys does not append to dst")
	}
}

// TestRowKeyBoundaries: rows whose bytes concatenate to the same stream
// still get different keys.
func TestRowKeyBoundaries(t *testing.T) {
	s := cache.Scope{Model: "m", Version: "1", Protocol: "v2", Route: "infer"}
	two := func(a, b string) []inference.Tensor {
		return []inference.Tensor{
			{Name: "a", DataType: inference.Bytes, Shape: []int64{1, 1}, Data: bytesElems(a)},
			{Name: "b", DataType: inference.Bytes, Shape: []int64{1, 1}, Data: bytesElems(b)},
		}
	}
	if rowKeys(&s, two("ab", "c"))[0] == rowKeys(&s, two("a", "bc"))[0] {
		t.Error(`inputs ("ab", "c") and ("a", "bc") share a key`)
	}
	// Raw bytes moving between two UINT8 inputs of the same shape.
	u8 := func(a, b []byte) []inference.Tensor {
		return []inference.Tensor{
			{Name: "a", DataType: inference.Uint8, Shape: []int64{1, 2}, Data: a},
			{Name: "b", DataType: inference.Uint8, Shape: []int64{1, 2}, Data: b},
		}
	}
	if rowKeys(&s, u8([]byte{1, 2}, []byte{3, 4}))[0] == rowKeys(&s, u8([]byte{3, 4}, []byte{1, 2}))[0] {
		t.Error("swapping the bytes of two inputs keeps the key")
	}
	// Scope strings that concatenate the same way.
	a := cache.Scope{Model: "ab", Version: "c"}
	b := cache.Scope{Model: "a", Version: "bc"}
	in := two("x", "y")
	if rowKeys(&a, in)[0] == rowKeys(&b, in)[0] {
		t.Error(`scopes (model "ab", version "c") and ("a", "bc") share a key`)
	}
	// Parameter names and values that concatenate the same way.
	a.Parameters = inference.Parameters{"ab": "c"}
	b = a
	b.Parameters = inference.Parameters{"a": "bc"}
	if rowKeys(&a, in)[0] == rowKeys(&b, in)[0] {
		t.Error(`parameters {"ab": "c"} and {"a": "bc"} share a key`)
	}
}

// TestRequestKey: a whole request's key depends on every row and their
// order, and differs from the key of its single row.
func TestRequestKey(t *testing.T) {
	s := cache.Scope{Model: "m", Version: "1", Protocol: "v2", Route: "infer"}
	req := func(rows ...float32) []inference.Tensor {
		return []inference.Tensor{{Name: "input", DataType: inference.FP32, Shape: []int64{int64(len(rows)), 1}, Data: fp32Row(rows...)}}
	}
	k := cache.RequestKey(&s, req(1, 2, 3))
	for _, tc := range []struct {
		name   string
		inputs []inference.Tensor
		same   bool
	}{
		{name: "same", inputs: req(1, 2, 3), same: true},
		{name: "one row changed", inputs: req(1, 2, 4)},
		{name: "rows reordered", inputs: req(3, 2, 1)},
		{name: "a row fewer", inputs: req(1, 2)},
	} {
		if got := cache.RequestKey(&s, tc.inputs); (got == k) != tc.same {
			t.Errorf("%s: keys equal = %v, want %v", tc.name, got == k, tc.same)
		}
	}
	one := req(7)
	if cache.RequestKey(&s, one) == rowKeys(&s, one)[0] {
		t.Error("a one-row request's key equals its row's key; the granularities must not share entries")
	}
}

// TestRowKeyAcrossEncodings: the same rows sent as JSON and as binary
// tensor data decode to the same keys, for every datatype.
func TestRowKeyAcrossEncodings(t *testing.T) {
	half := func(bits ...uint16) []byte {
		var b []byte
		for _, v := range bits {
			b = binary.LittleEndian.AppendUint16(b, v)
		}
		return b
	}
	fp64 := func(vs ...float64) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
		return b
	}
	for _, tc := range []struct {
		name string
		in   inference.Tensor
	}{
		{name: "FP32", in: inference.Tensor{DataType: inference.FP32, Shape: []int64{2, 3},
			Data: fp32Row(0.1, -2.5e-38, 3.4028235e38, 1e-45, float32(math.Copysign(0, -1)), 7)}},
		{name: "FP64", in: inference.Tensor{DataType: inference.FP64, Shape: []int64{2, 2}, Data: fp64(0.1, -5e-324, math.MaxFloat64, math.Copysign(0, -1))}},
		{name: "FP16", in: inference.Tensor{DataType: inference.FP16, Shape: []int64{2, 2}, Data: half(0x3c00, 0x0001, 0x7bff, 0x8000)}},
		{name: "BF16", in: inference.Tensor{DataType: inference.BF16, Shape: []int64{2, 2}, Data: half(0x3f80, 0x0001, 0x7f7f, 0x8000)}},
		{name: "INT64", in: inference.Tensor{DataType: inference.Int64, Shape: []int64{2, 1}, Data: fp64(math.Float64frombits(1<<63), math.Float64frombits(1<<63-1))}},
		{name: "UINT64", in: inference.Tensor{DataType: inference.Uint64, Shape: []int64{1, 1}, Data: fp64(math.Float64frombits(math.MaxUint64))}},
		{name: "INT8", in: inference.Tensor{DataType: inference.Int8, Shape: []int64{2, 2}, Data: []byte{0x80, 0x7f, 0, 0xff}}},
		{name: "BOOL", in: inference.Tensor{DataType: inference.Bool, Shape: []int64{3, 1}, Data: []byte{1, 0, 1}}},
		{name: "BYTES", in: inference.Tensor{DataType: inference.Bytes, Shape: []int64{2, 2}, Data: bytesElems("héllo", "", `"\<>&`, "\x00\x1f")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Name = "input"
			req := inference.Request{ID: "a", Inputs: []inference.Tensor{tc.in}}
			want := rowKeys(&cache.Scope{Model: "m"}, req.Inputs)
			for _, bin := range []bool{false, true} {
				got := roundTrip(t, req, bin)
				if k := rowKeys(&cache.Scope{Model: "m"}, got.Inputs); !slices.Equal(k, want) {
					t.Errorf("binary=%v: keys differ after an encode/decode round trip", bin)
				}
			}
		})
	}
}

// roundTrip encodes req as a client would and decodes it as the sidecar
// does.
func roundTrip(t testing.TB, req inference.Request, bin bool) inference.Request {
	t.Helper()
	body, hl, err := codec.EncodeRequest(nil, &req, bin)
	if err != nil {
		t.Fatalf("encode (binary=%v): %v", bin, err)
	}
	got, err := codec.DecodeRequest(body, hl)
	if err != nil {
		t.Fatalf("decode (binary=%v): %v\n%s", bin, err, body)
	}
	return got
}
