package onnxq

import "math"

// int8Params selects how quantizeInt8 works.
type int8Params struct {
	axis     int  // one scale per slice along axis; < 0: one for the tensor
	sumAxis  int  // output channels whose sums RoundSum keeps; < 0: none
	sum      bool // RoundSum
	asym     bool // a zero point per slice, values in [-128, 127]
	halfScal bool // scales must be exact fp16 values (stored as fp16)
	// codeScal: scales may be stored as uint8 codes times one float32
	// step (see codeScales), when that costs at most 1/minScaleCode of
	// resolution; takes precedence over halfScal.
	codeScal bool
}

// int8Tensor is a quantized tensor: x ≈ (q - zp) · scale per slice.
type int8Tensor struct {
	q      []byte    // int8 values
	scales []float32 // per slice along axis
	zps    []int8    // per slice; nil when symmetric
	half   bool      // scales are exact fp16 values
	// codes (when not nil): scales[c] == float32(codes[c]) * codeStep.
	codes    []byte
	codeStep float32
	stats    tensorStats
}

// quantizeInt8 quantizes x (finite) to int8. Symmetric: scale = max|x|/127,
// values in [-127, 127], no zero point. Asymmetric: the slice's range
// [min(x,0), max(x,0)] maps onto [-128, 127] with a zero point. Scales are
// rounded up to fp16 values when p.halfScal asks for it and every scale
// fits fp16's normal range (rounding up keeps every weight inside the int8
// range); otherwise they stay float32.
func quantizeInt8(x []float32, dims []int64, p int8Params) int8Tensor {
	outer, ch, inner := split(dims, p.axis, len(x))
	lo := make([]float32, ch)
	hi := make([]float32, ch)
	for o := 0; o < outer; o++ {
		for c := 0; c < ch; c++ {
			base := (o*ch + c) * inner
			l, h := lo[c], hi[c]
			for _, v := range x[base : base+inner] {
				l, h = min(l, v), max(h, v)
			}
			lo[c], hi[c] = l, h
		}
	}
	scales := make([]float32, ch)
	for c := range scales {
		var s float32
		if p.asym {
			s = float32((float64(hi[c]) - float64(lo[c])) / 255)
		} else {
			s = max(hi[c], -lo[c]) / 127
		}
		if s == 0 || math.IsInf(float64(s), 0) {
			s = 1 // all zeros, or so tiny the scale underflows: any scale works
		}
		scales[c] = s
	}
	var codes []byte
	var step float32
	if p.codeScal {
		codes, step = codeScales(scales, lo, hi)
	}
	half := p.halfScal && codes == nil
	for _, s := range scales {
		half = half && s >= minNormalHalf && s <= maxHalf
	}
	if half {
		for c, s := range scales {
			scales[c] = halfUp(s)
		}
	}
	inv := make([]float64, ch)
	for c, s := range scales {
		inv[c] = 1 / float64(s)
	}
	var zps []int8
	qmin, qmax := -127.0, 127.0
	if p.asym {
		qmin = -128
		zps = make([]int8, ch)
		for c := range zps {
			zps[c] = int8(min(127, max(-128, math.Round(-128-float64(lo[c])*inv[c]))))
		}
	}
	q := make([]byte, len(x))
	for o := 0; o < outer; o++ {
		for c := 0; c < ch; c++ {
			base := (o*ch + c) * inner
			iv, zp := inv[c], 0.0
			if zps != nil {
				zp = float64(zps[c])
			}
			for k, v := range x[base : base+inner] {
				r := math.RoundToEven(float64(v)*iv) + zp
				q[base+k] = byte(int8(min(qmax, max(qmin, r))))
			}
		}
	}
	if p.sum && p.sumAxis >= 0 {
		preserveSums(q, x, dims, p.axis, p.sumAxis, inv, zps, int8(qmin))
	}
	var st errAcc
	for o := 0; o < outer; o++ {
		for c := 0; c < ch; c++ {
			base := (o*ch + c) * inner
			s, zp := scales[c], int16(0)
			if zps != nil {
				zp = int16(zps[c])
			}
			for k, v := range x[base : base+inner] {
				// Same arithmetic as DequantizeLinear: float32 product.
				st.add(v, float32(int16(int8(q[base+k]))-zp)*s)
			}
		}
	}
	return int8Tensor{q: q, scales: scales, zps: zps, half: half, codes: codes, codeStep: step, stats: st.stats()}
}

// minScaleCode is the smallest uint8 code codeScales accepts for a slice
// that is not all zeros: rounding its scale up to the code grid then makes
// its step at most 1/64 (1.6%, 0.14 dB) coarser.
const minScaleCode = 64

// codeScales stores per-slice scales in one byte each instead of fp16's
// two: scale[c] = code[c] · step, step = max(scale)/255, each scale rounded
// up to the grid (so no weight overflows, and DequantizeLinear of the codes
// computes exactly these float32 products). Scales of one tensor rarely
// span more than a factor of 8; when they do (some code would be below
// minScaleCode), it returns nil and the scales stay as they were. All-zero
// slices take any scale. On success scales is rewritten in place.
func codeScales(scales, lo, hi []float32) ([]byte, float32) {
	var smax float32
	for c, s := range scales {
		if lo[c] != 0 || hi[c] != 0 {
			smax = max(smax, s)
		}
	}
	if smax == 0 || smax > math.MaxFloat32/2 {
		return nil, 0
	}
	step := smax / 255
	for float32(255)*step < smax {
		step = math.Nextafter32(step, float32(math.Inf(1)))
	}
	if step < math.SmallestNonzeroFloat32*(1<<24) {
		return nil, 0 // subnormal steps: not worth the care
	}
	codes := make([]byte, len(scales))
	for c, s := range scales {
		if lo[c] == 0 && hi[c] == 0 {
			codes[c] = 255
			continue
		}
		// The float64 quotient may exceed 255 where the float32 product
		// 255·step already covers s.
		k := min(255, math.Ceil(float64(s)/float64(step)))
		for k < 255 && float32(k)*step < s {
			k++
		}
		if k < minScaleCode || float32(k)*step < s {
			return nil, 0
		}
		codes[c] = byte(k)
	}
	for c := range scales {
		scales[c] = float32(codes[c]) * step
	}
	return codes, step
}

// halfUp returns the smallest fp16 value >= s (s positive, in fp16's normal
// range).
func halfUp(s float32) float32 {
	h := float32ToFloat16(s)
	if float16ToFloat32(h) < s {
		h++
	}
	return float16ToFloat32(h)
}

// split returns the sizes before, along and after axis (axis < 0: the
// whole tensor is one slice).
func split(dims []int64, axis, n int) (outer, ch, inner int) {
	if axis < 0 {
		return 1, 1, n
	}
	outer, ch, inner = 1, int(dims[axis]), 1
	for _, d := range dims[:axis] {
		outer *= int(d)
	}
	for _, d := range dims[axis+1:] {
		inner *= int(d)
	}
	return outer, ch, inner
}

// preserveSums adjusts q so that the dequantized sum of every slice along
// sumAxis equals the float sum within half a step: with d the slice's
// summed rounding residual (in steps), it moves round(d) weights one step in
// d's direction, those whose residual is largest in that direction, never
// past [qmin, 127]. inv (and zps, when not nil) hold 1/scale (and the zero
// point) per slice along scaleAxis, one value when scaleAxis < 0;
// scaleAxis is either sumAxis or < 0, so a slice has one step size.
func preserveSums(q []byte, x []float32, dims []int64, scaleAxis, sumAxis int, inv []float64, zps []int8, qmin int8) {
	outer, ch, inner := split(dims, sumAxis, len(x))
	cs := make([]flip, 0, outer*inner) // one channel's weights, reused
	for c := 0; c < ch; c++ {
		sc := 0
		if scaleAxis >= 0 {
			sc = c
		}
		iv, zp := inv[sc], 0.0
		if zps != nil {
			zp = float64(zps[sc])
		}
		cs = cs[:0]
		var d float64
		for o := 0; o < outer; o++ {
			base := (o*ch + c) * inner
			for k := base; k < base+inner; k++ {
				r := float64(x[k])*iv - (float64(int8(q[k])) - zp)
				d += r
				cs = append(cs, flip{k, r})
			}
		}
		n := int(math.Round(d))
		if n == 0 {
			continue
		}
		step, bound := int8(1), int8(127)
		if n < 0 {
			step, bound, n = -1, qmin, -n
		}
		// The n weights with the largest residual in the needed
		// direction, among those not at the bound: a selection, not a
		// sort (n is a few dozen at most, a channel thousands).
		e := 0
		for _, cd := range cs {
			if int8(q[cd.k]) != bound {
				cd.res *= float64(step)
				cs[e] = cd
				e++
			}
		}
		top := selectLargest(cs[:e], min(n, e))
		for _, cd := range top {
			q[cd.k] = byte(int8(q[cd.k]) + step)
		}
	}
}

// flip is a weight of one channel and its rounding residual (x/s - (q -
// zp)) in steps, signed so that larger means "flip first".
type flip struct {
	k   int
	res float64
}

// selectLargest reorders cs so that its first n elements are the n with the
// largest res (in no particular order) and returns them: quickselect,
// linear on average.
func selectLargest(cs []flip, n int) []flip {
	lo, hi := 0, len(cs)
	for hi-lo > 1 && n > lo && n < hi {
		// Median of three as the pivot.
		a, b, c := cs[lo].res, cs[(lo+hi)/2].res, cs[hi-1].res
		p := max(min(a, b), min(max(a, b), c))
		// Three-way partition: > p, == p, < p.
		i, lt, gt := lo, lo, hi
		for i < gt {
			switch {
			case cs[i].res > p:
				cs[i], cs[lt] = cs[lt], cs[i]
				i++
				lt++
			case cs[i].res < p:
				gt--
				cs[i], cs[gt] = cs[gt], cs[i]
			default:
				i++
			}
		}
		switch {
		case n <= lt:
			hi = lt
		case n >= gt:
			lo = gt
		default:
			return cs[:n] // the n-th falls among the pivot's equals
		}
	}
	return cs[:n]
}

type tensorStats struct{ maxAbs, snr float64 }

// errAcc accumulates reconstruction error statistics in float64.
type errAcc struct{ maxAbs, sig, noise float64 }

func (a *errAcc) add(x, xh float32) {
	d := float64(x) - float64(xh)
	a.sig += float64(x) * float64(x)
	a.noise += d * d
	if d < 0 {
		d = -d
	}
	if d > a.maxAbs {
		a.maxAbs = d
	}
}

func (a *errAcc) stats() tensorStats {
	snr := float64(MaxSNRdB)
	if a.noise > 0 && a.sig > 0 {
		snr = min(snr, 10*math.Log10(a.sig/a.noise))
	} else if a.noise > 0 {
		snr = 0
	}
	return tensorStats{maxAbs: a.maxAbs, snr: snr}
}
