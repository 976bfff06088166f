//go:build amd64 && !purego

#include "textflag.h"

// Every kernel computes each output lane as acc = acc + x*w with k ascending
// and one accumulator (VMULPS then VADDPS, never FMA), exactly like the
// portable kernel in kernel.go, so every kernel gives the same bits.

// func cpuHasAVX2() bool
TEXT ·cpuHasAVX2(SB), NOSPLIT, $0-1
	XORL AX, AX
	XORL CX, CX
	CPUID
	CMPL AX, $7
	JLT  no
	MOVL $1, AX
	XORL CX, CX
	CPUID
	ANDL $0x18000000, CX // OSXSAVE (bit 27) and AVX (bit 28)
	CMPL CX, $0x18000000
	JNE  no
	XORL CX, CX
	XGETBV               // XCR0 in DX:AX
	ANDL $6, AX          // XMM and YMM state enabled by the OS
	CMPL AX, $6
	JNE  no
	MOVL $7, AX
	XORL CX, CX
	CPUID
	BTL  $5, BX          // AVX2
	JCC  no
	MOVB $1, ret+0(FP)
	RET

no:
	MOVB $0, ret+0(FP)
	RET

// func gemm4x16(x *float32, ldx uintptr, w *float32, k int, y *float32, ldy uintptr)
TEXT ·gemm4x16(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), SI
	MOVQ ldx+8(FP), R8
	MOVQ w+16(FP), DI
	MOVQ k+24(FP), CX
	MOVQ y+32(FP), DX
	MOVQ ldy+40(FP), R9
	LEAQ (SI)(R8*1), R10
	LEAQ (SI)(R8*2), R11
	LEAQ (R10)(R8*2), R12
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	XORQ   BX, BX
	TESTQ  CX, CX
	JEQ    store4

loop4:
	VMOVUPS      (DI), Y8
	VMOVUPS      32(DI), Y9
	VBROADCASTSS (SI)(BX*4), Y10
	VBROADCASTSS (R10)(BX*4), Y11
	VMULPS       Y8, Y10, Y12
	VADDPS       Y12, Y0, Y0
	VMULPS       Y9, Y10, Y13
	VADDPS       Y13, Y1, Y1
	VMULPS       Y8, Y11, Y14
	VADDPS       Y14, Y2, Y2
	VMULPS       Y9, Y11, Y12
	VADDPS       Y12, Y3, Y3
	VBROADCASTSS (R11)(BX*4), Y10
	VBROADCASTSS (R12)(BX*4), Y11
	VMULPS       Y8, Y10, Y13
	VADDPS       Y13, Y4, Y4
	VMULPS       Y9, Y10, Y14
	VADDPS       Y14, Y5, Y5
	VMULPS       Y8, Y11, Y12
	VADDPS       Y12, Y6, Y6
	VMULPS       Y9, Y11, Y13
	VADDPS       Y13, Y7, Y7
	ADDQ         $64, DI
	INCQ         BX
	CMPQ         BX, CX
	JLT          loop4

store4:
	VMOVUPS Y0, (DX)
	VMOVUPS Y1, 32(DX)
	ADDQ    R9, DX
	VMOVUPS Y2, (DX)
	VMOVUPS Y3, 32(DX)
	ADDQ    R9, DX
	VMOVUPS Y4, (DX)
	VMOVUPS Y5, 32(DX)
	ADDQ    R9, DX
	VMOVUPS Y6, (DX)
	VMOVUPS Y7, 32(DX)
	VZEROUPPER
	RET

// func gemm1x64(x *float32, w *float32, pstride uintptr, k int, y *float32)
TEXT ·gemm1x64(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), DI
	MOVQ pstride+16(FP), R8
	MOVQ k+24(FP), CX
	MOVQ y+32(FP), DX
	LEAQ (DI)(R8*1), R10
	LEAQ (DI)(R8*2), R11
	LEAQ (R10)(R8*2), R12
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	XORQ   AX, AX
	TESTQ  CX, CX
	JEQ    store1x64

loop1x64:
	VBROADCASTSS (SI), Y8
	VMULPS       (DI)(AX*1), Y8, Y9
	VADDPS       Y9, Y0, Y0
	VMULPS       32(DI)(AX*1), Y8, Y10
	VADDPS       Y10, Y1, Y1
	VMULPS       (R10)(AX*1), Y8, Y11
	VADDPS       Y11, Y2, Y2
	VMULPS       32(R10)(AX*1), Y8, Y12
	VADDPS       Y12, Y3, Y3
	VMULPS       (R11)(AX*1), Y8, Y13
	VADDPS       Y13, Y4, Y4
	VMULPS       32(R11)(AX*1), Y8, Y14
	VADDPS       Y14, Y5, Y5
	VMULPS       (R12)(AX*1), Y8, Y9
	VADDPS       Y9, Y6, Y6
	VMULPS       32(R12)(AX*1), Y8, Y10
	VADDPS       Y10, Y7, Y7
	ADDQ         $4, SI
	ADDQ         $64, AX
	DECQ         CX
	JNZ          loop1x64

store1x64:
	VMOVUPS Y0, (DX)
	VMOVUPS Y1, 32(DX)
	VMOVUPS Y2, 64(DX)
	VMOVUPS Y3, 96(DX)
	VMOVUPS Y4, 128(DX)
	VMOVUPS Y5, 160(DX)
	VMOVUPS Y6, 192(DX)
	VMOVUPS Y7, 224(DX)
	VZEROUPPER
	RET

// func gemm1x16(x *float32, w *float32, k int, y *float32)
TEXT ·gemm1x16(SB), NOSPLIT, $0-32
	MOVQ   x+0(FP), SI
	MOVQ   w+8(FP), DI
	MOVQ   k+16(FP), CX
	MOVQ   y+24(FP), DX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	TESTQ  CX, CX
	JEQ    store1x16

loop1x16:
	VBROADCASTSS (SI), Y8
	VMULPS       (DI), Y8, Y9
	VADDPS       Y9, Y0, Y0
	VMULPS       32(DI), Y8, Y10
	VADDPS       Y10, Y1, Y1
	ADDQ         $4, SI
	ADDQ         $64, DI
	DECQ         CX
	JNZ          loop1x16

store1x16:
	VMOVUPS Y0, (DX)
	VMOVUPS Y1, 32(DX)
	VZEROUPPER
	RET
