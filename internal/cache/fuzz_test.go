package cache_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/cache"
	"github.com/batchmesh/batchmesh/internal/inference"
)

var fuzzTypes = []inference.DataType{
	inference.FP32, inference.FP64, inference.FP16, inference.BF16,
	inference.Int8, inference.Int16, inference.Int32, inference.Int64,
	inference.Uint8, inference.Uint16, inference.Uint32, inference.Uint64,
	inference.Bool, inference.Bytes,
}

// fuzzInput carves an input of rows rows out of data. Values JSON cannot
// carry (NaN, infinities, BOOL other than 0 and 1, BYTES that are not
// UTF-8) are made carriable, so that both encodings hold the same rows.
// Rows whose bit is set in dup are copies of row 0.
func fuzzInput(data []byte, dt inference.DataType, rows int, dup uint8) inference.Tensor {
	t := inference.Tensor{Name: "input", DataType: dt}
	if dt == inference.Bytes {
		cols := 1 + len(data)%3
		rowData := make([][]byte, rows)
		for r := range rows {
			for range cols {
				n := 0
				if len(data) > 0 {
					n = int(data[0]) % 8
					data = data[1:]
				}
				n = min(n, len(data))
				s := strings.ToValidUTF8(string(data[:n]), "?")
				data = data[n:]
				rowData[r] = binary.LittleEndian.AppendUint32(rowData[r], uint32(len(s)))
				rowData[r] = append(rowData[r], s...)
			}
		}
		for r := 1; r < rows; r++ {
			if dup&(1<<r) != 0 {
				rowData[r] = rowData[0]
			}
		}
		t.Shape = []int64{int64(rows), int64(cols)}
		t.Data = slices.Concat(rowData...)
		return t
	}
	size := dt.Size()
	cols := max(1, len(data)/(rows*size))
	buf := make([]byte, rows*cols*size)
	copy(buf, data)
	for i := 0; i < len(buf); i += size {
		e := buf[i : i+size]
		switch dt {
		case inference.Bool:
			e[0] &= 1
		case inference.FP16:
			if binary.LittleEndian.Uint16(e)&0x7c00 == 0x7c00 {
				e[1] &^= 0x40 // exponent all ones: NaN or infinity
			}
		case inference.BF16:
			if binary.LittleEndian.Uint16(e)&0x7f80 == 0x7f80 {
				e[1] &^= 0x40
			}
		case inference.FP32:
			if f := math.Float32frombits(binary.LittleEndian.Uint32(e)); math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				e[3] &^= 0x40
			}
		case inference.FP64:
			if f := math.Float64frombits(binary.LittleEndian.Uint64(e)); math.IsNaN(f) || math.IsInf(f, 0) {
				e[7] &^= 0x40
			}
		}
	}
	rowBytes := cols * size
	for r := 1; r < rows; r++ {
		if dup&(1<<r) != 0 {
			copy(buf[r*rowBytes:(r+1)*rowBytes], buf[:rowBytes])
		}
	}
	t.Shape = []int64{int64(rows), int64(cols)}
	t.Data = buf
	return t
}

// FuzzRowKeys checks the key canonicalisation: equal rows get equal keys
// and different rows different keys, within a request and across the JSON
// and binary encodings of it; the request id and binary_data_output leave
// keys alone while any other parameter changes them.
func FuzzRowKeys(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef"), uint8(0), uint8(3), uint8(0b100), "temperature", "req-1")
	f.Add([]byte{0x7f, 0x80, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x80}, uint8(2), uint8(2), uint8(0), "priority", "")
	f.Add([]byte("\x03abc\x00\x05héllo\x02\xff\xfe"), uint8(13), uint8(4), uint8(0b1010), "binary_data_output", "x")
	f.Add([]byte{1, 0, 1, 1, 0, 0}, uint8(12), uint8(1), uint8(0b10), "", "id")
	f.Add([]byte{0, 0x80, 0x01, 0x00, 0xff, 0x7b, 0x00, 0x7c}, uint8(3), uint8(1), uint8(0), "top_k", "")
	f.Fuzz(func(t *testing.T, data []byte, dtSel, rowSel, dup uint8, param, id string) {
		if len(data) > 4096 {
			return
		}
		dt := fuzzTypes[int(dtSel)%len(fuzzTypes)]
		rows := 1 + int(rowSel)%6
		in := fuzzInput(data, dt, rows, dup)
		if err := in.Validate(); err != nil {
			t.Fatalf("fuzzInput built an invalid tensor: %v", err)
		}
		req := inference.Request{ID: id, Inputs: []inference.Tensor{in}}
		scope := cache.Scope{Model: "m", Version: "1", Protocol: "v2", Route: "infer"}
		keys := rowKeys(&scope, req.Inputs)

		// Within the request: equal rows ⇔ equal keys; alone ⇔ in a batch.
		off := in.RowOffsets(nil)
		for i := range rows {
			ri := in.Data[off[i]:off[i+1]]
			for j := range i {
				rj := in.Data[off[j]:off[j+1]]
				if bytes.Equal(ri, rj) != (keys[i] == keys[j]) {
					t.Fatalf("rows %d and %d: equal bytes %v, equal keys %v", j, i, bytes.Equal(ri, rj), keys[i] == keys[j])
				}
			}
			alone := in.Slice(off, i, i+1)
			if rowKeys(&scope, []inference.Tensor{alone})[0] != keys[i] {
				t.Fatalf("row %d: key differs alone and in a batch of %d", i, rows)
			}
		}

		// Across encodings, with the client asking for binary output or not.
		for _, bin := range []bool{false, true} {
			wire := req
			if bin {
				wire.Parameters = inference.Parameters{inference.ParamBinaryDataOutput: true}
			}
			got := roundTrip(t, wire, bin)
			s := scope
			s.Parameters = got.Parameters
			if k := rowKeys(&s, got.Inputs); !slices.Equal(k, keys) {
				t.Fatalf("binary=%v: keys differ after an encode/decode round trip of %s %v", bin, dt, in.Shape)
			}
		}

		// Parameters: transport ones leave keys alone, others change them.
		if param != "" {
			s := scope
			s.Parameters = inference.Parameters{param: id}
			transport := slices.Contains([]string{
				inference.ParamBinaryDataOutput, inference.ParamBinaryData, inference.ParamBinaryDataSize, "priority", "timeout",
			}, param)
			if same := rowKeys(&s, req.Inputs)[0] == keys[0]; same != transport {
				t.Fatalf("parameter %q: key unchanged %v, want %v", param, same, transport)
			}
		}
	})
}
