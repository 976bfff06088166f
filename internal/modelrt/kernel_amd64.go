//go:build amd64 && !purego

package modelrt

// haveSIMD reports whether the CPU and OS support the AVX2 kernels.
func haveSIMD() bool { return cpuHasAVX2() }

// cpuHasAVX2 reports AVX2 support by the CPU and AVX state saving by the OS.
//
//go:noescape
func cpuHasAVX2() bool

// gemm4x16 computes 4 rows × 16 columns: for r < 4 and c < 16,
// y[r*ldy/4+c] = Σ_k x[r*ldx/4+k] · w[k*16+c], k ascending, one accumulator,
// multiply then add. ldx and ldy are in bytes. It reads x and w and writes y
// only for the duration of the call.
//
//go:noescape
func gemm4x16(x *float32, ldx uintptr, w *float32, k int, y *float32, ldy uintptr)

// gemm1x64 computes 1 row × 4 panels: for q < 4 and c < 16,
// y[q*16+c] = Σ_k x[k] · w[q*pstride/4+k*16+c], in gemm4x16's order.
// pstride is the distance between panels in bytes.
//
//go:noescape
func gemm1x64(x *float32, w *float32, pstride uintptr, k int, y *float32)

// gemm1x16 computes 1 row × 1 panel in gemm4x16's order.
//
//go:noescape
func gemm1x16(x *float32, w *float32, k int, y *float32)
