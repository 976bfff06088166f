//go:build !amd64 || purego

package modelrt

// haveSIMD reports whether SIMD kernels exist here: not on this platform.
func haveSIMD() bool { return false }

// The SIMD kernels are never called where haveSIMD is false; these stubs
// keep matmulSIMD compiling.

func gemm4x16(x *float32, ldx uintptr, w *float32, k int, y *float32, ldy uintptr) {
	panic("modelrt: no SIMD kernels on this platform")
}

func gemm1x64(x *float32, w *float32, pstride uintptr, k int, y *float32) {
	panic("modelrt: no SIMD kernels on this platform")
}

func gemm1x16(x *float32, w *float32, k int, y *float32) {
	panic("modelrt: no SIMD kernels on this platform")
}
