// accel's integer ViT ops as hls4ml layers (io_parallel), bit-exact with accel/intops.py.
//
// shiftmax   I-ViT Shiftmax along the last axis (intops.shiftmax), two passes per row
// shiftgelu  ShiftGELU x * sigmoid(1.702 x) (intops.shiftgelu), element-wise
// layernorm  I-LayerNorm with the exact integer square root and division (intops.layernorm)
// matmul     activation x activation product, exact accumulation (intops.matmul)
//
// Each computes its result exactly in the accel op's output type (CONFIG_T::exact_t) and
// assigns it to res_T: when accel fused a requantize into the layer, res_T carries its
// AP_RND/AP_SAT modes and that assignment is the requantization.
#ifndef NNET_ACCEL_VIT_H_
#define NNET_ACCEL_VIT_H_

#include "nnet_accel_common.h"
#include "nnet_common.h"

namespace nnet {

struct accel_shiftmax_config {
    static const unsigned n_rows = 1;
    static const unsigned n_cols = 8;
    static const int x_width = 8; // input raw width (+1 if unsigned)
    static const int x_frac = 4;  // F
    static const int span = 8;    // D: the register sizing, the input type's exponent span
    static const int out_bits = 8; // B: output fraction bits
    static const int out_w = 8; // the output's width
    static const int guard = 2; // G
    static const int sum_w = 32;
    static const int prod_w = 24;
    typedef ap_ufixed<8, 0> exact_t;
};

template <class data_T, class res_T, typename CONFIG_T>
void accel_shiftmax(data_T data[CONFIG_T::n_rows * CONFIG_T::n_cols], res_T res[CONFIG_T::n_rows * CONFIG_T::n_cols]) {
    const int F = CONFIG_T::x_frac, D = CONFIG_T::span, B = CONFIG_T::out_bits, G = CONFIG_T::guard;
    const int M = B + G + 2;
    const int N = CONFIG_T::n_cols;
    typedef ap_int<CONFIG_T::x_width + F + 3> t_t; // x * 1.4375, its exponent, k << F
    typedef ap_uint<F + 1> mant_t;
    typedef ap_uint<CONFIG_T::sum_w> sum_t;
    typedef ap_uint<M + 1> top_t;
    typedef ap_uint<2 * B + 2 * G + 4> div_t;
    typedef ap_uint<CONFIG_T::prod_w + 1> prod_t;

Rows:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
        t_t k[N];
        mant_t mant[N];
        t_t big_k = 0;
    Exponents:
        for (int j = 0; j < N; j++) {
            t_t x = accel::raw(data[r * N + j]);
            t_t t = x + (x >> 1) - (x >> 4); // x * log2(e), floors included
            k[j] = t >> F;
            mant[j] = mant_t(1 << F) + mant_t(t - (k[j] << F));
            if (j == 0 || k[j] > big_k)
                big_k = k[j];
        }
        sum_t s = 0; // exact, at scale 2^-(F + D) relative to 2^K
    Sum:
        for (int j = 0; j < N; j++) {
            s += sum_t(mant[j]) << int(k[j] - big_k + D);
        }
        // S cut to its top M bits, rounding up (a sticky bit), then one division per row.
        int lead = accel::bit_length<CONFIG_T::sum_w>(s);
        int cut = lead - M;
        top_t s_top;
        if (cut > 0) {
            sum_t kept = s >> cut;
            bool sticky = (kept << cut) != s;
            s_top = top_t(kept) + top_t(sticky ? 1 : 0);
        } else {
            s_top = top_t(s) << (-cut);
        }
        div_t recip = (div_t(1) << (2 * B + 2 * G + 3)) / s_top;
    Normalize:
        for (int j = 0; j < N; j++) {
            int shift = 1 + G + (lead - D) + int(big_k - k[j]);
            prod_t p = prod_t(mant[j]) * prod_t(recip);
            ap_uint<CONFIG_T::prod_w + 1> out = 0;
            if (shift <= CONFIG_T::prod_w) {
                out = (p + (prod_t(1) << (shift - 1))) >> shift; // round half up
            }
            const ap_uint<CONFIG_T::prod_w + 1> top = (ap_uint<CONFIG_T::prod_w + 1>(1) << CONFIG_T::out_w) - 1;
            if (out > top)
                out = top;
            res[r * N + j] = accel::from_raw<typename CONFIG_T::exact_t>(ap_int<CONFIG_T::prod_w + 2>(out));
        }
    }
}

struct accel_shiftgelu_config {
    static const unsigned n_in = 8;
    static const int x_width = 8; // input raw width (+1 if unsigned)
    static const int x_frac = 4;
    static const int sig_bits = 8;
    typedef ap_fixed<16, 4> exact_t;
};

template <class data_T, class res_T, typename CONFIG_T>
void accel_shiftgelu(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
    const int F = CONFIG_T::x_frac, G = CONFIG_T::sig_bits, W = CONFIG_T::x_width;
    typedef ap_uint<F + 1> mant_t;
    typedef ap_uint<F + G + 1> e_t;
Elements:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        ap_int<W> x = accel::raw(data[i]);
        ap_int<W + 1> a = x < 0 ? ap_int<W + 1>(x) : ap_int<W + 1>(-x); // -|x|
        ap_int<W + 2> z = a + (a >> 1) + (a >> 3) + (a >> 4);         // 1.702 as 1.6875
        ap_int<W + F + 4> t = z + (z >> 1) - (z >> 4);                 // * log2(e)
        ap_int<W + F + 4> k = t >> F;                                  // <= 0
        mant_t mant = mant_t(1 << F) + mant_t(t - (k << F));
        int sh = F - int(k);
        e_t e = 0; // ~ 2^G exp(-1.702 |x|), in [0, 2^G]
        if (sh <= F + G)
            e = (e_t(mant) << G) >> sh;
        ap_uint<G + 2> num = x >= 0 ? ap_uint<G + 2>(1 << G) : ap_uint<G + 2>(e);
        ap_uint<G + 2> den = ap_uint<G + 2>(1 << G) + ap_uint<G + 2>(e);
        ap_uint<G + 2> sig = (ap_uint<2 * G + 2>(num) << G) / den;
        ap_int<W + G + 2> y = x * sig; // exact
        res[i] = accel::from_raw<typename CONFIG_T::exact_t>(y);
    }
}

struct accel_layernorm_config {
    static const unsigned n_rows = 1;
    static const unsigned n_in = 8; // C
    static const int x_width = 8;   // the input type's width W (as in intops)
    static const int raw_width = 8; // its raw width (+1 if unsigned)
    static const int mean_frac = 4; // m
    static const int sqrt_guard = 4; // g
    static const int norm_frac = 8;  // P
    static const int beta_shift = 0;
    static const int y_w = 16;
    static const int sum_sq_w = 32;
    static const int sqrt_in_w = 40;
    static const int div_w = 32;
    static const int out_w = 32;
    typedef ap_fixed<8, 2> gamma_t;
    typedef ap_fixed<16, 2> beta_t;
    typedef ap_fixed<20, 6> exact_t;
};

template <class data_T, class res_T, typename CONFIG_T>
void accel_layernorm(data_T data[CONFIG_T::n_rows * CONFIG_T::n_in], res_T res[CONFIG_T::n_rows * CONFIG_T::n_in],
                     typename CONFIG_T::gamma_t gamma[CONFIG_T::n_in], typename CONFIG_T::beta_t beta[CONFIG_T::n_in]) {
    const int C = CONFIG_T::n_in, m = CONFIG_T::mean_frac, g = CONFIG_T::sqrt_guard, P = CONFIG_T::norm_frac;
    const int SH = CONFIG_T::x_width + m;
    const int SW = CONFIG_T::raw_width + 12; // the row sum (C < 2^12) and its numerator
    typedef ap_int<SW + m + 2> num_t;
    typedef ap_int<CONFIG_T::y_w> y_t;
    typedef ap_uint<CONFIG_T::sqrt_in_w> sq_t;
    typedef ap_uint<CONFIG_T::div_w> div_t;
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
        ap_int<SW> s = 0;
    Sum:
        for (int j = 0; j < C; j++) {
            s += accel::raw(data[r * C + j]);
        }
        // the mean with m more fraction bits, rounded half up: floor((2^(m+1) s + C) / 2C)
        num_t num = (num_t(s) << (m + 1)) + num_t(C);
        num_t mu = accel::floordiv(num, ap_uint<14>(2 * C));
        y_t y[C];
        ap_uint<CONFIG_T::sum_sq_w> v = 0;
    Center:
        for (int j = 0; j < C; j++) {
            y[j] = (y_t(accel::raw(data[r * C + j])) << m) - y_t(mu);
            v += ap_uint<CONFIG_T::sum_sq_w>(y[j] * y[j]);
        }
        sq_t sq = (sq_t(v) * sq_t(C)) << (2 * g);
        ap_uint<(CONFIG_T::sqrt_in_w + 1) / 2> sigma = accel::isqrt<CONFIG_T::sqrt_in_w>(sq);
        div_t recip = 0;
        if (sigma > 0)
            recip = (div_t(C) << (SH + g + P)) / sigma;
    Affine:
        for (int j = 0; j < C; j++) {
            ap_int<CONFIG_T::y_w + CONFIG_T::div_w + 1> yr = y[j] * recip;
            ap_int<CONFIG_T::y_w + CONFIG_T::div_w + 1> n = yr >> SH;
            ap_int<CONFIG_T::out_w> out = ap_int<CONFIG_T::out_w>(n * accel::raw(gamma[j])) +
                                          (ap_int<CONFIG_T::out_w>(accel::raw(beta[j])) << CONFIG_T::beta_shift);
            res[r * C + j] = accel::from_raw<typename CONFIG_T::exact_t>(out);
        }
    }
}

struct accel_matmul_config {
    static const unsigned n_m = 1;
    static const unsigned n_k = 1;
    static const unsigned n_n = 1;
    static const bool transpose_b = false;
    typedef ap_fixed<32, 16> accum_t;
};

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void accel_matmul(a_T a[CONFIG_T::n_m * CONFIG_T::n_k], b_T b[CONFIG_T::n_k * CONFIG_T::n_n],
                  res_T res[CONFIG_T::n_m * CONFIG_T::n_n]) {
    const int K = CONFIG_T::n_k, N = CONFIG_T::n_n;
Rows:
    for (unsigned i = 0; i < CONFIG_T::n_m; i++) {
    Cols:
        for (int j = 0; j < N; j++) {
            typename CONFIG_T::accum_t acc = 0; // exact products, wrapped to the accumulator
        Dot:
            for (int k = 0; k < K; k++) {
                acc += a[i * K + k] * b[CONFIG_T::transpose_b ? j * K + k : k * N + j];
            }
            res[i * N + j] = acc;
        }
    }
}

} // namespace nnet

#endif
