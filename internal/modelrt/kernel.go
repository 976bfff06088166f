package modelrt

// The dense-layer kernel.
//
// A layer's weights are packed at load time into panels of panelWidth output
// columns: panel p holds columns [16p, 16p+16) of Wᵀ as in rows of 16
// float32s, zero-padded past the layer's last column, so a kernel streams one
// panel front to back. Every output element y[r][j] is computed the same way
// by every kernel, scalar or SIMD, for any batch size and any position in a
// tile:
//
//	acc := float32(0)
//	for k := 0; k < in; k++ { acc = acc + float32(x[r][k]*w[j][k]) }
//	y[r][j] = acc + b[j]      (then ReLU, if not the last layer)
//
// one accumulator, k ascending, every product rounded to float32 before it is
// added (the float32 conversion forbids fused multiply-add; the assembly uses
// separate multiplies and adds). That is what makes a row's output
// bit-identical alone or in any batch, and on any machine.
//
// Batching pays because of weight reuse. One row streams every weight from
// L3 or memory (the default model's 4 MiB overflow L2) for one multiply-add
// each. A batch streams each panel once: the panel stays in L1 while every
// tile of rowTile rows passes it, and each vector of weights loaded into a
// register feeds rowTile rows. The row tiles run on the AVX2 kernels in
// kernel_amd64.s; elsewhere the portable kernel computes the same bits
// without the speed-up.

const (
	// panelWidth is the number of output columns in one packed panel: two
	// 8-lane float32 vectors.
	panelWidth = 16
	// rowTile is the number of batch rows that share each weight load.
	rowTile = 4
	// rowPanels is the number of panels a single-row kernel computes at
	// once, for enough independent accumulators to hide add latency.
	rowPanels = 4
)

// dense is one packed layer. It is immutable after packDense and safe for
// concurrent use.
type dense struct {
	in, out int
	panels  int       // ceil(out / panelWidth)
	w       []float32 // panels × in × panelWidth
	b       []float32 // out
}

// stride returns the row stride, in elements, of this layer's output buffer:
// the output width padded to whole panels.
func (d *dense) stride() int { return d.panels * panelWidth }

// packDense packs weight (out×in, row-major) and bias (out) into panels.
func packDense(weight, bias []float32, in, out int) *dense {
	panels := (out + panelWidth - 1) / panelWidth
	w := make([]float32, panels*in*panelWidth)
	for j := range out {
		p, c := j/panelWidth, j%panelWidth
		panel := w[p*in*panelWidth : (p+1)*in*panelWidth]
		row := weight[j*in : (j+1)*in]
		for k, v := range row {
			panel[k*panelWidth+c] = v
		}
	}
	b := make([]float32, out)
	copy(b, bias)
	return &dense{in: in, out: out, panels: panels, w: w, b: b}
}

// forward computes the layer for n rows: x holds row r at x[r*ldx:][:in], and
// row r of the result is written to y[r*ldy:][:out]. ldy must be at least
// d.stride(): the kernels also write the padded columns. relu applies max(0, ·)
// after the bias. simd selects the assembly kernels; both give the same bits.
func (d *dense) forward(y []float32, ldy int, x []float32, ldx, n int, relu, simd bool) {
	if n == 0 {
		return
	}
	// The kernels below index without bounds checks (the SIMD ones through
	// raw pointers), so check the extent of every row once here.
	if ldx < d.in || ldy < d.stride() || len(x) < (n-1)*ldx+d.in || len(y) < (n-1)*ldy+d.stride() {
		panic("modelrt: dense.forward: buffer too small")
	}
	if simd {
		d.matmulSIMD(y, ldy, x, ldx, n)
	} else {
		d.matmulGo(y, ldy, x, ldx, n)
	}
	for r := range n {
		row := y[r*ldy : r*ldy+d.out]
		for j, v := range row {
			v += d.b[j]
			if relu && v < 0 {
				v = 0
			}
			row[j] = v
		}
	}
}

// panel returns packed panel p.
func (d *dense) panel(p int) []float32 {
	size := d.in * panelWidth
	return d.w[p*size : (p+1)*size : (p+1)*size]
}

// matmulGo is the portable kernel: y = x·Wᵀ without the bias, padded columns
// included.
func (d *dense) matmulGo(y []float32, ldy int, x []float32, ldx, n int) {
	for p := range d.panels {
		w := d.panel(p)
		for r := range n {
			dotPanel(y[r*ldy+p*panelWidth:][:panelWidth], x[r*ldx:][:d.in], w)
		}
	}
}

// dotPanel computes the 16 columns of one panel for one row, eight lanes at
// a time (each lane's sum still runs k ascending with one accumulator).
func dotPanel(y, x, w []float32) {
	y = y[:panelWidth]
	for h := 0; h < panelWidth; h += 8 {
		var a0, a1, a2, a3, a4, a5, a6, a7 float32
		for k, e := range x {
			q := w[k*panelWidth+h : k*panelWidth+h+8 : k*panelWidth+h+8]
			a0 += float32(e * q[0])
			a1 += float32(e * q[1])
			a2 += float32(e * q[2])
			a3 += float32(e * q[3])
			a4 += float32(e * q[4])
			a5 += float32(e * q[5])
			a6 += float32(e * q[6])
			a7 += float32(e * q[7])
		}
		y[h], y[h+1], y[h+2], y[h+3] = a0, a1, a2, a3
		y[h+4], y[h+5], y[h+6], y[h+7] = a4, a5, a6, a7
	}
}

// matmulSIMD is matmulGo on the AVX2 kernels. Callers check haveSIMD first.
// Panels are the outer loop so that one panel stays in L1 while every tile
// of rows streams past it.
func (d *dense) matmulSIMD(y []float32, ldy int, x []float32, ldx, n int) {
	in := d.in
	tiled := n - n%rowTile
	for p := range d.panels {
		w := d.panel(p)
		for r := 0; r < tiled; r += rowTile {
			gemm4x16(&x[r*ldx], uintptr(ldx)*4, &w[0], in, &y[r*ldy+p*panelWidth], uintptr(ldy)*4)
		}
	}
	pstride := uintptr(in * panelWidth * 4)
	for r := tiled; r < n; r++ {
		p := 0
		for ; p+rowPanels <= d.panels; p += rowPanels {
			gemm1x64(&x[r*ldx], &d.w[p*in*panelWidth], pstride, in, &y[r*ldy+p*panelWidth])
		}
		for ; p < d.panels; p++ {
			gemm1x16(&x[r*ldx], &d.w[p*in*panelWidth], in, &y[r*ldy+p*panelWidth])
		}
	}
}
