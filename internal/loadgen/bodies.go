package loadgen

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// maxInt is the exclusive upper bound of generated integers, so that they
// also serve as token ids of a BERT-sized vocabulary.
const maxInt = 30000

// body is one pre-encoded request body; immutable once built and shared by
// every client.
type body struct {
	data      []byte
	headerLen string // Inference-Header-Content-Length, or "" for JSON
	rows      int64
}

// pool holds the bodies of a run and picks one per request sequence number.
// It is immutable after newPool and safe for concurrent use.
type pool struct {
	cold   []body
	hot    []body // HotSet bodies when Repeat > 0
	salt   uint64
	allHot bool
	repeat uint64 // request t is hot when mix(t)>>11 < repeat (a 53-bit share)
}

// pick returns the body for the request with sequence number t. Cold bodies
// go round in order, so no cold body repeats within len(cold) requests.
func (p *pool) pick(t uint64) *body {
	if p.allHot || p.repeat > 0 {
		x := mix(t ^ p.salt)
		if p.allHot || x>>11 < p.repeat {
			return &p.hot[x%uint64(len(p.hot))]
		}
	}
	return &p.cold[t%uint64(len(p.cold))]
}

// mix is splitmix64's finalizer: a cheap, well-spread hash of x.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// newPool encodes the bodies s asks for: HotSet hot bodies when Repeat > 0
// and Distinct cold ones unless every request is hot. Values are
// pseudo-random from s.Seed, and no row appears twice in the whole pool.
func newPool(s *settings) (*pool, error) {
	g := &generator{
		s:    s,
		rng:  rand.New(rand.NewPCG(s.Seed, 0x6c6f616467656e)),
		hash: maphash.MakeSeed(),
		seen: make(map[uint64]struct{}),
	}
	p := &pool{salt: mix(s.Seed + 1)}
	switch {
	case s.Repeat >= 1:
		p.allHot = true
	case s.Repeat > 0:
		p.repeat = uint64(s.Repeat * (1 << 53))
	}
	var err error
	if s.Repeat > 0 {
		if p.hot, err = g.bodies(HotSet); err != nil {
			return nil, err
		}
	}
	if !p.allHot {
		if p.cold, err = g.bodies(s.Distinct); err != nil {
			return nil, err
		}
	}
	return p, nil
}

type generator struct {
	s     *settings
	rng   *rand.Rand
	hash  maphash.Seed
	seen  map[uint64]struct{} // hashes of every row made so far
	bytes int                 // encoded so far
	data  []byte              // scratch tensor data
}

// bodies makes n bodies whose row counts go round Rows..RowsMax.
func (g *generator) bodies(n int) ([]body, error) {
	s := g.s
	span := s.RowsMax - s.Rows + 1
	out := make([]body, n)
	for i := range out {
		rows := s.Rows + i%span
		data, err := g.tensorData(rows)
		if err != nil {
			return nil, err
		}
		req := inference.Request{Inputs: []inference.Tensor{{
			Name:     s.Input,
			DataType: s.dt,
			Shape:    []int64{int64(rows), int64(s.Cols)},
			Data:     data,
		}}}
		enc, headerLen, err := codec.EncodeRequest(nil, &req, s.Binary)
		if err == nil && s.Protocol == "openai" {
			enc, headerLen, err = embeddingsBody(s.Model, &req.Inputs[0], rows), codec.NoHeader, nil
		}
		if err != nil {
			return nil, fmt.Errorf("loadgen: encoding a request body: %w", err)
		}
		g.bytes += len(enc)
		if g.bytes > MaxPoolBytes {
			return nil, fmt.Errorf("loadgen: the request bodies would take over %d MiB; lower Distinct (%d), RowsMax (%d) or Cols (%d)",
				MaxPoolBytes>>20, s.Distinct, s.RowsMax, s.Cols)
		}
		out[i] = body{data: enc[:len(enc):len(enc)], rows: int64(rows)}
		if headerLen != codec.NoHeader {
			out[i].headerLen = strconv.Itoa(headerLen)
		}
	}
	return out, nil
}

// tensorData returns rows fresh rows of Cols random elements in the
// canonical layout, each row unlike any made before. The result is only
// valid until the next call.
func (g *generator) tensorData(rows int) ([]byte, error) {
	const tries = 100
	g.data = g.data[:0]
	for range rows {
		start := len(g.data)
		for try := 0; ; try++ {
			g.data = g.appendRow(g.data[:start])
			h := maphash.Bytes(g.hash, g.data[start:])
			if _, dup := g.seen[h]; !dup {
				g.seen[h] = struct{}{}
				break
			}
			if try == tries {
				return nil, fmt.Errorf("loadgen: cannot make %d distinct rows of %d %s elements; raise Cols or lower Distinct",
					len(g.seen)+1, g.s.Cols, g.s.dt)
			}
		}
	}
	return g.data, nil
}

// appendRow appends Cols random elements: floats in [-1, 1), integers in
// [0, 30000) or the type's non-negative range, short lowercase strings.
func (g *generator) appendRow(dst []byte) []byte {
	r := g.rng
	le := binary.LittleEndian
	for range g.s.Cols {
		switch g.s.dt {
		case inference.Bool:
			dst = append(dst, byte(r.Uint64()&1))
		case inference.Int8:
			dst = append(dst, byte(r.IntN(128)))
		case inference.Uint8:
			dst = append(dst, byte(r.IntN(256)))
		case inference.Int16, inference.Uint16:
			dst = le.AppendUint16(dst, uint16(r.IntN(maxInt)))
		case inference.Int32, inference.Uint32:
			dst = le.AppendUint32(dst, uint32(r.IntN(maxInt)))
		case inference.Int64, inference.Uint64:
			dst = le.AppendUint64(dst, uint64(r.IntN(maxInt)))
		case inference.FP16:
			dst = le.AppendUint16(dst, toHalf(float32(r.Float64()*2-1)))
		case inference.BF16:
			dst = le.AppendUint16(dst, uint16(math.Float32bits(float32(r.Float64()*2-1))>>16))
		case inference.FP32:
			dst = le.AppendUint32(dst, math.Float32bits(float32(r.Float64()*2-1)))
		case inference.FP64:
			dst = le.AppendUint64(dst, math.Float64bits(r.Float64()*2-1))
		case inference.Bytes:
			const n = 8
			dst = le.AppendUint32(dst, n)
			for range n {
				dst = append(dst, byte('a'+r.IntN(26)))
			}
		}
	}
	return dst
}

// toHalf converts f, with |f| < 1, to IEEE half precision by truncation;
// magnitudes below the smallest normal half become a signed zero.
func toHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	if exp <= 0 {
		return sign
	}
	return sign | uint16(exp)<<10 | uint16(b>>13&0x3ff)
}

// embeddingsBody is an OpenAI embeddings request whose inputs are the hex
// of t's rows.
func embeddingsBody(model string, t *inference.Tensor, rows int) []byte {
	b := append([]byte(`{"model":`), strconv.Quote(model)...)
	b = append(b, `,"encoding_format":"base64","input":[`...)
	off := t.RowOffsets(nil)
	for r := range rows {
		if r > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = hex.AppendEncode(b, t.Data[off[r]:off[r+1]])
		b = append(b, '"')
	}
	return append(b, "]}"...)
}
