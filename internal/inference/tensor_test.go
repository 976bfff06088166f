package inference_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// fp32 builds an FP32 tensor in the canonical layout.
func fp32(name string, shape []int64, vals ...float32) inference.Tensor {
	var data []byte
	for _, v := range vals {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
	}
	return inference.Tensor{Name: name, DataType: inference.FP32, Shape: shape, Data: data}
}

// byteStrings builds a BYTES tensor: each element a 4-byte length and its bytes.
func byteStrings(name string, shape []int64, elems ...string) inference.Tensor {
	var data []byte
	for _, e := range elems {
		data = binary.LittleEndian.AppendUint32(data, uint32(len(e)))
		data = append(data, e...)
	}
	return inference.Tensor{Name: name, DataType: inference.Bytes, Shape: shape, Data: data}
}

func TestDataType(t *testing.T) {
	tests := []struct {
		name string
		dt   inference.DataType
		size int
	}{
		{"BOOL", inference.Bool, 1},
		{"UINT8", inference.Uint8, 1},
		{"UINT16", inference.Uint16, 2},
		{"UINT32", inference.Uint32, 4},
		{"UINT64", inference.Uint64, 8},
		{"INT8", inference.Int8, 1},
		{"INT16", inference.Int16, 2},
		{"INT32", inference.Int32, 4},
		{"INT64", inference.Int64, 8},
		{"FP16", inference.FP16, 2},
		{"BF16", inference.BF16, 2},
		{"FP32", inference.FP32, 4},
		{"FP64", inference.FP64, 8},
		{"BYTES", inference.Bytes, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dt, ok := inference.ParseDataType(tt.name)
			if !ok || dt != tt.dt {
				t.Fatalf("ParseDataType(%q) = %v, %v; want %v, true", tt.name, dt, ok, tt.dt)
			}
			if got := dt.String(); got != tt.name {
				t.Errorf("String() = %q, want %q", got, tt.name)
			}
			if got := dt.Size(); got != tt.size {
				t.Errorf("Size() = %d, want %d", got, tt.size)
			}
			if !dt.Valid() {
				t.Error("Valid() = false")
			}
			if !strings.Contains(inference.DataTypeNames, tt.name) {
				t.Errorf("DataTypeNames %q does not list %s", inference.DataTypeNames, tt.name)
			}
		})
	}
	if n := len(strings.Split(inference.DataTypeNames, ", ")); n != len(tests) {
		t.Errorf("DataTypeNames lists %d types, want %d", n, len(tests))
	}
	for _, bad := range []string{"", "fp32", "Fp32", "INVALID", "FLOAT", "STRING", "FP32 ", "INT128"} {
		if dt, ok := inference.ParseDataType(bad); ok || dt != inference.Invalid {
			t.Errorf("ParseDataType(%q) = %v, %v; want Invalid, false", bad, dt, ok)
		}
	}
	for _, dt := range []inference.DataType{inference.Invalid, inference.Bytes + 1, 255} {
		if dt.Valid() || dt.Size() != 0 || dt.String() != "INVALID" {
			t.Errorf("DataType(%d): Valid %v, Size %d, String %q; want false, 0, INVALID", dt, dt.Valid(), dt.Size(), dt.String())
		}
	}
}

func TestShapeElements(t *testing.T) {
	tests := []struct {
		name    string
		shape   []int64
		want    int64
		wantErr string
	}{
		{name: "scalar", shape: nil, want: 1},
		{name: "empty shape", shape: []int64{}, want: 1},
		{name: "vector", shape: []int64{7}, want: 7},
		{name: "matrix", shape: []int64{2, 3}, want: 6},
		{name: "zero rows", shape: []int64{0, 5}, want: 0},
		{name: "zero after huge", shape: []int64{1 << 40, 1 << 40, 0}, wantErr: "more than"},
		{name: "zero before huge", shape: []int64{0, 1 << 62, 1 << 62}, want: 0},
		{name: "exactly the limit", shape: []int64{1 << 20, 1 << 20}, want: inference.MaxElements},
		{name: "over the limit", shape: []int64{1 << 20, 1<<20 + 1}, wantErr: "more than 1099511627776 elements"},
		{name: "overflowing int64", shape: []int64{1 << 62, 4}, wantErr: "more than"},
		{name: "negative", shape: []int64{2, -1}, wantErr: "dimension 1 is -1"},
		{name: "most negative", shape: []int64{math.MinInt64}, wantErr: "dimension 0 is -9223372036854775808"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := inference.ShapeElements("x", tt.shape)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ShapeElements(%v) = %d, want an error", tt.shape, got)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `"x"`) {
					t.Errorf("error %q does not name the tensor and contain %q", err, tt.wantErr)
				}
				if inference.KindOf(err) != inference.KindInvalid {
					t.Errorf("KindOf = %v, want KindInvalid", inference.KindOf(err))
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ShapeElements(%v) = %d, %v; want %d", tt.shape, got, err, tt.want)
			}
			tensor := inference.Tensor{Name: "x", Shape: tt.shape}
			if n, err := tensor.Elements(); n != got || err != nil {
				t.Errorf("Elements() = %d, %v; want %d", n, err, got)
			}
		})
	}
}

func TestFormatShape(t *testing.T) {
	tests := []struct {
		shape []int64
		want  string
	}{
		{nil, "[]"},
		{[]int64{3}, "[3]"},
		{[]int64{2, 3, 4}, "[2,3,4]"},
		{[]int64{-1, 0}, "[-1,0]"},
	}
	for _, tt := range tests {
		if got := inference.FormatShape(tt.shape); got != tt.want {
			t.Errorf("FormatShape(%v) = %q, want %q", tt.shape, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		tensor  inference.Tensor
		wantErr []string // substrings; nil: valid
	}{
		{name: "fp32", tensor: fp32("x", []int64{2, 2}, 1, 2, 3, 4)},
		{name: "fp32 scalar", tensor: fp32("x", nil, 1)},
		{name: "fp32 empty", tensor: fp32("x", []int64{0, 4})},
		{name: "bytes", tensor: byteStrings("s", []int64{3}, "", "a", "bc")},
		{name: "bytes empty", tensor: byteStrings("s", []int64{0})},
		{name: "bool", tensor: inference.Tensor{Name: "b", DataType: inference.Bool, Shape: []int64{3}, Data: []byte{0, 1, 0}}},
		{
			name:    "unknown datatype",
			tensor:  inference.Tensor{Name: "x", Shape: []int64{1}, Data: []byte{0}},
			wantErr: []string{`"x"`, "unknown datatype", inference.DataTypeNames},
		},
		{
			name:    "too few bytes",
			tensor:  fp32("x", []int64{2, 3}, 1, 2, 3, 4, 5),
			wantErr: []string{`"x"`, "[2,3]", "6 elements (24 bytes)", "data has 20 bytes"},
		},
		{
			name:    "too many bytes",
			tensor:  fp32("x", []int64{1}, 1, 2),
			wantErr: []string{`"x"`, "1 elements (4 bytes)", "data has 8 bytes"},
		},
		{
			name:    "bool not 0 or 1",
			tensor:  inference.Tensor{Name: "b", DataType: inference.Bool, Shape: []int64{2}, Data: []byte{1, 2}},
			wantErr: []string{`"b"`, "BOOL element is 2"},
		},
		{
			name:    "negative dimension",
			tensor:  fp32("x", []int64{-1}),
			wantErr: []string{`"x"`, "dimension 0 is -1"},
		},
		{
			name:    "bytes count mismatch",
			tensor:  byteStrings("s", []int64{3}, "a", "b"),
			wantErr: []string{`"s"`, "needs 3 elements, data has 2"},
		},
		{
			name:    "bytes truncated length",
			tensor:  inference.Tensor{Name: "s", DataType: inference.Bytes, Shape: []int64{1}, Data: []byte{1, 0}},
			wantErr: []string{`"s"`, "BYTES element 0", "need a 4-byte length"},
		},
		{
			name:    "bytes length past the end",
			tensor:  inference.Tensor{Name: "s", DataType: inference.Bytes, Shape: []int64{2}, Data: []byte{0, 0, 0, 0, 9, 0, 0, 0, 'a'}},
			wantErr: []string{`"s"`, "BYTES element 1", "length 9 but only 1 bytes left"},
		},
		{
			name:    "bytes length 4GiB",
			tensor:  inference.Tensor{Name: "s", DataType: inference.Bytes, Shape: []int64{1}, Data: []byte{0xff, 0xff, 0xff, 0xff}},
			wantErr: []string{"length 4294967295 but only 0 bytes left"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tensor.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tt.wantErr)
			}
			if got := inference.HTTPStatus(err); got != 400 {
				t.Errorf("HTTPStatus = %d, want 400", got)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestCountBytesElements(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		want    int64
		wantErr bool
	}{
		{name: "nil", data: nil, want: 0},
		{name: "one empty", data: []byte{0, 0, 0, 0}, want: 1},
		{name: "two", data: byteStrings("", nil, "ab", "c").Data, want: 2},
		{name: "short length", data: []byte{0, 0, 0}, want: 0, wantErr: true},
		{name: "short body", data: []byte{2, 0, 0, 0, 'a'}, want: 0, wantErr: true},
		{name: "second short", data: []byte{0, 0, 0, 0, 1}, want: 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := inference.CountBytesElements(tt.data)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("CountBytesElements = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestRowOffsets(t *testing.T) {
	tests := []struct {
		name   string
		tensor inference.Tensor
		want   []int
	}{
		{name: "fp32 3x2", tensor: fp32("x", []int64{3, 2}, 1, 2, 3, 4, 5, 6), want: []int{0, 8, 16, 24}},
		{name: "fp32 1x4", tensor: fp32("x", []int64{1, 4}, 1, 2, 3, 4), want: []int{0, 16}},
		{name: "fp32 vector", tensor: fp32("x", []int64{3}, 1, 2, 3), want: []int{0, 4, 8, 12}},
		{name: "fp32 zero rows", tensor: fp32("x", []int64{0, 4}), want: []int{0}},
		{name: "fp32 zero columns", tensor: fp32("x", []int64{3, 0}), want: []int{0, 0, 0, 0}},
		{name: "scalar is one row", tensor: fp32("x", nil, 7), want: []int{0, 4}},
		{name: "bytes 3", tensor: byteStrings("s", []int64{3}, "a", "", "bcd"), want: []int{0, 5, 9, 16}},
		{name: "bytes 2x2", tensor: byteStrings("s", []int64{2, 2}, "a", "bb", "", "c"), want: []int{0, 11, 20}},
		{name: "bytes zero columns", tensor: byteStrings("s", []int64{2, 0}), want: []int{0, 0, 0}},
		{name: "bytes zero rows", tensor: byteStrings("s", []int64{0, 3}), want: []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.tensor.Validate(); err != nil {
				t.Fatalf("bad test tensor: %v", err)
			}
			got := tt.tensor.RowOffsets(nil)
			if !slices.Equal(got, tt.want) {
				t.Errorf("RowOffsets = %v, want %v", got, tt.want)
			}
			prefix := []int{42}
			if got := tt.tensor.RowOffsets(prefix); !slices.Equal(got, append([]int{42}, tt.want...)) {
				t.Errorf("RowOffsets(dst) = %v, want it appended to [42]", got)
			}
		})
	}
}

func TestRowOffsetsDoesNotAllocate(t *testing.T) {
	x := fp32("x", []int64{64, 16}, make([]float32, 64*16)...)
	s := byteStrings("s", []int64{4, 2}, "a", "b", "c", "d", "e", "f", "g", "h")
	dst := make([]int, 0, 128)
	if n := testing.AllocsPerRun(100, func() { dst = x.RowOffsets(dst[:0]) }); n != 0 {
		t.Errorf("fixed-size RowOffsets: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { dst = s.RowOffsets(dst[:0]) }); n != 0 {
		t.Errorf("BYTES RowOffsets: %v allocs, want 0", n)
	}
}

func TestSliceConcat(t *testing.T) {
	tensors := []inference.Tensor{
		fp32("x", []int64{5, 3}, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
		fp32("v", []int64{4}, -1, 0, 1, 2),
		{Name: "i8", DataType: inference.Int8, Shape: []int64{3, 2, 2}, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{Name: "b", DataType: inference.Bool, Shape: []int64{4, 1}, Data: []byte{1, 0, 0, 1}},
		{Name: "f64", DataType: inference.FP64, Shape: []int64{2, 1}, Data: make([]byte, 16), Parameters: inference.Parameters{"k": "v"}},
		byteStrings("s", []int64{4}, "alpha", "", "gamma", "δέλτα"),
		byteStrings("s2", []int64{3, 2}, "a", "bb", "", "", "ccc", "d"),
		byteStrings("z", []int64{2, 0}),
	}
	// splits are the row boundaries to cut at, as fractions of rows.
	splits := []struct {
		name string
		cuts func(rows int) []int
	}{
		{"one row each", func(rows int) []int {
			cuts := make([]int, rows+1)
			for i := range cuts {
				cuts[i] = i
			}
			return cuts
		}},
		{"whole", func(rows int) []int { return []int{0, rows} }},
		{"first and rest", func(rows int) []int { return []int{0, 1, rows} }},
		{"with empty parts", func(rows int) []int { return []int{0, 0, 1, 1, rows, rows} }},
	}
	for _, tensor := range tensors {
		for _, sp := range splits {
			t.Run(tensor.Name+"/"+sp.name, func(t *testing.T) {
				if err := tensor.Validate(); err != nil {
					t.Fatalf("bad test tensor: %v", err)
				}
				off := tensor.RowOffsets(nil)
				rows := len(off) - 1
				cuts := sp.cuts(rows)
				var parts []inference.Tensor
				for i := 0; i+1 < len(cuts); i++ {
					lo, hi := cuts[i], cuts[i+1]
					part := tensor.Slice(off, lo, hi)
					if err := part.Validate(); err != nil {
						t.Fatalf("Slice(%d, %d) is invalid: %v", lo, hi, err)
					}
					if part.Shape[0] != int64(hi-lo) || !slices.Equal(part.Shape[1:], tensor.Shape[1:]) {
						t.Errorf("Slice(%d, %d).Shape = %v, want [%d %v]", lo, hi, part.Shape, hi-lo, tensor.Shape[1:])
					}
					if !bytes.Equal(part.Data, tensor.Data[off[lo]:off[hi]]) {
						t.Errorf("Slice(%d, %d).Data = %v, want rows %d..%d", lo, hi, part.Data, lo, hi)
					}
					if len(part.Data) > 0 && &part.Data[0] != &tensor.Data[off[lo]] {
						t.Errorf("Slice(%d, %d) copied the data; it must alias", lo, hi)
					}
					if cap(part.Data) != len(part.Data) {
						t.Errorf("Slice(%d, %d): cap %d > len %d; an append could overwrite the next row", lo, hi, cap(part.Data), len(part.Data))
					}
					if part.Name != tensor.Name || part.DataType != tensor.DataType {
						t.Errorf("Slice lost name or datatype: %q %v", part.Name, part.DataType)
					}
					parts = append(parts, part)
				}
				if &parts[0].Shape[0] == &tensor.Shape[0] {
					t.Error("Slice shares the shape slice; setting dim 0 would change the original")
				}
				got, err := inference.Concat(parts)
				if err != nil {
					t.Fatalf("Concat: %v", err)
				}
				if !bytes.Equal(got.Data, tensor.Data) || !slices.Equal(got.Shape, tensor.Shape) {
					t.Errorf("Concat = shape %v data %v, want shape %v data %v", got.Shape, got.Data, tensor.Shape, tensor.Data)
				}
				if got.Name != tensor.Name || got.DataType != tensor.DataType || len(got.Parameters) != len(tensor.Parameters) {
					t.Errorf("Concat lost name, datatype or parameters: %+v", got)
				}
				if err := got.Validate(); err != nil {
					t.Errorf("Concat result invalid: %v", err)
				}
				if len(parts) > 1 && len(got.Data) > 0 && &got.Data[0] == &tensor.Data[0] {
					t.Error("Concat of several parts aliases its input; it must copy")
				}
			})
		}
	}
}

func TestConcatErrors(t *testing.T) {
	a := fp32("x", []int64{1, 2}, 1, 2)
	tests := []struct {
		name     string
		parts    []inference.Tensor
		wantKind inference.Kind
		wantErr  string
	}{
		{name: "none", parts: nil, wantKind: inference.KindInternal, wantErr: "concat of no tensors"},
		{name: "other name", parts: []inference.Tensor{a, fp32("y", []int64{1, 2}, 1, 2)}, wantKind: inference.KindInvalid, wantErr: `"x": cannot stack FP32 [1,2] with FP32 [1,2]`},
		{name: "other datatype", parts: []inference.Tensor{a, {Name: "x", DataType: inference.Int32, Shape: []int64{1, 2}, Data: make([]byte, 8)}}, wantKind: inference.KindInvalid, wantErr: "with INT32 [1,2]"},
		{name: "other width", parts: []inference.Tensor{a, fp32("x", []int64{1, 3}, 1, 2, 3)}, wantKind: inference.KindInvalid, wantErr: "with FP32 [1,3]"},
		{name: "other rank", parts: []inference.Tensor{a, fp32("x", []int64{2}, 1, 2)}, wantKind: inference.KindInvalid, wantErr: "with FP32 [2]"},
		{name: "scalars", parts: []inference.Tensor{fp32("x", nil, 1), fp32("x", nil, 2)}, wantKind: inference.KindInvalid, wantErr: "cannot stack"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := inference.Concat(tt.parts)
			if err == nil {
				t.Fatal("Concat succeeded, want an error")
			}
			if inference.KindOf(err) != tt.wantKind || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Concat error = %v (kind %v), want kind %v containing %q", err, inference.KindOf(err), tt.wantKind, tt.wantErr)
			}
		})
	}
}

// TestConcatSingleShares checks Concat's documented contract for one part:
// it is returned as it is, sharing its Data (no copy for a batch of one).
func TestConcatSingleShares(t *testing.T) {
	a := fp32("x", []int64{1, 2}, 1, 2)
	got, err := inference.Concat([]inference.Tensor{a})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Data, a.Data) || !slices.Equal(got.Shape, a.Shape) {
		t.Fatalf("Concat of one = %+v, want %+v", got, a)
	}
	if &got.Data[0] != &a.Data[0] {
		t.Error("Concat of one part copied its Data; the doc says it is shared")
	}
}

func TestSameRowType(t *testing.T) {
	tests := []struct {
		name string
		a, b inference.Tensor
		want bool
	}{
		{"same", fp32("x", []int64{1, 2}), fp32("x", []int64{5, 2}), true},
		{"vectors", fp32("x", []int64{1}), fp32("x", []int64{9}), true},
		{"name", fp32("x", []int64{1, 2}), fp32("y", []int64{1, 2}), false},
		{"width", fp32("x", []int64{1, 2}), fp32("x", []int64{1, 3}), false},
		{"rank", fp32("x", []int64{1, 2}), fp32("x", []int64{1, 2, 1}), false},
		{"scalar", fp32("x", nil), fp32("x", nil), false},
		{"datatype", fp32("x", []int64{1}), byteStrings("x", []int64{1}), false},
	}
	for _, tt := range tests {
		if got := inference.SameRowType(&tt.a, &tt.b); got != tt.want {
			t.Errorf("%s: SameRowType = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRequestRows(t *testing.T) {
	tests := []struct {
		name    string
		inputs  []inference.Tensor
		want    int
		wantErr []string
	}{
		{name: "one input", inputs: []inference.Tensor{fp32("a", []int64{3, 2})}, want: 3},
		{name: "agreeing inputs", inputs: []inference.Tensor{fp32("a", []int64{2, 2}), byteStrings("b", []int64{2})}, want: 2},
		{name: "zero rows", inputs: []inference.Tensor{fp32("a", []int64{0, 2})}, want: 0},
		{name: "no inputs", wantErr: []string{"no inputs"}},
		{name: "scalar", inputs: []inference.Tensor{fp32("a", nil)}, wantErr: []string{`"a"`, "scalar", "no batch dimension"}},
		{
			name:    "differing dim 0",
			inputs:  []inference.Tensor{fp32("a", []int64{2, 2}), fp32("b", []int64{3, 2}), fp32("c", []int64{2})},
			wantErr: []string{`input "b" has 3 rows`, `input "a" has 2`, "same batch size"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := inference.Request{Inputs: tt.inputs}
			got, err := r.Rows()
			if tt.wantErr == nil {
				if err != nil || got != tt.want {
					t.Fatalf("Rows() = %d, %v; want %d", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Rows() = %d, want an error", got)
			}
			if inference.HTTPStatus(err) != 400 {
				t.Errorf("HTTPStatus = %d, want 400", inference.HTTPStatus(err))
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestRequestLookups(t *testing.T) {
	r := inference.Request{
		Parameters: inference.Parameters{inference.ParamBinaryDataOutput: true},
		Inputs:     []inference.Tensor{fp32("a", []int64{1}), fp32("b", []int64{1})},
		Outputs: []inference.OutputSpec{
			{Name: "json", Parameters: inference.Parameters{inference.ParamBinaryData: false}},
			{Name: "bin", Parameters: inference.Parameters{inference.ParamBinaryData: true}},
			{Name: "default"},
			{Name: "string", Parameters: inference.Parameters{inference.ParamBinaryData: "true"}},
		},
	}
	if in := r.Input("b"); in == nil || in != &r.Inputs[1] {
		t.Errorf("Input(b) = %p, want %p", in, &r.Inputs[1])
	}
	if in := r.Input("c"); in != nil {
		t.Errorf("Input(c) = %v, want nil", in)
	}
	tests := []struct {
		output               string
		wants, binary        bool
		wantsAll, binaryNone bool // with Outputs nil and no parameters
	}{
		{output: "json", wants: true, binary: false, wantsAll: true},
		{output: "bin", wants: true, binary: true, wantsAll: true},
		{output: "default", wants: true, binary: true, wantsAll: true},
		{output: "string", wants: true, binary: true, wantsAll: true}, // not a bool: falls back to the request
		{output: "other", wants: false, binary: true, wantsAll: true},
	}
	all := inference.Request{}
	none := inference.Request{Outputs: []inference.OutputSpec{}}
	for _, tt := range tests {
		if got := r.Wants(tt.output); got != tt.wants {
			t.Errorf("Wants(%q) = %v, want %v", tt.output, got, tt.wants)
		}
		if got := r.BinaryOutput(tt.output); got != tt.binary {
			t.Errorf("BinaryOutput(%q) = %v, want %v", tt.output, got, tt.binary)
		}
		if got := all.Wants(tt.output); got != tt.wantsAll {
			t.Errorf("nil Outputs: Wants(%q) = %v, want %v", tt.output, got, tt.wantsAll)
		}
		if all.BinaryOutput(tt.output) {
			t.Errorf("no parameters: BinaryOutput(%q) = true, want false", tt.output)
		}
		if none.Wants(tt.output) {
			t.Errorf("empty Outputs: Wants(%q) = true, want false", tt.output)
		}
	}

	resp := inference.Response{Outputs: []inference.Tensor{fp32("y", nil), fp32("z", nil)}}
	if out := resp.Output("z"); out != &resp.Outputs[1] {
		t.Errorf("Output(z) = %p, want %p", out, &resp.Outputs[1])
	}
	if out := resp.Output("q"); out != nil {
		t.Errorf("Output(q) = %v, want nil", out)
	}
}

func TestParameters(t *testing.T) {
	p := inference.Parameters{
		"int": int64(-3), "float": 4.0, "frac": 4.5, "huge": 1e300, "big": float64(1 << 53),
		"str": "7", "bool": true,
	}
	ints := []struct {
		key  string
		want int64
		ok   bool
	}{
		{"int", -3, true}, {"float", 4, true}, {"frac", 0, false}, {"huge", 0, false},
		{"big", 0, false}, {"str", 0, false}, {"bool", 0, false}, {"missing", 0, false},
	}
	for _, tt := range ints {
		if got, ok := p.Int(tt.key); got != tt.want || ok != tt.ok {
			t.Errorf("Int(%q) = %d, %v; want %d, %v", tt.key, got, ok, tt.want, tt.ok)
		}
	}
	if v, ok := p.Bool("bool"); !v || !ok {
		t.Errorf("Bool(bool) = %v, %v; want true, true", v, ok)
	}
	if v, ok := p.Bool("str"); v || ok {
		t.Errorf("Bool(str) = %v, %v; want false, false", v, ok)
	}
	var empty inference.Parameters
	if _, ok := empty.Int("x"); ok {
		t.Error("nil Parameters: Int ok")
	}
	if _, ok := empty.Bool("x"); ok {
		t.Error("nil Parameters: Bool ok")
	}
}

// TestHugeEmptyBatch: a tensor of shape [2^40, 0] holds no data and is
// valid, but a request claiming that many rows is refused before anything
// indexes its rows.
func TestHugeEmptyBatch(t *testing.T) {
	x := fp32("x", []int64{1 << 40, 0})
	req := inference.Request{Inputs: []inference.Tensor{x}}
	_, err := req.Rows()
	if inference.KindOf(err) != inference.KindInvalid || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("Rows() of a [2^40, 0] input: err = %v, want KindInvalid naming the limit", err)
	}
	ok := inference.Request{Inputs: []inference.Tensor{fp32("x", []int64{inference.MaxRows, 0})}}
	if n, err := ok.Rows(); err != nil || n != inference.MaxRows {
		t.Errorf("Rows() at the limit = %d, %v; want %d", n, err, inference.MaxRows)
	}
}
