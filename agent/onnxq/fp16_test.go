package onnxq

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestFloat16Known(t *testing.T) {
	cases := []struct {
		in   float32
		want uint16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{0.5, 0x3800},
		{65504, 0x7bff},                             // max half
		{65519.99, 0x7bff},                          // below the halfway point to 65536
		{65520, 0x7c00},                             // halfway, ties to even → inf
		{1e10, 0x7c00},                              // overflow
		{-1e10, 0xfc00},                             // negative overflow
		{float32(math.Inf(1)), 0x7c00},              //
		{float32(math.Inf(-1)), 0xfc00},             //
		{1 + 1.0/2048, 0x3c00},                      // tie between 0x3c00 and 0x3c01 → even
		{1 + 3.0/2048, 0x3c02},                      // tie between 0x3c01 and 0x3c02 → even
		{1 + 1.0/2048 + 1.0/65536, 0x3c01},          // just above a tie
		{6.103515625e-05, 0x0400},                   // smallest normal 2^-14
		{5.960464477539063e-08, 0x0001},             // smallest subnormal 2^-24
		{2.9802322387695312e-08, 0x0000},            // 2^-25: tie → even (zero)
		{4.470348358154297e-08, 0x0001},             // 1.5·2^-25 rounds up
		{6.097555160522461e-05, 0x03ff},             // largest subnormal
		{6.1005353927612305e-05, 0x0400},            // between largest subnormal and min normal, rounds up into normal
		{-5.960464477539063e-08, 0x8001},            //
		{1e-30, 0x0000},                             // underflow
		{float32(math.Ldexp(1, -24) * 2.5), 0x0002}, // 2.5 ulp ties to even (2)
		{float32(math.Ldexp(1, -24) * 3.5), 0x0004}, // 3.5 ulp ties to even (4)
	}
	for _, c := range cases {
		if got := float32ToFloat16(c.in); got != c.want {
			t.Errorf("float32ToFloat16(%g) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	nan := float32ToFloat16(float32(math.NaN()))
	if nan&0x7c00 != 0x7c00 || nan&0x3ff == 0 {
		t.Errorf("NaN → %#04x, not a NaN", nan)
	}
	if v := float16ToFloat32(nan); !math.IsNaN(float64(v)) {
		t.Errorf("NaN does not round-trip: %v", v)
	}
}

// Every non-NaN half converts to float32 and back unchanged.
func TestFloat16RoundTripAll(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			continue
		}
		f := float16ToFloat32(uint16(h))
		if got := float32ToFloat16(f); got != uint16(h) {
			t.Fatalf("%#04x → %g → %#04x", h, f, got)
		}
	}
}

// Random float32s round to the nearest half (ties to even), judged in
// float64 against both neighbours.
func TestFloat16Nearest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) || math.Abs(float64(f)) >= 65520 {
			continue
		}
		h := float32ToFloat16(f)
		got := float64(float16ToFloat32(h))
		d := math.Abs(got - float64(f))
		for _, nb := range []uint16{h + 1, h - 1} {
			if nb&0x7c00 == 0x7c00 || (h&0x7fff == 0 && nb == h-1) {
				continue
			}
			dn := math.Abs(float64(float16ToFloat32(nb)) - float64(f))
			if dn < d || (dn == d && h&1 == 1) {
				t.Fatalf("%g → %#04x (%g), but %#04x (%g) is nearer or the even tie", f, h, got, nb, float16ToFloat32(nb))
			}
		}
	}
}
