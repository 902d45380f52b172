// Quantizers for every block type of quant/blocks.h (GGML's Q*_0/1, k-quants, MLX affine groups).
//
// GGML types follow the semantics of llama.cpp's reference quantizers without an importance matrix:
// Q8_0 is bit-compatible (d = amax/127, q = round(x/d)); the other types search the scale (and min) for
// the lowest weighted squared error, so they are at least as accurate as llama.cpp's. MLX follows mlx's
// affine quantize (scale from the group range, the larger-magnitude extreme as the exact edge).
//
// Searches accumulate in double: a row may hold any finite float (up to ~3.4e38), whose squares and
// ranges overflow float. Stored half-precision scales saturate at the largest finite value, so every
// output dequantizes to finite numbers (far-out values then lose accuracy, never become inf/NaN).
#include "quant/quantize.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "quant/blocks.h"
#include "util/error.h"

namespace uneven::quant {
namespace {

constexpr float kF16Max = 65504.0f;

// Half with saturation instead of overflow to infinity.
uint16_t f16_sat(double v) {
  const float f = float(std::clamp(v, -double(kF16Max), double(kF16Max)));
  return f32_to_f16(f);
}

// Half of a positive v, rounded up so that the stored value is >= v: integer multiples of it then
// still reach v's range (matters where small scales fall into half's coarse subnormal range).
uint16_t f16_at_least(double v) {
  uint16_t h = f16_sat(v);
  if (double(f16_to_f32(h)) < v && h < 0x7bffu) ++h;
  return h;
}

// Round half to even, as llama.cpp's nearest_int; inputs are clamped first so the cast cannot overflow.
// Adding and removing 1.5 * 2^52 rounds in the FPU's default mode without a libm call (nearbyint is
// one without SSE4.1), which dominates the scale searches otherwise.
inline int nearest(double v) {
  constexpr double kMagic = 6755399436931072.0;
  v = std::clamp(v, -1e9, 1e9);
  const double t = v + kMagic;  // strict IEEE arithmetic (no -ffast-math): not folded away
  return int(t - kMagic);
}

// ---- scale searches ---------------------------------------------------------------------------------

// Symmetric fit x[i] ~= d * q[i], q in [-nmax, nmax - 1] (the negative end has the extra level, so the
// largest-magnitude element is mapped there whatever its sign). Candidate inverse scales around
// nmax / |x|max are tried and the one with the lowest weighted squared error wins; d is then the
// least-squares scale for the chosen q. Returns d; q holds the signed levels.
double fit_symmetric(const float* x, const double* w, int n, int nmax, int* q) {
  double amax = 0, vmax = 0;
  for (int i = 0; i < n; ++i) {
    const double a = std::fabs(double(x[i]));
    if (a > amax) { amax = a; vmax = x[i]; }
  }
  if (amax < 1e-30) {
    std::fill(q, q + n, 0);
    return 0;
  }
  double best_d = 0, best_gain = -1;  // gain = sumlx^2 / suml2: the error drop of the LS scale
  int tmp[256];
  auto levels_for = [&](double iscale, int* out, double& sumlx, double& suml2) {
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest(iscale * x[i]), -nmax, nmax - 1);
      out[i] = l;
      sumlx += w[i] * x[i] * l;
      suml2 += w[i] * double(l) * l;
    }
  };
  for (int step = -9; step <= 9; ++step) {
    const double iscale = -(nmax + 0.1 * step) / vmax;
    double sumlx, suml2;
    levels_for(iscale, tmp, sumlx, suml2);
    if (suml2 > 0 && sumlx * sumlx > best_gain * suml2) {
      best_gain = sumlx * sumlx / suml2;
      best_d = sumlx / suml2;
      std::copy(tmp, tmp + n, q);
    }
  }
  // Alternate re-rounding at the LS scale and re-fitting while it helps (a few Lloyd steps).
  for (int it = 0; it < 4 && best_d != 0; ++it) {
    double sumlx, suml2;
    levels_for(1.0 / best_d, tmp, sumlx, suml2);
    if (!(suml2 > 0 && sumlx * sumlx > best_gain * suml2 * (1 + 1e-12))) break;
    best_gain = sumlx * sumlx / suml2;
    best_d = sumlx / suml2;
    std::copy(tmp, tmp + n, q);
  }
  return best_d;
}

// Affine fit x[i] ~= d * q[i] + m, q in [0, nmax]. With `min_nonpos` the offset is kept <= 0 (k-quants
// store -m as an unsigned "min"). Tries inverse scales (nmax + rmin + rdelta*k) / range for k in
// [0, nstep] from the min, solving d and m by weighted least squares for each level assignment, and
// keeps the lowest weighted squared error. Returns {d, m}; q holds the levels.
struct Affine { double d, m; };
// Lloyd refinement rounds after the scale search (each is kept only if it lowers the error).
constexpr int kLloyd = 4;
Affine fit_affine(const float* x, const double* w, int n, int nmax, double rmin, double rdelta, int nstep,
                  bool min_nonpos, uint8_t* q) {
  double lo = x[0], hi = x[0], sw = 0, sx = 0;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, double(x[i]));
    hi = std::max(hi, double(x[i]));
    sw += w[i];
    sx += w[i] * x[i];
  }
  if (min_nonpos && lo > 0) lo = 0;
  if (hi <= lo) {  // constant (or all-zero) block: exact with d = 0
    std::fill(q, q + n, uint8_t(0));
    return {0, lo};
  }
  auto error = [&](const uint8_t* l, double d, double m) {
    double e = 0;
    for (int i = 0; i < n; ++i) {
      const double r = d * l[i] + m - x[i];
      e += w[i] * r * r;
    }
    return e;
  };
  const double range = hi - lo;
  Affine best{range / nmax, lo};
  for (int i = 0; i < n; ++i) q[i] = uint8_t(std::clamp(nearest((x[i] - lo) / best.d), 0, nmax));
  double best_err = error(q, best.d, best.m);

  uint8_t tmp[256];
  // Least-squares (d, m) for levels l; false when degenerate.
  auto solve = [&](const uint8_t* l, Affine& out) {
    double sl = 0, sl2 = 0, sxl = 0;
    for (int i = 0; i < n; ++i) {
      sl += w[i] * l[i];
      sl2 += w[i] * double(l[i]) * l[i];
      sxl += w[i] * x[i] * l[i];
    }
    const double det = sw * sl2 - sl * sl;
    if (!(det > 0)) return false;
    out.d = (sw * sxl - sx * sl) / det;
    out.m = (sl2 * sx - sl * sxl) / det;
    if (min_nonpos && out.m > 0) {
      if (!(sl2 > 0)) return false;
      out.m = 0;
      out.d = sxl / sl2;
    }
    return true;
  };
  auto try_levels = [&](const uint8_t* l) {
    Affine a;
    if (!solve(l, a)) return false;
    const double e = error(l, a.d, a.m);
    if (e < best_err) {
      best_err = e;
      best = a;
      std::copy(l, l + n, q);
      return true;
    }
    return false;
  };
  for (int k = 0; k <= nstep; ++k) {
    const double iscale = (nmax + rmin + rdelta * k) / range;
    for (int i = 0; i < n; ++i) tmp[i] = uint8_t(std::clamp(nearest(iscale * (x[i] - lo)), 0, nmax));
    try_levels(tmp);
  }
  // Lloyd steps: re-round against the current best (d, m), re-solve, keep while the error drops.
  for (int it = 0; it < kLloyd && best.d > 0; ++it) {
    for (int i = 0; i < n; ++i) tmp[i] = uint8_t(std::clamp(nearest((x[i] - best.m) / best.d), 0, nmax));
    if (!try_levels(tmp)) break;
  }
  return best;
}

// ---- GGML 32-element blocks ------------------------------------------------------------------------

void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

// Q8_0 exactly as llama.cpp's reference: d = amax / 127 (stored as half), q = round(x * (1/d)) with
// the unrounded d, rounding half away from zero.
void q8_0(const float* x, BlockQ8_0& b) {
  double amax = 0;
  for (int i = 0; i < kQK; ++i) amax = std::max(amax, std::fabs(double(x[i])));
  const float d = float(amax / 127);
  const float id = d != 0 ? 1.0f / d : 0.0f;
  b.d = f16_sat(d);
  for (int i = 0; i < kQK; ++i) b.qs[i] = int8_t(std::clamp(std::lround(std::clamp(x[i] * id, -128.0f, 128.0f)), -127L, 127L));
}

// Weights for the 32-element types: uniform (plain RMS is what they are judged by).
const double* unit_weights() {
  static const auto w = [] {
    std::array<double, 256> a;
    a.fill(1.0);
    return a;
  }();
  return w.data();
}

// Q4_0 / Q5_0 follow llama.cpp's reference quantizer (what llama-quantize writes without an importance
// matrix), so our files carry its bytes: the scale maps the element of largest magnitude to the extreme
// level, levels round half up (the scale saturates at the largest half instead of overflowing). A
// least-squares scale search lowers the RMS error by ~10% but, measured on stories260K as Q4_K_M (whose
// 64-wide rows fall back to Q5_0), departs from the reference story after 23 tokens where llama.cpp's
// rule keeps all 40.
template <int Bits>
float sym_ref(const float* x, uint16_t& d_out, int* q) {
  constexpr int half = 1 << (Bits - 1);
  float amax = 0, vmax = 0;
  for (int i = 0; i < kQK; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      vmax = x[i];
    }
  const float d = vmax / -float(half);
  float id = d != 0.0f ? 1.0f / d : 0.0f;
  if (!std::isfinite(id)) id = 0.0f;  // a subnormal scale: the block is zero to within 1e-38
  d_out = f16_sat(d);
  for (int i = 0; i < kQK; ++i) {
    // Clamped in float first: an out-of-range float-to-int conversion is undefined.
    float v = x[i] * id + float(half) + 0.5f;
    v = v >= 0.0f ? std::min(v, float(2 * half - 1)) : 0.0f;  // NaN -> 0 too
    q[i] = int(v) - half;
  }
  return d;
}

// Q4_1 / Q5_1: a least-squares affine fit (min-max would lose 3x the precision around outliers).
template <int Bits>
void affine_block(const float* x, uint16_t& d_out, uint16_t& m_out, uint8_t* q) {
  constexpr int nmax = (1 << Bits) - 1;
  const Affine a = fit_affine(x, unit_weights(), kQK, nmax, -0.5, 0.1, 10, false, q);
  d_out = f16_sat(a.d);
  m_out = f16_sat(a.m);
  const double dr = f16_to_f32(d_out), mr = f16_to_f32(m_out);
  for (int i = 0; i < kQK; ++i) q[i] = dr > 0 ? uint8_t(std::clamp(nearest((x[i] - mr) / dr), 0, nmax)) : 0;
}

void q4_0(const float* x, BlockQ4_0& b) {
  int q[kQK];
  sym_ref<4>(x, b.d, q);
  for (int j = 0; j < kQK / 2; ++j) b.qs[j] = uint8_t((q[j] + 8) | ((q[j + 16] + 8) << 4));
}
void q5_0(const float* x, BlockQ5_0& b) {
  int q[kQK];
  sym_ref<5>(x, b.d, q);
  uint32_t qh = 0;
  for (int j = 0; j < kQK; ++j) {
    const uint32_t u = uint32_t(q[j] + 16);
    qh |= ((u >> 4) & 1u) << j;
    if (j < 16) b.qs[j] = uint8_t(u & 0xF);
    else b.qs[j - 16] |= uint8_t((u & 0xF) << 4);
  }
  put_u32(b.qh, qh);
}
void q4_1(const float* x, BlockQ4_1& b) {
  uint8_t q[kQK];
  affine_block<4>(x, b.d, b.m, q);
  for (int j = 0; j < kQK / 2; ++j) b.qs[j] = uint8_t(q[j] | (q[j + 16] << 4));
}
void q5_1(const float* x, BlockQ5_1& b) {
  uint8_t q[kQK];
  affine_block<5>(x, b.d, b.m, q);
  uint32_t qh = 0;
  for (int j = 0; j < kQK; ++j) {
    qh |= uint32_t((q[j] >> 4) & 1u) << j;
    if (j < 16) b.qs[j] = uint8_t(q[j] & 0xF);
    else b.qs[j - 16] |= uint8_t((q[j] & 0xF) << 4);
  }
  put_u32(b.qh, qh);
}

// ---- k-quants --------------------------------------------------------------------------------------

// Per-element weights of a 256-block as llama.cpp's k-quants use without an importance matrix:
// rms(block) + |x|, so large elements count more but small ones are not ignored.
void k_weights(const float* x, double* w) {
  double s2 = 0;
  for (int i = 0; i < kQKK; ++i) s2 += double(x[i]) * x[i];
  const double av = std::sqrt(s2 / kQKK);
  for (int i = 0; i < kQKK; ++i) w[i] = av + std::fabs(double(x[i]));
}

void pack_scale_min(int j, uint8_t sc, uint8_t m, uint8_t* s) {
  if (j < 4) {
    s[j] = uint8_t((s[j] & 0xC0) | (sc & 63));
    s[j + 4] = uint8_t((s[j + 4] & 0xC0) | (m & 63));
  } else {
    s[j + 4] = uint8_t((sc & 0xF) | ((m & 0xF) << 4));
    s[j - 4] = uint8_t((s[j - 4] & 63) | ((sc >> 4) << 6));
    s[j] = uint8_t((s[j] & 63) | ((m >> 4) << 6));
  }
}

// Q4_K / Q5_K: 8 sub-blocks of 32 with an affine fit each (min <= 0), then the 8 scales and 8 mins are
// quantized to 6 bits against the super-block's d and dmin, and the levels re-derived from them.
template <int Bits>
void k_affine(const float* x, uint16_t& d_out, uint16_t& dmin_out, uint8_t* scales, uint8_t* levels) {
  constexpr int nmax = (1 << Bits) - 1;
  double w[kQKK];
  k_weights(x, w);
  double sc[8], mn[8];
  uint8_t q[kQKK];
  for (int j = 0; j < 8; ++j) {
    const Affine a = Bits == 4 ? fit_affine(x + 32 * j, w + 32 * j, 32, nmax, -1.0, 0.1, 20, true, q + 32 * j)
                               : fit_affine(x + 32 * j, w + 32 * j, 32, nmax, -0.5, 0.1, 15, true, q + 32 * j);
    sc[j] = std::max(a.d, 0.0);
    mn[j] = -a.m;  // >= 0
  }
  const double max_sc = *std::max_element(sc, sc + 8), max_mn = *std::max_element(mn, mn + 8);
  // The 6-bit scales and mins are taken against the stored (half) super-block scales, so that the
  // half's rounding (coarse for small blocks) is absorbed by them.
  d_out = f16_at_least(max_sc / 63);
  dmin_out = f16_at_least(max_mn / 63);
  uint8_t ls[8], lm[8];
  {
    const double D = f16_to_f32(d_out), M = f16_to_f32(dmin_out);
    for (int j = 0; j < 8; ++j) {
      ls[j] = D > 0 ? uint8_t(std::clamp(nearest(sc[j] / D), 0, 63)) : 0;
      lm[j] = M > 0 ? uint8_t(std::clamp(nearest(mn[j] / M), 0, 63)) : 0;
    }
  }
  // Levels for stored super-block scales (D, M) and the weighted error they give.
  auto levels_for = [&](uint16_t hd, uint16_t hm, uint8_t* L) {
    const double D = f16_to_f32(hd), M = f16_to_f32(hm);
    double err = 0;
    for (int j = 0; j < 8; ++j) {
      const double d = D * ls[j], m = M * lm[j];
      for (int i = 0; i < 32; ++i) {
        const int k = 32 * j + i;
        L[k] = d > 0 ? uint8_t(std::clamp(nearest((x[k] + m) / d), 0, nmax)) : 0;
        const double r = d * L[k] - m - x[k];
        err += w[k] * r * r;
      }
    }
    return err;
  };
  // Rounding each 6-bit scale and min to nearest is not the best pair for the re-rounded levels:
  // try the neighbours of each sub-block's pair and keep the one with the lowest weighted error.
  {
    const double D = f16_to_f32(d_out), M = f16_to_f32(dmin_out);
    for (int j = 0; j < 8; ++j) {
      const float* xs = x + 32 * j;
      const double* ws = w + 32 * j;
      double best_e = std::numeric_limits<double>::infinity();
      int best_s = ls[j], best_m = lm[j];
      for (int s = std::max(0, ls[j] - 1); s <= std::min(63, ls[j] + 1); ++s) {
        for (int mi = std::max(0, lm[j] - 1); mi <= std::min(63, lm[j] + 1); ++mi) {
          const double d = D * s, m = M * mi;
          double e = 0;
          for (int i = 0; i < 32; ++i) {
            const int l = d > 0 ? std::clamp(nearest((xs[i] + m) / d), 0, nmax) : 0;
            const double r = d * l - m - xs[i];
            e += ws[i] * r * r;
          }
          if (e < best_e) { best_e = e; best_s = s; best_m = mi; }
        }
      }
      ls[j] = uint8_t(best_s);
      lm[j] = uint8_t(best_m);
    }
  }
  double best = levels_for(d_out, dmin_out, levels);
  // The 6-bit scales moved every sub-block off its own optimum: refit the two super-block scales by
  // weighted least squares over the whole block (x ~= D * (ls*q) - M * lm), re-round, keep if better.
  uint8_t L[kQKK];
  std::copy(levels, levels + kQKK, L);
  for (int it = 0; it < 3; ++it) {
    double saa = 0, sab = 0, sbb = 0, sxa = 0, sxb = 0;
    for (int k = 0; k < kQKK; ++k) {
      const double a = double(ls[k / 32]) * L[k], bb = -double(lm[k / 32]);
      saa += w[k] * a * a;
      sab += w[k] * a * bb;
      sbb += w[k] * bb * bb;
      sxa += w[k] * x[k] * a;
      sxb += w[k] * x[k] * bb;
    }
    double D, M;
    const double det = saa * sbb - sab * sab;
    if (sbb > 0 && det > 1e-12 * saa * sbb) {
      D = (sxa * sbb - sxb * sab) / det;
      M = (saa * sxb - sab * sxa) / det;
    } else if (saa > 0) {
      D = sxa / saa;
      M = f16_to_f32(dmin_out);
    } else {
      break;
    }
    if (!(D > 0) || M < 0) break;
    const uint16_t hd = f16_sat(D), hm = f16_sat(M);
    const double e = levels_for(hd, hm, L);
    if (!(e < best)) break;
    best = e;
    d_out = hd;
    dmin_out = hm;
    std::copy(L, L + kQKK, levels);
  }
  std::memset(scales, 0, kKScaleBytes);
  for (int j = 0; j < 8; ++j) pack_scale_min(j, ls[j], lm[j], scales);
}

void q4_k(const float* x, BlockQ4_K& b) {
  uint8_t L[kQKK];
  k_affine<4>(x, b.d, b.dmin, b.scales, L);
  for (int p = 0; p < 4; ++p)
    for (int l = 0; l < 32; ++l) b.qs[32 * p + l] = uint8_t(L[64 * p + l] | (L[64 * p + 32 + l] << 4));
}
void q5_k(const float* x, BlockQ5_K& b) {
  uint8_t L[kQKK];
  k_affine<5>(x, b.d, b.dmin, b.scales, L);
  std::memset(b.qh, 0, sizeof b.qh);
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = L[64 * p + l], hi = L[64 * p + 32 + l];
      b.qs[32 * p + l] = uint8_t((lo & 0xF) | ((hi & 0xF) << 4));
      b.qh[l] |= uint8_t(((lo >> 4) & 1u) << (2 * p));
      b.qh[l] |= uint8_t(((hi >> 4) & 1u) << (2 * p + 1));
    }
  }
}

// Q6_K: 16 sub-blocks of 16 with a symmetric fit each (weights x^2, as llama.cpp), the signed scales
// quantized to int8 against the super-block's d (largest magnitude -> -128), levels re-derived.
void q6_k(const float* x, BlockQ6_K& b) {
  double w[16];
  double sc[16];
  int q[16];
  double max_abs = 0, max_sc = 0;
  for (int s = 0; s < 16; ++s) {
    for (int i = 0; i < 16; ++i) w[i] = double(x[16 * s + i]) * x[16 * s + i];
    sc[s] = fit_symmetric(x + 16 * s, w, 16, 32, q);
    if (std::fabs(sc[s]) > max_abs) { max_abs = std::fabs(sc[s]); max_sc = sc[s]; }
  }
  int8_t ls[16];
  if (max_abs == 0) {
    std::memset(&b, 0, sizeof b);
    // all levels 32 (zero): low nibbles 0, high bit pairs 0b10
    std::memset(b.qh, 0xAA, sizeof b.qh);
    return;
  }
  // The largest-magnitude sub-block scale maps to -128 (int8's extra level), so d has the opposite
  // sign of it; the int8 scales are taken against the stored (half) d, rounded away from zero.
  const double d_exact = max_sc / -128.0;
  b.d = d_exact > 0 ? f16_at_least(d_exact) : uint16_t(f16_at_least(-d_exact) | 0x8000u);
  const double D = f16_to_f32(b.d);
  for (int s = 0; s < 16; ++s) ls[s] = D != 0 ? int8_t(std::clamp(nearest(sc[s] / D), -128, 127)) : 0;
  // As for Q4_K: the nearest int8 scale is not always the best one once levels are re-rounded; try
  // its neighbours (error weighted as in the fit).
  for (int s = 0; s < 16; ++s) {
    const float* xs = x + 16 * s;
    double best_e = std::numeric_limits<double>::infinity();
    int best_l = ls[s];
    for (int c = std::max(-128, ls[s] - 1); c <= std::min(127, ls[s] + 1); ++c) {
      const double d = D * c;
      double e = 0;
      for (int i = 0; i < 16; ++i) {
        const int l = d != 0 ? std::clamp(nearest(xs[i] / d), -32, 31) : 0;
        const double r = d * l - xs[i];
        e += (double(xs[i]) * xs[i]) * r * r;
      }
      if (e < best_e) { best_e = e; best_l = c; }
    }
    ls[s] = int8_t(best_l);
  }
  uint8_t L[kQKK];
  for (int s = 0; s < 16; ++s) {
    const double d = D * ls[s];
    for (int i = 0; i < 16; ++i)
      L[16 * s + i] = uint8_t(d != 0 ? std::clamp(nearest(x[16 * s + i] / d), -32, 31) + 32 : 32);
  }
  std::memcpy(b.scales, ls, 16);
  for (int h = 0; h < 2; ++h) {
    uint8_t* ql = b.ql + 64 * h;
    uint8_t* qh = b.qh + 32 * h;
    const uint8_t* l = L + 128 * h;
    for (int i = 0; i < 32; ++i) {
      ql[i] = uint8_t((l[i] & 0xF) | ((l[i + 64] & 0xF) << 4));
      ql[i + 32] = uint8_t((l[i + 32] & 0xF) | ((l[i + 96] & 0xF) << 4));
      qh[i] = uint8_t((l[i] >> 4) | ((l[i + 32] >> 4) << 2) | ((l[i + 64] >> 4) << 4) | ((l[i + 96] >> 4) << 6));
    }
  }
}

// ---- MLX affine groups -----------------------------------------------------------------------------

// Stores v in the scale dtype (saturating F16 / BF16 at their largest finite value) and returns the
// stored value.
float store_scale(double v, DType t, uint8_t* p) {
  if (t == DType::F32) {
    const float f = float(std::clamp(v, -double(std::numeric_limits<float>::max()), double(std::numeric_limits<float>::max())));
    std::memcpy(p, &f, 4);
    return f;
  }
  uint16_t h;
  if (t == DType::F16) {
    h = f16_sat(v);
  } else {
    constexpr double kBf16Max = 3.3895313892515355e38;
    h = f32_to_bf16(float(std::clamp(v, -kBf16Max, kBf16Max)));
  }
  std::memcpy(p, &h, 2);
  return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// mlx's affine quantize: scale = (max - min) / (2^bits - 1) (at least 1e-7); the extreme with the
// larger magnitude is the edge, which gets level 0 exactly; when the edge is not within half a step of
// zero the scale is adjusted to edge / round(edge / scale) so that 0 is exactly representable too.
// Scale and bias are then rounded to the scale dtype and the levels quantized against the rounded pair.
void mlx_group(const WeightType& t, const float* x, uint8_t* out) {
  const int bits = mlx_bits(t.dtype);
  const double n_bins = double((1 << bits) - 1);
  double lo = x[0], hi = x[0];
  for (int i = 1; i < t.group; ++i) {
    lo = std::min(lo, double(x[i]));
    hi = std::max(hi, double(x[i]));
  }
  const bool min_edge = std::fabs(lo) > std::fabs(hi);
  double scale = std::max((hi - lo) / n_bins, 1e-7);
  if (!min_edge) scale = -scale;
  const double edge = min_edge ? lo : hi;
  const double q0 = std::nearbyint(edge / scale);
  double bias = 0;
  if (q0 != 0) {
    scale = edge / q0;
    bias = edge;
  }
  const size_t ss = dtype_size(t.scale);
  const double s = store_scale(scale, t.scale, out);
  const double b = store_scale(bias, t.scale, out + ss);
  uint8_t* q = out + 2 * ss;
  std::memset(q, 0, size_t(t.group) * bits / 8);
  const int top = int(n_bins);
  for (int i = 0; i < t.group; ++i) {
    int l = s != 0 ? std::clamp(nearest((x[i] - b) / s), 0, top) : 0;
    // Dequantization computes scale * q + bias in float: step toward the bias (finite) until that is.
    while (l > 0 && !std::isfinite(float(s) * float(l) + float(b))) --l;
    if (bits == 8) q[i] = uint8_t(l);
    else q[i / 2] |= uint8_t(l << (4 * (i % 2)));
  }
}

template <typename Block, typename F>
void each_block(const float* src, int64_t blocks, int64_t per, void* dst, F f) {
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < blocks; ++i) {
    Block b;
    std::memset(&b, 0, sizeof b);
    f(src + i * per, b);
    std::memcpy(out + i * sizeof(Block), &b, sizeof(Block));  // dst need not be aligned
  }
}

}  // namespace

void quantize_row(const WeightType& type, const float* src, int64_t n, void* dst) {
  const int64_t per = type.block_elems();
  if (is_mlx(type.dtype)) {
    if (type.group <= 0 || type.group * mlx_bits(type.dtype) % 32 != 0)
      fail("quantize: {} needs a positive group whose packed bits fill whole 32-bit words, got group {}",
           type.name(), type.group);
    if (type.scale != DType::F32 && type.scale != DType::F16 && type.scale != DType::BF16)
      fail("quantize: {} scales must be F32, F16 or BF16, got {}", type.name(), dtype_name(type.scale));
  }
  if (n < 0 || n % per != 0)
    fail("quantize: {} elements are not a whole number of {} blocks of {}", n, type.name(), per);
  const int64_t blocks = n / per;
  uint8_t* out = static_cast<uint8_t*>(dst);
  switch (type.dtype) {
    case DType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
    case DType::U32: fail("quantize: U32 is a storage type of MLX codes, not a target");
    case DType::F16:
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = type.dtype == DType::F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case DType::Q4_0: return each_block<BlockQ4_0>(src, blocks, per, dst, q4_0);
    case DType::Q4_1: return each_block<BlockQ4_1>(src, blocks, per, dst, q4_1);
    case DType::Q5_0: return each_block<BlockQ5_0>(src, blocks, per, dst, q5_0);
    case DType::Q5_1: return each_block<BlockQ5_1>(src, blocks, per, dst, q5_1);
    case DType::Q8_0: return each_block<BlockQ8_0>(src, blocks, per, dst, q8_0);
    case DType::Q4_K: return each_block<BlockQ4_K>(src, blocks, per, dst, q4_k);
    case DType::Q5_K: return each_block<BlockQ5_K>(src, blocks, per, dst, q5_k);
    case DType::Q6_K: return each_block<BlockQ6_K>(src, blocks, per, dst, q6_k);
    case DType::MLX4:
    case DType::MLX8:
      for (int64_t i = 0; i < blocks; ++i) mlx_group(type, src + i * per, out + i * type.block_bytes());
      return;
  }
  fail("quantize: unknown type {}", int(type.dtype));
}

}  // namespace uneven::quant
