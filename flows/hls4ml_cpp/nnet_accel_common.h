// accel's hls4ml extension layers: helpers shared by the integer ViT and the deformable conv.
//
// Every accel op is defined on raw integers (value = raw * 2^-frac) in accel/intops.py and
// accel/deform.py; these layers mirror those definitions operation for operation with
// ap_int arithmetic of declared widths, so their C simulation is bit-exact and Vitis HLS
// synthesizes them as written (fixed trip counts, no dynamic memory, no floating point).
#ifndef NNET_ACCEL_COMMON_H_
#define NNET_ACCEL_COMMON_H_

#include "ap_fixed.h"
#include "ap_int.h"

namespace nnet {
namespace accel {

// The raw integer of a fixed-point value (its bits, sign-extended for ap_fixed).
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> inline ap_int<W> raw(const ap_fixed<W, I, Q, O, N> &x) {
    #pragma HLS INLINE
    ap_int<W> r;
    r.range(W - 1, 0) = x.range(W - 1, 0);
    return r;
}

template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
inline ap_int<W + 1> raw(const ap_ufixed<W, I, Q, O, N> &x) {
    #pragma HLS INLINE
    ap_uint<W> r;
    r.range(W - 1, 0) = x.range(W - 1, 0);
    return ap_int<W + 1>(r);
}

// The fixed-point value of type T whose raw integer is v (v must fit T: no rounding here).
template <class T, int W, bool S> inline T from_raw(const ap_int_base<W, S> &v) {
    #pragma HLS INLINE
    ap_int<T::width> bits = v;
    T y;
    y.range(T::width - 1, 0) = bits.range(T::width - 1, 0);
    return y;
}

// floor(a / d) for d > 0 (C++ division truncates toward zero; numpy's // floors).
template <int W, int D> inline ap_int<W> floordiv(const ap_int<W> &a, const ap_uint<D> &d) {
    #pragma HLS INLINE
    ap_int<W> q = a / d;
    if (a < 0 && ap_int<W + D + 1>(q) * d != a)
        q -= 1;
    return q;
}

// Exact floor(sqrt(v)), digit by digit (accel.intops.isqrt): compare, subtract, shift.
template <int W> ap_uint<(W + 1) / 2> isqrt(const ap_uint<W> &v) {
    ap_uint<W + 1> rem = v, res = 0;
    ap_uint<W + 1> bit = ap_uint<W + 1>(1) << (2 * ((W - 1) / 2));
ISqrt:
    for (int i = 0; i < (W + 1) / 2; i++) {
        ap_uint<W + 1> trial = res + bit;
        if (rem >= trial) {
            rem -= trial;
            res = (res >> 1) + bit;
        } else {
            res = res >> 1;
        }
        bit = bit >> 2;
    }
    return res;
}

// The bit length of v (a leading-one detector): 0 for 0.
template <int W> inline int bit_length(const ap_uint<W> &v) {
    int n = 0;
Lead:
    for (int i = 0; i < W; i++) {
        if (v[i])
            n = i + 1;
    }
    return n;
}

} // namespace accel
} // namespace nnet

#endif
