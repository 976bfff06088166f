package modelrt

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxGeneratedParams bounds the weights GenerateMLP makes (1 GiB of F32).
const maxGeneratedParams = 1 << 28

// DefaultMLPSizes returns the layer widths, input first, of the reference
// MLP that GenerateMLP makes when given no sizes. They are chosen so that
// batching pays on a CPU as it does on an accelerator: the weights (4 MiB)
// overflow a core's L2 cache, so one row at a time streams them from L3 or
// memory (~50–200 µs a row), while a batch reuses each weight load across
// rows and costs well under half as much per row.
func DefaultMLPSizes() []int { return []int{512, 1024, 512, 16} }

// GenerateMLP returns deterministic weights for an MLP with the given layer
// widths, input first (DefaultMLPSizes when sizes is empty): the same seed
// and sizes give the same bytes on every platform and Go version. Weights
// are uniform in ±√(6/in) (He initialization, which keeps activations near
// unit scale through ReLUs), biases uniform in ±1/√in.
func GenerateMLP(seed int64, sizes []int) (*Weights, error) {
	if len(sizes) == 0 {
		sizes = DefaultMLPSizes()
	}
	if len(sizes) < 2 {
		return nil, fmt.Errorf("modelrt: mlp sizes %v: need at least an input and an output width", sizes)
	}
	params := 0
	for i, s := range sizes {
		if s < 1 || s > 1<<20 {
			return nil, fmt.Errorf("modelrt: mlp sizes %v: width %d is %d; widths must be 1 to %d", sizes, i, s, 1<<20)
		}
		if i > 0 {
			params += sizes[i-1]*s + s
			if params > maxGeneratedParams {
				return nil, fmt.Errorf("modelrt: mlp sizes %v: more than %d parameters", sizes, maxGeneratedParams)
			}
		}
	}
	rng := splitmix(uint64(seed))
	w := &Weights{Metadata: map[string]string{
		"batchmesh.model": "mlp",
		"batchmesh.seed":  strconv.FormatInt(seed, 10),
		"batchmesh.sizes": joinInts(sizes),
	}}
	for i := 1; i < len(sizes); i++ {
		in, out := sizes[i-1], sizes[i]
		wv := make([]float32, in*out)
		rng.fill(wv, math.Sqrt(6/float64(in)))
		bv := make([]float32, out)
		rng.fill(bv, 1/math.Sqrt(float64(in)))
		prefix := "layers." + strconv.Itoa(i-1)
		w.Tensors = append(w.Tensors,
			F32Tensor(prefix+".weight", []int64{int64(out), int64(in)}, wv),
			F32Tensor(prefix+".bias", []int64{int64(out)}, bv))
	}
	return w, nil
}

// GenerateWeightsFile writes GenerateMLP(seed, sizes) to path as a
// safetensors file. It writes a temporary file next to path and renames it,
// so path is either the old file or the complete new one.
func GenerateWeightsFile(path string, seed int64, sizes []int) (err error) {
	w, err := GenerateMLP(seed, sizes)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("modelrt: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()           // already failed; the first error is the one to report
			_ = os.Remove(f.Name()) // best effort: the temporary file is hidden anyway
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := WriteSafetensors(bw, w.Tensors, w.Metadata); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("modelrt: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("modelrt: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("modelrt: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("modelrt: %w", err)
	}
	return nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// splitmixRNG is SplitMix64: a tiny generator whose output is fixed by its
// definition, unlike math/rand's, so generated weights never change.
type splitmixRNG struct{ state uint64 }

func splitmix(seed uint64) *splitmixRNG { return &splitmixRNG{state: seed} }

func (r *splitmixRNG) next() uint64 {
	r.state += 0x9E3779B97F4A7C15
	return mix64(r.state)
}

// mix64 is SplitMix64's finalizer: a bijective 64-bit mix.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// fill sets v to values uniform in [-bound, bound), each from the top 24
// bits of one draw (exact in float32 before the scaling).
func (r *splitmixRNG) fill(v []float32, bound float64) {
	for i := range v {
		u := float64(int64(r.next()>>40)-1<<23) / (1 << 23) // [-1, 1)
		v[i] = float32(float64(u * bound))
	}
}
