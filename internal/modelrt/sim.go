package modelrt

import (
	"context"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// h200Profile holds batch latencies measured on an NVIDIA H200 (fp16,
// sequence length 128, host copies included), in milliseconds per batch
// size, for each model.
//
//go:embed profiles/h200-fp16.json
var h200Profile string

// Sim names and widths.
const (
	// SimInput is the name Sim's metadata gives its input; any name is
	// accepted.
	SimInput = "input"
	// SimOutput is the name of Sim's one output.
	SimOutput = "output"
	// SimOutputWidth is the number of FP32 values Sim returns per row.
	SimOutputWidth = 16
)

// Sim is a simulated accelerator. Its batch latency follows either a
// measured profile (ParseSim("h200/bert-base")) or a line
// (ParseSim("linear/5ms+200us")), and its output is a pseudo-random
// function of each input row, so it behaves like a model without the cost
// of one.
//
// It takes exactly one input of any name, any datatype and any shape of
// rank 1 or more (dim 0 is the batch), and returns one FP32 output "output"
// of shape [n, 16]. Row i of the output depends only on the input's
// datatype, its shape past dim 0 and the canonical bytes of row i: it is
// bit-identical whether the row comes alone or in any batch.
//
// A Sim is immutable and safe for concurrent use: concurrent Infer calls
// each sleep for their own batch (a real accelerator would serialize them;
// the runtime's slots do that).
type Sim struct {
	spec   string
	points []simPoint // a profile, by rows ascending; nil for a line
	base   time.Duration
	perRow time.Duration
}

// simPoint is one measured batch latency.
type simPoint struct {
	rows int
	d    time.Duration
}

// simProfiles returns the embedded profiles as "device/model" → points.
func simProfiles() (map[string][]simPoint, error) {
	var f struct {
		Models map[string]map[string]float64 `json:"models"`
	}
	if err := json.Unmarshal([]byte(h200Profile), &f); err != nil {
		return nil, fmt.Errorf("embedded profile h200: %w", err)
	}
	out := make(map[string][]simPoint, len(f.Models))
	for model, lat := range f.Models {
		var pts []simPoint
		for k, ms := range lat {
			n, err := strconv.Atoi(k)
			if err != nil || n < 1 || !(ms >= 0) || ms > 1e6 {
				return nil, fmt.Errorf("embedded profile h200/%s: bad point %q: %v", model, k, ms)
			}
			pts = append(pts, simPoint{n, time.Duration(math.Round(ms * 1e6))})
		}
		if len(pts) == 0 {
			return nil, fmt.Errorf("embedded profile h200/%s has no points", model)
		}
		slices.SortFunc(pts, func(a, b simPoint) int { return a.rows - b.rows })
		out["h200/"+model] = pts
	}
	return out, nil
}

// ProfileNames returns the names of the embedded latency profiles, sorted,
// e.g. "h200/bert-base".
func ProfileNames() []string {
	p, err := simProfiles()
	if err != nil {
		return nil // the embedded file is checked by the tests
	}
	names := make([]string, 0, len(p))
	for name := range p {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// ParseSim returns the simulator arg names: an embedded profile such as
// "h200/bert-base" (see ProfileNames), or "linear/BASE+PERROW" with Go
// durations, e.g. "linear/5ms+200us" for 5 ms per batch plus 200 µs per row.
func ParseSim(arg string) (*Sim, error) {
	s, err := parseSim(arg)
	if err != nil {
		return nil, fmt.Errorf("modelrt: %w", err)
	}
	return s, nil
}

func parseSim(arg string) (*Sim, error) {
	if line, ok := strings.CutPrefix(arg, "linear/"); ok {
		baseStr, perStr, ok := strings.Cut(line, "+")
		if !ok {
			return nil, fmt.Errorf("sim %q: want linear/BASE+PERROW with Go durations, e.g. linear/5ms+200us", arg)
		}
		base, err := simDuration(arg, "BASE", baseStr)
		if err != nil {
			return nil, err
		}
		per, err := simDuration(arg, "PERROW", perStr)
		if err != nil {
			return nil, err
		}
		return &Sim{spec: arg, base: base, perRow: per}, nil
	}
	profiles, err := simProfiles()
	if err != nil {
		return nil, err
	}
	pts, ok := profiles[arg]
	if !ok {
		return nil, fmt.Errorf("sim %q: unknown profile; known: %s, or linear/BASE+PERROW (e.g. linear/5ms+200us)", arg, strings.Join(ProfileNames(), ", "))
	}
	return &Sim{spec: arg, points: pts}, nil
}

// simDuration parses one duration of a linear spec: unsigned, at most an
// hour.
func simDuration(arg, what, s string) (time.Duration, error) {
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("sim %q: %s %q: want an unsigned Go duration such as 5ms", arg, what, s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("sim %q: %s %q: want an unsigned Go duration such as 5ms", arg, what, s)
	}
	if d > time.Hour {
		return 0, fmt.Errorf("sim %q: %s %s is over an hour", arg, what, d)
	}
	return d, nil
}

// String returns the spec the Sim was parsed from.
func (s *Sim) String() string { return s.spec }

// Latency returns how long a batch of n rows takes: 0 for n < 1. A line
// gives BASE + n·PERROW. A profile gives its measurement at a measured batch
// size, interpolates linearly between measured sizes, extrapolates linearly
// from the last two beyond the largest (never below zero), and gives the
// smallest size's latency below the smallest.
func (s *Sim) Latency(n int) time.Duration {
	if n < 1 {
		return 0
	}
	if s.points == nil {
		if s.perRow > 0 && int64(n) > (math.MaxInt64-int64(s.base))/int64(s.perRow) {
			return math.MaxInt64
		}
		return s.base + time.Duration(n)*s.perRow
	}
	p := s.points
	if len(p) == 1 || n <= p[0].rows {
		return p[0].d
	}
	i := 1
	for i < len(p)-1 && p[i].rows < n {
		i++
	}
	// Interpolate (or, past the end, extrapolate) along p[i-1] → p[i].
	a, b := p[i-1], p[i]
	if n == b.rows {
		return b.d
	}
	v := float64(a.d) + float64(b.d-a.d)*float64(n-a.rows)/float64(b.rows-a.rows)
	switch {
	case !(v > 0):
		return 0
	case v >= math.MaxInt64:
		return math.MaxInt64
	}
	return time.Duration(math.Round(v))
}

// Inputs describes the one input. Its name, datatype and shape are only
// what the metadata shows: any name, datatype and rank ≥ 1 are accepted.
func (s *Sim) Inputs() []TensorSpec {
	return []TensorSpec{{Name: SimInput, DataType: "", Shape: []int64{-1, -1}}}
}

// Outputs describes the one output: FP32 [-1, 16].
func (s *Sim) Outputs() []TensorSpec {
	return []TensorSpec{{Name: SimOutput, DataType: "FP32", Shape: []int64{-1, SimOutputWidth}}}
}

// Validate checks that req has exactly one input, of rank 1 or more, whose
// data matches its datatype and shape. Errors are KindInvalid.
func (s *Sim) Validate(req *inference.Request) error {
	if len(req.Inputs) != 1 {
		return inference.Errorf(inference.KindInvalid, "modelrt: the simulator takes exactly one input (any name, datatype and shape [rows, ...]), got %d inputs", len(req.Inputs))
	}
	t := &req.Inputs[0]
	if len(t.Shape) == 0 {
		return inference.Errorf(inference.KindInvalid, "modelrt: input %q: a scalar has no batch dimension; shape must be [rows, ...]", t.Name)
	}
	if err := t.Validate(); err != nil {
		return inference.Errorf(inference.KindInvalid, "modelrt: %w", err)
	}
	return nil
}

// Infer computes the output, then sleeps for Latency(rows) or until ctx
// ends, when it returns ctx.Err().
func (s *Sim) Infer(ctx context.Context, req *inference.Request) ([]inference.Tensor, error) {
	if err := s.Validate(req); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t := &req.Inputs[0]
	n := int(t.Shape[0])
	deadline := time.Now().Add(s.Latency(n))
	out := make([]byte, 4*SimOutputWidth*n)
	if n > 0 {
		seed := rowTypeSeed(t)
		off := t.RowOffsets(make([]int, 0, n+1))
		for r := range n {
			simRow(out[4*SimOutputWidth*r:], seed, t.Data[off[r]:off[r+1]])
		}
	}
	if err := waitUntil(ctx, deadline); err != nil {
		return nil, err
	}
	return []inference.Tensor{{
		Name:     SimOutput,
		DataType: inference.FP32,
		Shape:    []int64{int64(n), SimOutputWidth},
		Data:     out,
	}}, nil
}

// rowTypeSeed hashes what every row of t shares: the datatype and the shape
// past dim 0.
func rowTypeSeed(t *inference.Tensor) uint64 {
	b := make([]byte, 0, 1+8*len(t.Shape))
	b = append(b, byte(t.DataType))
	for _, d := range t.Shape[1:] {
		b = binary.LittleEndian.AppendUint64(b, uint64(d))
	}
	return xxh64(b, 0)
}

// simRow writes one row's 16 little-endian FP32 values, each in [-1, 1),
// to dst.
func simRow(dst []byte, seed uint64, row []byte) {
	h := xxh64(row, seed)
	for i := range SimOutputWidth {
		z := mix64(h + uint64(i+1)*0x9E3779B97F4A7C15)
		v := float32(int32(z>>40)-1<<23) / (1 << 23) // exact: 24 bits
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

// XXH64 (https://github.com/Cyan4973/xxHash, spec in doc/xxhash_spec.md).
const (
	xxPrime1 uint64 = 11400714785074694791
	xxPrime2 uint64 = 14029467366897019727
	xxPrime3 uint64 = 1609587929392839161
	xxPrime4 uint64 = 9650029242287828579
	xxPrime5 uint64 = 2870177450012600261
)

func xxRound(acc, input uint64) uint64 {
	acc += input * xxPrime2
	acc = bits.RotateLeft64(acc, 31)
	return acc * xxPrime1
}

func xxMerge(acc, val uint64) uint64 {
	acc ^= xxRound(0, val)
	return acc*xxPrime1 + xxPrime4
}

// xxh64 returns the XXH64 hash of b with the given seed.
func xxh64(b []byte, seed uint64) uint64 {
	n := len(b)
	var h uint64
	if n >= 32 {
		v1 := seed + xxPrime1 + xxPrime2
		v2 := seed + xxPrime2
		v3 := seed
		v4 := seed - xxPrime1
		for len(b) >= 32 {
			v1 = xxRound(v1, binary.LittleEndian.Uint64(b[0:8]))
			v2 = xxRound(v2, binary.LittleEndian.Uint64(b[8:16]))
			v3 = xxRound(v3, binary.LittleEndian.Uint64(b[16:24]))
			v4 = xxRound(v4, binary.LittleEndian.Uint64(b[24:32]))
			b = b[32:]
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		h = xxMerge(h, v1)
		h = xxMerge(h, v2)
		h = xxMerge(h, v3)
		h = xxMerge(h, v4)
	} else {
		h = seed + xxPrime5
	}
	h += uint64(n)
	for ; len(b) >= 8; b = b[8:] {
		h ^= xxRound(0, binary.LittleEndian.Uint64(b))
		h = bits.RotateLeft64(h, 27)*xxPrime1 + xxPrime4
	}
	if len(b) >= 4 {
		h ^= uint64(binary.LittleEndian.Uint32(b)) * xxPrime1
		h = bits.RotateLeft64(h, 23)*xxPrime2 + xxPrime3
		b = b[4:]
	}
	for _, c := range b {
		h ^= uint64(c) * xxPrime5
		h = bits.RotateLeft64(h, 11) * xxPrime1
	}
	h ^= h >> 33
	h *= xxPrime2
	h ^= h >> 29
	h *= xxPrime3
	h ^= h >> 32
	return h
}

// fineWindow is the last stretch of a simulated batch that waitUntil
// sleeps in the kernel rather than on a Go timer.
const fineWindow = 1500 * time.Microsecond

// waitUntil blocks until deadline, or returns ctx's error if ctx ends
// first. A Go timer on an idle process wakes up to a millisecond late (the
// poller sleeps in whole milliseconds), which would stretch a 4.37 ms profile
// step to ~5.3 ms; so the wait runs on a timer until fineWindow before the
// deadline and then in fineSleep, whose overshoot is ~0.1 ms. Whatever the
// kernel sleep left (it may return early, and inside a testing/synctest
// bubble it does not move the fake clock) is waited for on a timer, so the
// wait never ends before the deadline.
func waitUntil(ctx context.Context, deadline time.Time) error {
	if coarse := time.Until(deadline) - fineWindow; coarse > 0 {
		if err := timerWait(ctx, coarse); err != nil {
			return err
		}
	}
	if d := time.Until(deadline); d > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		fineSleep(d)
	}
	if d := time.Until(deadline); d > 0 {
		return timerWait(ctx, d)
	}
	return ctx.Err()
}

func timerWait(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
