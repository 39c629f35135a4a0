// accel's depthwise deformable 3x3 convolution as an hls4ml layer (io_parallel), bit-exact
// with accel/deform.py (deform_dw with samples() in mode "square" or "bilinear").
//
// Two inputs: the feature map x (H, W, C) and the quantized offsets (OH, OW, K) that an
// ordinary hls4ml Conv2D computed (its result type rounds half up and saturates them;
// the clip to [lo, hi] is here). Output pixel (oy, ox) is centred on input
// (oy*s - pad_top + 1, ox*s - pad_left + 1); samples outside the image read zero.
//   square:   one offset d in [0, R] per pixel scales the 3x3 grid: tap (ky, kx) reads
//             x[cy + ky d, cx + kx d]
//   bilinear: two offsets per tap (F fraction bits, in [-R, R] pixels), bilinear
//             interpolation with exact integer weights (2F more fraction bits)
// The result is the exact accumulator (bias aligned, wrapped to acc_t's width).
#ifndef NNET_ACCEL_DEFORM_H_
#define NNET_ACCEL_DEFORM_H_

#include "nnet_accel_common.h"
#include "nnet_common.h"

namespace nnet {

struct accel_deform_config {
    static const unsigned in_height = 16;
    static const unsigned in_width = 16;
    static const unsigned n_chan = 16;
    static const unsigned out_height = 16;
    static const unsigned out_width = 16;
    static const unsigned n_off = 1; // K: 1 (square) or 18 (bilinear)
    static const int stride = 1;
    static const int pad_top = 1;
    static const int pad_left = 1;
    static const bool bilinear = false;
    static const int off_frac = 0; // F
    static const int off_lo = 0;   // raw clip bounds of an offset
    static const int off_hi = 7;
    static const int x_width = 9;     // raw width of x (+1 if unsigned)
    static const int sample_w = 18;   // a bilinear sample: x_width + 2F + 1
    static const int acc_width = 17;  // the accumulator's width
    static const int bias_shift = 0;  // acc.frac - bias.frac
    typedef ap_fixed<4, 1> weight_t;
    typedef ap_fixed<16, 6> bias_t;
    typedef ap_fixed<17, 7> exact_t;
};

namespace accel {

template <class data_T, typename CONFIG_T> inline ap_int<CONFIG_T::x_width> deform_read(data_T x[], int y, int xx, int c) {
    #pragma HLS INLINE
    if (y < 0 || y >= int(CONFIG_T::in_height) || xx < 0 || xx >= int(CONFIG_T::in_width))
        return 0;
    return raw(x[(y * CONFIG_T::in_width + xx) * CONFIG_T::n_chan + c]);
}

template <int W> inline int clip(const ap_int<W> &v, int lo, int hi) {
    #pragma HLS INLINE
    return v < lo ? lo : (v > hi ? hi : int(v));
}

} // namespace accel

template <class data_T, class off_T, class res_T, typename CONFIG_T>
void accel_deform_dw(data_T x[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                     off_T off[CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_off],
                     res_T res[CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_chan],
                     typename CONFIG_T::weight_t weights[9 * CONFIG_T::n_chan],
                     typename CONFIG_T::bias_t biases[CONFIG_T::n_chan]) {
    const int C = CONFIG_T::n_chan, F = CONFIG_T::off_frac, K = CONFIG_T::n_off;
    const int one = 1 << F;
    typedef ap_int<CONFIG_T::acc_width> acc_t;
    typedef ap_int<CONFIG_T::sample_w> sample_t;
OutRows:
    for (unsigned oy = 0; oy < CONFIG_T::out_height; oy++) {
    OutCols:
        for (unsigned ox = 0; ox < CONFIG_T::out_width; ox++) {
            const int cy = int(oy) * CONFIG_T::stride - CONFIG_T::pad_top + 1;
            const int cx = int(ox) * CONFIG_T::stride - CONFIG_T::pad_left + 1;
            const int pix = oy * CONFIG_T::out_width + ox;
            int ty[9], tx[9];   // square: the sample's row and column
            int y0[9], x0[9];   // bilinear: the top-left neighbour
            int fy[9], fx[9];   // bilinear: the fractions, F bits
        Taps:
            for (int t = 0; t < 9; t++) {
                const int ky = t / 3 - 1, kx = t % 3 - 1;
                if (CONFIG_T::bilinear) {
                    int dy = accel::clip(accel::raw(off[pix * K + 2 * t]), CONFIG_T::off_lo, CONFIG_T::off_hi);
                    int dx = accel::clip(accel::raw(off[pix * K + 2 * t + 1]), CONFIG_T::off_lo, CONFIG_T::off_hi);
                    int py = (cy + ky) * one + dy, px = (cx + kx) * one + dx;
                    y0[t] = py >> F; // floor
                    x0[t] = px >> F;
                    fy[t] = py - y0[t] * one;
                    fx[t] = px - x0[t] * one;
                } else {
                    int d = accel::clip(accel::raw(off[pix * K]), CONFIG_T::off_lo, CONFIG_T::off_hi);
                    ty[t] = cy + ky * d;
                    tx[t] = cx + kx * d;
                }
            }
        Chans:
            for (int c = 0; c < C; c++) {
                acc_t acc = acc_t(accel::raw(biases[c])) << CONFIG_T::bias_shift;
            Mac:
                for (int t = 0; t < 9; t++) {
                    sample_t s;
                    if (CONFIG_T::bilinear) {
                        sample_t s00 = accel::deform_read<data_T, CONFIG_T>(x, y0[t], x0[t], c);
                        sample_t s01 = accel::deform_read<data_T, CONFIG_T>(x, y0[t], x0[t] + 1, c);
                        sample_t s10 = accel::deform_read<data_T, CONFIG_T>(x, y0[t] + 1, x0[t], c);
                        sample_t s11 = accel::deform_read<data_T, CONFIG_T>(x, y0[t] + 1, x0[t] + 1, c);
                        s = sample_t((one - fy[t]) * (one - fx[t])) * s00 + sample_t((one - fy[t]) * fx[t]) * s01 +
                            sample_t(fy[t] * (one - fx[t])) * s10 + sample_t(fy[t] * fx[t]) * s11;
                    } else {
                        s = accel::deform_read<data_T, CONFIG_T>(x, ty[t], tx[t], c);
                    }
                    acc += accel::raw(weights[t * C + c]) * s; // wraps to acc_width, as the reference
                }
                res[pix * C + c] = accel::from_raw<typename CONFIG_T::exact_t>(acc);
            }
        }
    }
}

} // namespace nnet

#endif
