package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"math"
	"slices"
	"strconv"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// Key is a row's (or a whole request's) digest.
type Key [sha256.Size]byte

// Scope is what a request's rows share in their keys.
type Scope struct {
	Model, Version string
	Protocol       string // "v2", ...
	Route          string // e.g. "infer"
	Tenant         string // set only when the model's cache scope is per tenant
	Outputs        []inference.OutputSpec
	Parameters     inference.Parameters
}

// transportParams are the request parameters that change how an answer
// travels, not what it is. Every other parameter is part of the key: an
// unknown parameter may change the answer, and a cache must never give a
// wrong one.
var transportParams = []string{
	inference.ParamBinaryDataOutput, inference.ParamBinaryData, inference.ParamBinaryDataSize,
	"priority", "timeout",
}

// keyer hashes fields with lengths, so that no two different field lists
// give the same byte stream.
type keyer struct {
	h   hash.Hash
	buf []byte
}

func (k *keyer) str(s string) {
	k.buf = binary.LittleEndian.AppendUint64(k.buf[:0], uint64(len(s)))
	k.buf = append(k.buf, s...)
	k.h.Write(k.buf)
}

func (k *keyer) bytes(b []byte) {
	k.buf = binary.LittleEndian.AppendUint64(k.buf[:0], uint64(len(b)))
	k.h.Write(k.buf)
	k.h.Write(b)
}

func (k *keyer) u64(v uint64) {
	k.buf = binary.LittleEndian.AppendUint64(k.buf[:0], v)
	k.h.Write(k.buf)
}

func (k *keyer) params(ps inference.Parameters, skip []string) {
	keys := make([]string, 0, len(ps))
	for name := range ps {
		if !slices.Contains(skip, name) {
			keys = append(keys, name)
		}
	}
	slices.Sort(keys)
	k.u64(uint64(len(keys)))
	for _, name := range keys {
		k.str(name)
		switch v := ps[name].(type) {
		case string:
			k.str("s" + v)
		case bool:
			k.str("b" + strconv.FormatBool(v))
		case int64:
			k.str("i" + strconv.FormatInt(v, 10))
		case float64:
			k.str("f" + strconv.FormatUint(math.Float64bits(v), 16))
		default:
			k.str("?")
		}
	}
}

// prefix hashes the scope and the inputs' names, datatypes and row shapes.
func (k *keyer) prefix(s *Scope, inputs []inference.Tensor, wholeRequest bool) {
	k.str("batchmesh-cache-v1")
	k.str(s.Model)
	k.str(s.Version)
	k.str(s.Protocol)
	k.str(s.Route)
	k.str(s.Tenant)
	if wholeRequest {
		k.str("request")
	} else {
		k.str("row")
	}
	k.params(s.Parameters, transportParams)
	if s.Outputs == nil {
		k.u64(math.MaxUint64) // every output
	} else {
		k.u64(uint64(len(s.Outputs)))
		for _, o := range s.Outputs {
			k.str(o.Name)
			k.params(o.Parameters, transportParams)
		}
	}
	k.u64(uint64(len(inputs)))
	for i := range inputs {
		in := &inputs[i]
		k.str(in.Name)
		k.str(in.DataType.String())
		dims := in.Shape
		if !wholeRequest && len(dims) > 0 {
			dims = dims[1:]
		}
		k.u64(uint64(len(dims)))
		for _, d := range dims {
			k.u64(uint64(d))
		}
		k.params(in.Parameters, transportParams)
	}
}

// RowKeys appends to dst the key of each of the rows of inputs (all of
// which have rows rows along dim 0; offsets are their RowOffsets). A row's
// key is SHA-256 over the digest of what its request shares (scope, input
// names, datatypes, row shapes) and the row's bytes of every input.
func RowKeys(dst []Key, s *Scope, inputs []inference.Tensor, offsets [][]int, rows int) []Key {
	k := keyer{h: sha256.New(), buf: make([]byte, 0, 64)}
	k.prefix(s, inputs, false)
	var shared Key
	k.h.Sum(shared[:0])
	for r := range rows {
		k.h.Reset()
		k.h.Write(shared[:])
		for i := range inputs {
			k.bytes(inputs[i].Data[offsets[i][r]:offsets[i][r+1]])
		}
		var key Key
		k.h.Sum(key[:0])
		dst = append(dst, key)
	}
	return dst
}

// RequestKey is the key of a whole request, for models whose rows are not
// independent (cache granularity "request").
func RequestKey(s *Scope, inputs []inference.Tensor) Key {
	k := keyer{h: sha256.New(), buf: make([]byte, 0, 64)}
	k.prefix(s, inputs, true)
	for i := range inputs {
		k.bytes(inputs[i].Data)
	}
	var key Key
	k.h.Sum(key[:0])
	return key
}
