// CPU kernels for the fast path of the LeNet models (float32, NCHW): conv2d + bias, 2x2 max pooling, and
// softmax-weighted window pooling (SoftPool, LIP, any weighted window mean).
//
// Why: Paddle's CPU conv2d runs image by image through generic im2col/GEMM code that reaches only
// ~3 GFLOP/s on LeNet-sized layers (1-16 channels), and its pooling kernels are general-purpose.
// Here every GEMM is blocked so that an 8x16 tile of the result stays in vector registers, and the
// batch is split into a fixed number of chunks run on OpenMP threads. Chunks (not threads) own the
// partial weight gradients, which are summed in chunk order: the results are bit-identical for any
// thread count. The math is exactly conv2d(x, w) + b; only the summation order of the gradients
// differs from Paddle's kernels (they agree to float rounding).

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "paddle/extension.h"
#include "paddle/phi/core/generator.h"

namespace {

constexpr int64_t L = 16;       // columns per register tile (one AVX-512 vector of floats)
// rows per register tile: RB x L accumulators plus the row of B and a broadcast must fit the vector registers
// (32 zmm with AVX-512; 16 ymm with AVX2, where a row of L = 16 floats is two registers). The tile's shape does
// not change any result: every element still sums its products in depth order.
#ifdef __AVX512F__
constexpr int64_t RB = 8;
// rows of the narrow tile, NRB x NL (weight gradients of layers with <= NL outputs): the most, and the fewest
// tried, so that a layer's depth K pads to few rows (LeNet's first layer: K = 25 rows as 2 x 13, not 3 x 12)
constexpr int64_t NRB = 16, NRB_MIN = 13;
#else
constexpr int64_t RB = 6;
constexpr int64_t NRB = 13, NRB_MIN = 9;
#endif
constexpr int64_t NL = 8;    // columns of the narrow tile: LeNet's first layer has 6 output channels
static_assert(NL == 8, "the narrow tile is one 256-bit vector wide (window_pass)");
constexpr int64_t CHUNKS = 8;   // batch chunks: the unit of parallel work and of gradient reduction

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// a short row copy inline: the images' rows are 5-32 floats, where a call to memcpy per row cost more than the copy
inline void copy_floats(float* __restrict dst, const float* __restrict src, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// exp and log for the pooling kernels, in plain arithmetic so that loops calling them vectorise (std::exp
// and std::log are scalar calls here). Cephes' single-precision polynomials: within ~2 ulp of libm on the
// ranges used (exp of arguments <= 0.1 or so, log of positive normal floats); tests compare with Paddle's ops.
inline float fexp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23)
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float flog(float x) {  // x > 0, normal
  int32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  bits = (bits & 0x807fffff) | 0x3f000000;  // mantissa in [0.5, 1)
  float m;
  std::memcpy(&m, &bits, sizeof m);
  const float below = m < 0.707106781186547524f ? 1.0f : 0.0f;  // branch-free: r ~ 1 falls either side
  e -= below;
  m = m + below * m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

// The 2x2, stride-2 windows of one h x w plane as four contiguous arrays q[e * n + t] (e: row-major position in the
// window, t = i * wo + j): the pooling kernels' loops over windows then run in vector registers without strided
// access, and planes with short rows (5 windows a row in LeNet's second pool) still fill whole vectors.
struct Quad {
  int64_t w, ho, wo, n;
  Quad(int64_t h, int64_t w_) : w(w_), ho(h / 2), wo(w_ / 2), n((h / 2) * (w_ / 2)) {}
  void gather(const float* plane, float* q) const {
    for (int64_t i = 0; i < ho; ++i) {
      const float *r0 = plane + 2 * i * w, *r1 = r0 + w;
      float* a = q + i * wo;
      for (int64_t j = 0; j < wo; ++j) {
        a[j] = r0[2 * j], a[n + j] = r0[2 * j + 1], a[2 * n + j] = r1[2 * j], a[3 * n + j] = r1[2 * j + 1];
      }
    }
  }
  // writes the windows' pixels of the plane; a last odd row or column (in no window) is left as it is
  void scatter(const float* q, float* plane) const {
    for (int64_t i = 0; i < ho; ++i) {
      float *r0 = plane + 2 * i * w, *r1 = r0 + w;
      const float* a = q + i * wo;
      for (int64_t j = 0; j < wo; ++j) {
        r0[2 * j] = a[j], r0[2 * j + 1] = a[n + j], r1[2 * j] = a[2 * n + j], r1[2 * j + 1] = a[3 * n + j];
      }
    }
  }
};

struct Geom {
  int64_t n, c, h, w, o, k, s, p, ho, wo;
  int64_t K() const { return c * k * k; }  // GEMM depth: one im2col row per (c, kh, kw)
  int64_t P() const { return ho * wo; }    // output pixels per image
  int64_t in_size() const { return c * h * w; }
};

Geom geom(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws, int stride, int padding) {
  Geom g{xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], stride, padding, 0, 0};
  g.ho = (g.h + 2 * g.p - g.k) / g.s + 1;
  g.wo = (g.w + 2 * g.p - g.k) / g.s + 1;
  return g;
}

// The depths d a GEMM sums over, in order: d = s * stride + j for s < segs, j < len (all D of them: one segment).
// The weight gradient sums over the wide grid's pixels; its extra columns meet zeros of dout, and a product
// x * (+0) of a finite x adds +-0 to a sum that is never -0 (every sum starts from +0): skipping them moves no bit.
struct Depth {
  int64_t segs, len, stride;
  Depth(int64_t D) : segs(1), len(D), stride(0) {}  // NOLINT: every plain depth converts
  Depth(int64_t s, int64_t l, int64_t st) : segs(s), len(l), stride(st) {}
};

// c[M][N] = (ACC ? c : 0) + A @ B with A[i][d] = a[arow[i] + d] and B[d][j] = b[brow[d] + j]. Row
// offsets (not a leading dimension) let A or B be shifted views of one padded image: the implicit
// im2col of every convolution (Wide, below). M is a multiple of RB, N of L, so each RB x L tile of c stays in
// registers over the whole D loop.
template <bool ACC, int64_t TR, int64_t TL>
void gemm_tiled(int64_t M, int64_t N, Depth D, const float* a, const int64_t* arow, const float* b,
                const int64_t* brow, float* c, int64_t ldc) {
  for (int64_t i0 = 0; i0 < M; i0 += TR)
    for (int64_t j0 = 0; j0 < N; j0 += TL) {
      float acc[TR][TL];
      for (int64_t i = 0; i < TR; ++i)
        for (int64_t j = 0; j < TL; ++j) acc[i][j] = ACC ? c[(i0 + i) * ldc + j0 + j] : 0.f;
      const float* ai[TR];
      for (int64_t i = 0; i < TR; ++i) ai[i] = a + arow[i0 + i];
      for (int64_t sg = 0; sg < D.segs; ++sg)
        for (int64_t d = sg * D.stride, end = d + D.len; d < end; ++d) {
          const float* bd = b + brow[d] + j0;
          for (int64_t i = 0; i < TR; ++i) {
            const float av = ai[i][d];
#pragma omp simd
            for (int64_t j = 0; j < TL; ++j) acc[i][j] += av * bd[j];
          }
        }
      for (int64_t i = 0; i < TR; ++i)
        for (int64_t j = 0; j < TL; ++j) c[(i0 + i) * ldc + j0 + j] = acc[i][j];
    }
}

// A's rows packed tile by tile for gemm_packed: ap[(i0 / TR) * D * TR + d * TR + i] = A[i0 + i][d] = a[arow[i0 + i] + d]
// (M a multiple of TR). Where A is a small weight matrix, copied once per call.
template <int64_t TR>
std::vector<float> pack_rows(int64_t M, int64_t D, const float* a, const int64_t* arow) {
  std::vector<float> ap(M * D);
  for (int64_t i0 = 0; i0 < M; i0 += TR)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t i = 0; i < TR; ++i) ap[i0 * D + d * TR + i] = a[arow[i0 + i] + d];
  return ap;
}

// gemm_tiled with A packed (pack_rows): a tile's broadcasts walk one pointer. With TR row pointers GCC ran out of
// general registers, kept them in vector registers and moved one back before every broadcast (the dx GEMM of a
// 16-channel layer, depth 16: 52 -> 74 GFLOP/s alone on Zen 4). The same products in the same order: the same bits.
template <bool ACC, int64_t TR, int64_t TL>
void gemm_packed_cols(int64_t M, int64_t j_begin, int64_t j_end, int64_t D, const float* ap, const float* b,
                      const int64_t* brow, float* c, int64_t ldc) {
  for (int64_t i0 = 0; i0 < M; i0 += TR) {
    const float* at = ap + i0 * D;
    for (int64_t j0 = j_begin; j0 < j_end; j0 += TL) {
      float acc[TR][TL];
      for (int64_t i = 0; i < TR; ++i)
        for (int64_t j = 0; j < TL; ++j) acc[i][j] = ACC ? c[(i0 + i) * ldc + j0 + j] : 0.f;
      for (int64_t d = 0; d < D; ++d) {
        const float* ad = at + d * TR;
        const float* bd = b + brow[d] + j0;
        for (int64_t i = 0; i < TR; ++i) {
          const float av = ad[i];
#pragma omp simd
          for (int64_t j = 0; j < TL; ++j) acc[i][j] += av * bd[j];
        }
      }
      for (int64_t i = 0; i < TR; ++i)
#pragma omp simd
        for (int64_t j = 0; j < TL; ++j) c[(i0 + i) * ldc + j0 + j] = acc[i][j];
    }
  }
}

// With AVX-512 an 8-row tile is three vectors wide where N allows, then two (24 accumulators, three loads of B and
// eight broadcasts per 24 FMAs, instead of one load and eight per eight): the dx GEMM's depth is only the 6-16 output
// channels, so a tile's setup and stores weigh as much as its FMAs. 8 x 48 after 8 x 32, forward + backward on Zen 5:
// LeNet conv2 0.95x, LeNet_nopool conv3 0.97x, LeNet_BN conv3 0.97x. The tile's width changes no sum: the same bits.
template <bool ACC, int64_t TR, int64_t TL>
void gemm_packed(int64_t M, int64_t N, int64_t D, const float* ap, const float* b, const int64_t* brow, float* c,
                 int64_t ldc) {
#ifdef __AVX512F__
  if constexpr (TR * 3 * TL <= 24 * 16) {
    const int64_t w3 = N / (3 * TL) * (3 * TL), w2 = w3 + (N - w3) / (2 * TL) * (2 * TL);
    gemm_packed_cols<ACC, TR, 3 * TL>(M, 0, w3, D, ap, b, brow, c, ldc);
    gemm_packed_cols<ACC, TR, 2 * TL>(M, w3, w2, D, ap, b, brow, c, ldc);
    return gemm_packed_cols<ACC, TR, TL>(M, w2, N, D, ap, b, brow, c, ldc);
  } else if constexpr (TR * 2 * TL <= 16 * 16) {
    const int64_t wide = N / (2 * TL) * (2 * TL);
    gemm_packed_cols<ACC, TR, 2 * TL>(M, 0, wide, D, ap, b, brow, c, ldc);
    return gemm_packed_cols<ACC, TR, TL>(M, wide, N, D, ap, b, brow, c, ldc);
  }
#endif
  gemm_packed_cols<ACC, TR, TL>(M, 0, N, D, ap, b, brow, c, ldc);
}

// rows of the narrow tile for depth K: the fewest padded rows, then the fewest tiles
int64_t narrow_rows(int64_t K) {
  int64_t best = NRB;
  for (int64_t r = NRB; r >= NRB_MIN; --r)
    if (round_up(K, r) < round_up(K, best)) best = r;
  return best;
}

template <int64_t R>
void narrow_gemm_r(int64_t rows, int64_t M, int64_t N, Depth D, const float* a, const int64_t* arow, const float* b,
                   const int64_t* brow, float* c, int64_t ldc) {
  if constexpr (R > NRB_MIN) {
    if (rows != R) return narrow_gemm_r<R - 1>(rows, M, N, D, a, arow, b, brow, c, ldc);
  }
  gemm_tiled<true, R, NL>(M, N, D, a, arow, b, brow, c, ldc);
}

// c += A @ B with the narrow tile of `rows` (narrow_rows(K)) rows
void narrow_gemm(int64_t rows, int64_t M, int64_t N, Depth D, const float* a, const int64_t* arow, const float* b,
                 const int64_t* brow, float* c, int64_t ldc) {
  narrow_gemm_r<NRB>(rows, M, N, D, a, arow, b, brow, c, ldc);
}

// narrow_gemm for a k x k (k = 3 or 5), stride-1 layer, one input channel's k * k rows (kh, kw) a tile: row (kh, kw)
// at depth d reads a[kh * W + kw + d], so row (kh, kw + 1) at depth d reads what row (kh, kw) reads at d + 1. Two
// depths a step: k + 1 broadcasts a kernel row serve its 2k products (3x3: twelve loads of A for eighteen products,
// where narrow_gemm loads eighteen; four depths a step measured no faster), and one pointer a kernel row addresses A
// (gemm_tiled's nine or thirteen row pointers did not fit the general registers: GCC reloaded them from the stack every
// depth). b: B's rows at d * NL; c: [C * k * k][NL], added to. Every element adds the same products in the same order
// (depth by depth, from c's value): the same bits as narrow_gemm. LIP's 6 -> 6 logit convolution, weight gradient
// alone: 0.86 -> 0.72 ms on Zen 4 (in-process A/B); the first layer of every LeNet (1 -> 6, 5x5) takes the 5x5 form.
// G kernel rows a pass over the depths (all k with AVX-512's 32 registers; with AVX2's 16 the 5x5 layer's 25
// accumulators do not fit, so two rows a pass): a row's accumulators stay in registers over the whole depth loop.
#ifdef __AVX2__
// the vector types of window_pass: NL (= 8) lanes, and with AVX-512 L (= 16)
struct Ymm {
  using T = __m256;
  static constexpr int64_t W = 8;
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T fma(float a, T b, T c) { return _mm256_fmadd_ps(_mm256_set1_ps(a), b, c); }
};
#endif
#ifdef __AVX512F__
struct Zmm {
  using T = __m512;
  static constexpr int64_t W = 16;
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T fma(float a, T b, T c) { return _mm512_fmadd_ps(_mm512_set1_ps(a), b, c); }
};
#endif

// One pass over the depths for CH input channels (p, p + plane, ...) and G kernel rows of each, V::W columns: c's row
// (ch, kh, kw) at cc + (ch * KS * KS + kh * KS + kw) * V::W, B's rows at b + d * V::W.
// (Strided layers: c's row of (ch, kh, kw) at cch * ch + cu * kh + ct * kw, window_phased.)
template <class V, int64_t KS, int64_t CH, int64_t G>
void window_pass(const float* p, int64_t plane, int64_t W, Depth D, const float* b, float* cc, int64_t cch = KS * KS,
                 int64_t cu = KS, int64_t ct = 1) {
  constexpr int64_t R = CH * G * KS;
  const auto at = [&](int64_t r) { return (r / (G * KS) * cch + r / KS % G * cu + r % KS * ct) * V::W; };  // acc[r]'s
  typename V::T acc[R];  // one register each (constant indices after unrolling)
#pragma GCC unroll 32
  for (int64_t r = 0; r < R; ++r) acc[r] = V::load(cc + at(r));
  for (int64_t sg = 0; sg < D.segs; ++sg) {
    int64_t d = sg * D.stride;
    const int64_t end = d + D.len;
    for (; d + 1 < end; d += 2) {
      const typename V::T b0 = V::load(b + d * V::W), b1 = V::load(b + (d + 1) * V::W);
#pragma GCC unroll 2
      for (int64_t ch = 0; ch < CH; ++ch)
#pragma GCC unroll 8
        for (int64_t kh = 0; kh < G; ++kh) {
          const float* q = p + ch * plane + kh * W + d;
          typename V::T* a = acc + (ch * G + kh) * KS;
#pragma GCC unroll 8
          for (int64_t kw = 0; kw < KS; ++kw) a[kw] = V::fma(q[kw], b0, a[kw]);
#pragma GCC unroll 8
          for (int64_t kw = 0; kw < KS; ++kw) a[kw] = V::fma(q[kw + 1], b1, a[kw]);
        }
    }
    for (; d < end; ++d) {
      const typename V::T b0 = V::load(b + d * V::W);
#pragma GCC unroll 64
      for (int64_t r = 0; r < R; ++r) acc[r] = V::fma(p[r / (G * KS) * plane + (r / KS % G) * W + r % KS + d], b0, acc[r]);
    }
  }
#pragma GCC unroll 32
  for (int64_t r = 0; r < R; ++r) V::store(cc + at(r), acc[r]);
}

template <int64_t KS>
void window_gemm(int64_t C, int64_t plane, int64_t W, Depth D, const float* a, const float* b, float* c) {
#ifdef __AVX2__
#ifdef __AVX512F__
  constexpr int64_t G = KS;
#else
  constexpr int64_t G = KS <= 3 ? KS : 2;
#endif
  for (int64_t ci = 0; ci < C; ++ci)
    for (int64_t kh = 0; kh < KS; kh += G) {
      const float* p = a + ci * plane + kh * W;
      float* cc = c + (ci * KS + kh) * KS * NL;
      if (KS - kh >= G) {
        window_pass<Ymm, KS, 1, G>(p, plane, W, D, b, cc);
      } else {
        window_pass<Ymm, KS, 1, (KS % G ? KS % G : G)>(p, plane, W, D, b, cc);
      }
    }
#else
  for (int64_t ci = 0; ci < C; ++ci)
    for (int64_t sg = 0; sg < D.segs; ++sg)
      for (int64_t d = sg * D.stride, end = d + D.len; d < end; ++d)
        for (int64_t r = 0; r < KS * KS; ++r) {
          const float v = a[ci * plane + (r / KS) * W + r % KS + d];
          for (int64_t l = 0; l < NL; ++l) c[(ci * KS * KS + r) * NL + l] += v * b[d * NL + l];
        }
#endif
}

#ifdef __AVX2__
// window_gemm for stride-s layers (k <= 3s) on the wide grid's phase planes: the rows (kh, kw) of one phase
// (kh % s, kw % s) read one plane, row (kh + s, kw) one plane row below row (kh, kw) and row (kh, kw + s) one float
// right of it — the window form again, up to 3 x 3 rows a pass, for layers of <= 8 outputs (c: [K][NL]): narrow_gemm's
// 13-16 row pointers spill. LeNet_BN_strided's conv1 (1 -> 6, 5x5 /2) forward + backward 0.94x on Zen 5 (in-process
// A/B); taken for 5x5 stride-2 layers only: with smaller windows the passes hold too few accumulators (a 3 -> 5, 3x3 /2
// layer: 1.04x), and for 9-16 outputs (Zmm, against weight_gemm's 8 x 16 tile) too (LeNet_nopool's conv4 1.07x, conv2
// 1.00x). The same products in the same order from c's value: narrow_gemm's bits.
template <class V>
void window_phased(int64_t C, int64_t k, int64_t s, int64_t plane, int64_t W, Depth D, const float* a, const float* b,
                   float* c) {
  using Pass = void (*)(const float*, int64_t, int64_t, Depth, const float*, float*, int64_t, int64_t, int64_t);
  static constexpr Pass pass[3][3] = {  // [columns a row - 1][rows - 1]
      {window_pass<V, 1, 1, 1>, window_pass<V, 1, 1, 2>, window_pass<V, 1, 1, 3>},
      {window_pass<V, 2, 1, 1>, window_pass<V, 2, 1, 2>, window_pass<V, 2, 1, 3>},
      {window_pass<V, 3, 1, 1>, window_pass<V, 3, 1, 2>, window_pass<V, 3, 1, 3>}};
  for (int64_t ci = 0; ci < C; ++ci)
    for (int64_t ph = 0; ph < std::min(s, k); ++ph)
      for (int64_t pw = 0; pw < std::min(s, k); ++pw) {
        const int64_t rows = (k - ph + s - 1) / s, cols = (k - pw + s - 1) / s;
        pass[cols - 1][rows - 1](a + ((ci * s + ph) * s + pw) * plane, 0, W, D, b, c + (ci * k * k + ph * k + pw) * V::W,
                                 0, s * k, s);
      }
}
#endif

#ifdef __AVX512F__
// window_gemm for 3x3 and 5x5 layers with 9-16 output channels (one 512-bit vector of columns, B's rows at d * L):
// weight_gemm's 8 x 16 tile held eight accumulators and addressed its rows through eight pointers. 3x3: two input
// channels a pass (18 accumulators); 5x5: one channel's kernel rows in a pass of three and one of two (15 and 10;
// all 25 in one pass measured no faster than weight_gemm, 4 + 1 no faster than 3 + 2). Forward + backward on Zen 5
// (in-process A/B): LeNet_nopool's conv3 0.93x, LeNet's conv2 0.89x, LeNet_BN's conv2 0.90x. The same products in
// the same order from c's value: the same bits.
template <int64_t KS>
void window16_gemm(int64_t C, int64_t plane, int64_t W, Depth D, const float* a, const float* b, float* c) {
  int64_t ci = 0;
  if constexpr (KS == 3) {
    for (; ci + 2 <= C; ci += 2) window_pass<Zmm, 3, 2, 3>(a + ci * plane, plane, W, D, b, c + ci * 9 * L);
    for (; ci < C; ++ci) window_pass<Zmm, 3, 1, 3>(a + ci * plane, plane, W, D, b, c + ci * 9 * L);
  } else {
    for (; ci < C; ++ci) {
      window_pass<Zmm, 5, 1, 3>(a + ci * plane, plane, W, D, b, c + ci * 25 * L);
      window_pass<Zmm, 5, 1, 2>(a + ci * plane + 3 * W, plane, W, D, b, c + (ci * 25 + 15) * L);
    }
  }
}
#endif

// gt[(i * ld + j) * Ol + o] = go[(o * ho + i) * wo + j] for o < O (dout of one image, transposed onto the wide grid;
// Ol a multiple of 8, lanes o >= O written as zeros). Eight channels by eight pixels a step through registers: the
// scalar loop's stores, eight floats apart, and its reads, a plane apart, cost the first layer's backward ~20%.
void transpose_dout(const float* __restrict go, int64_t O, int64_t ho, int64_t wo, int64_t ld, int64_t Ol,
                    float* __restrict gt) {
  int64_t j_vec = 0;
#ifdef __AVX2__
  j_vec = wo / 8 * 8;
  for (int64_t o0 = 0; o0 < O; o0 += 8)
    for (int64_t i = 0; i < ho; ++i)
      for (int64_t j = 0; j < j_vec; j += 8) {
        __m256 r[8];
        for (int64_t t = 0; t < 8; ++t)
          r[t] = o0 + t < O ? _mm256_loadu_ps(go + ((o0 + t) * ho + i) * wo + j) : _mm256_setzero_ps();
        const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
        const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        float* dst = gt + (i * ld + j) * Ol + o0;
        _mm256_storeu_ps(dst + 0 * Ol, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_storeu_ps(dst + 1 * Ol, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_storeu_ps(dst + 2 * Ol, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_storeu_ps(dst + 3 * Ol, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_storeu_ps(dst + 4 * Ol, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_storeu_ps(dst + 5 * Ol, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_storeu_ps(dst + 6 * Ol, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_storeu_ps(dst + 7 * Ol, _mm256_permute2f128_ps(u3, u7, 0x31));
      }
#endif
  for (int64_t i = 0; i < ho; ++i)
    for (int64_t j = j_vec; j < wo; ++j)
      for (int64_t o = 0; o < O; ++o) gt[(i * ld + j) * Ol + o] = go[(o * ho + i) * wo + j];
}

// db += each channel's sum of dout over one image's pixels, in pixel order from 0 (serial, so bit-stable). gt: dout^T
// as transpose_dout writes it (pixel (i, j)'s channel vector at (i * ld + j) * Ol, lanes past O zero), so eight
// channels' chains are one vector add a pixel.
void add_bias_grad(const float* gt, int64_t O, int64_t ho, int64_t wo, int64_t ld, int64_t Ol, float* db) {
  for (int64_t o0 = 0; o0 < O; o0 += 8) {
    float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int64_t i = 0; i < ho; ++i)
      for (int64_t j = 0; j < wo; ++j) {
        const float* r = gt + (i * ld + j) * Ol + o0;
#pragma omp simd
        for (int64_t l = 0; l < 8; ++l) s[l] += r[l];
      }
    for (int64_t o = 0; o < std::min<int64_t>(8, O - o0); ++o) db[o0 + o] += s[o];
  }
}

// rows of the forward's tile for O output channels: RB, or 4 where that pads fewer rows (16 channels: 16, not 18)
constexpr int64_t FRB = 4;
int64_t forward_rows(int64_t O) { return round_up(O, FRB) < round_up(O, RB) ? FRB : RB; }

// A packed for the forward's tile of `rows` (forward_rows(O)) rows
std::vector<float> forward_pack(int64_t rows, int64_t M, int64_t D, const float* a, const int64_t* arow) {
  return rows == FRB ? pack_rows<FRB>(M, D, a, arow) : pack_rows<RB>(M, D, a, arow);
}

// c = A @ B with the forward's tile of `rows` rows, A packed by forward_pack
void forward_gemm(int64_t rows, int64_t M, int64_t N, int64_t D, const float* ap, const float* b, const int64_t* brow,
                  float* c, int64_t ldc) {
  if (rows == FRB) return gemm_packed<false, FRB, L>(M, N, D, ap, b, brow, c, ldc);
  gemm_packed<false, RB, L>(M, N, D, ap, b, brow, c, ldc);
}

// c[i][j] = A @ B with A[i][d] = a[arow[d] + i] and B[d][j] = b[d * N + j]: the forward's GEMM with the output's
// pixels as rows and its channels as columns (the wide grid's shifted image rows broadcast, the weights as [K][N]).
// For 16 output channels with AVX2 this is a 6 x 16 tile where the channel-major one is 4 x 16 (16 = 4 x 4, not
// 3 x 6 = 18): twelve accumulators in flight instead of eight. Each element sums the same products in the same
// depth order from +0 (fma(x, w, c) is fma(w, x, c)): the same bits as the channel-major GEMM.
template <int64_t TR, int64_t TL>
void gemm_pixels(int64_t M, int64_t N, int64_t D, const float* a, const int64_t* arow, const float* b, float* c) {
  for (int64_t i0 = 0; i0 < M; i0 += TR)
    for (int64_t j0 = 0; j0 < N; j0 += TL) {
      float acc[TR][TL];
      for (int64_t i = 0; i < TR; ++i)
        for (int64_t j = 0; j < TL; ++j) acc[i][j] = 0.f;
      for (int64_t d = 0; d < D; ++d) {
        const float* ad = a + arow[d] + i0;
        const float* bd = b + d * N + j0;
        for (int64_t i = 0; i < TR; ++i) {
          const float av = ad[i];
#pragma omp simd
          for (int64_t j = 0; j < TL; ++j) acc[i][j] += av * bd[j];
        }
      }
      for (int64_t i = 0; i < TR; ++i)
        for (int64_t j = 0; j < TL; ++j) c[(i0 + i) * N + j0 + j] = acc[i][j];
    }
}

// Where the forward runs pixel-major (gemm_pixels), in tiles of PRB pixels: with AVX2, where the channel-major tile
// would be the narrow one. With AVX-512 never since the channel-major tile is 8 x 32 (gemm_packed): sixteen
// accumulators, as the 16-pixel tile had, fewer loads a step, and the output's rows written without a transpose
// (16-channel layers, forward + backward, 0.93-0.98x on Zen 5, in-process A/B). The 16-pixel tile had beaten the
// 8 x 16 channel-major one (LeNet's conv2 0.88 -> 0.50 ms on Zen 4).
#ifdef __AVX512F__
constexpr int64_t PRB = 16;
bool pixel_major(int64_t) { return false; }
#else
constexpr int64_t PRB = RB;
bool pixel_major(int64_t O) { return forward_rows(O) == FRB && O % L == 0; }
#endif

// c += A @ B: the weight gradient's GEMM (A: the image's shifted rows, one pointer each, so not packed)
void weight_gemm(int64_t M, int64_t N, Depth D, const float* a, const int64_t* arow, const float* b,
                 const int64_t* brow, float* c, int64_t ldc) {
  gemm_tiled<true, RB, L>(M, N, D, a, arow, b, brow, c, ldc);
}

std::vector<int64_t> strided(int64_t n, int64_t ld) {
  std::vector<int64_t> r(n);
  for (int64_t i = 0; i < n; ++i) r[i] = i * ld;
  return r;
}

int num_threads(int requested) { return requested > 0 ? requested : omp_get_max_threads(); }

int64_t chunk_begin(int64_t chunk, int64_t n) { return chunk * n / CHUNKS; }

// No convolution copies im2col. Stride 1: with the input zero-padded to [C][Hp][Wp] and the output computed
// on a "wide" grid of Ho x Wp (the last Wp - Wo columns are discarded), the im2col row of (c, kh, kw) is the
// padded image itself, shifted by c*Hp*Wp + kh*Wp + kw. Stride s: the padded image is split into its s*s
// phases [C][s][s][Hp/s][Wp/s] (phase (a, b) holds pixels (s*i + a, s*j + b)); the im2col row of (c, kh, kw)
// is phase (kh % s, kw % s) of channel c, shifted by (kh / s) rows and (kw / s) columns, on a wide grid of
// Ho x ceil(Wp/s). The GEMMs then add the same products in the same order as over an explicit im2col matrix
// (the extra columns meet zeros of dout), so results are bit-identical to it, without copying k*k/s^2 times
// the image.
struct Wide {
  int64_t s, p, hp, wp, hph, wph, q, qp, size;
  std::vector<int64_t> shift;  // per GEMM depth row (c, kh, kw), padded with a pointer to zeros
  Wide(int64_t c, int64_t h, int64_t w, int64_t k, int64_t stride, int64_t pad, int64_t ho, int64_t rows)
      : s(stride), p(pad) {
    hp = h + 2 * p;
    wp = w + 2 * p;
    hph = (hp + s - 1) / s;
    wph = (wp + s - 1) / s;
    q = ho * wph;
    qp = round_up(q, L);
    const int64_t plane = hph * wph;
    const int64_t zeros = c * s * s * plane + k * wph + qp;  // past every shifted row's last read
    size = zeros + qp;
    shift.assign(rows, zeros);
    for (int64_t ci = 0; ci < c; ++ci)
      for (int64_t kh = 0; kh < k; ++kh)
        for (int64_t kw = 0; kw < k; ++kw)
          shift[(ci * k + kh) * k + kw] = ((ci * s + kh % s) * s + kw % s) * plane + (kh / s) * wph + kw / s;
  }
  // where padded pixel (i, j) of channel ci lives
  int64_t at(int64_t ci, int64_t i, int64_t j) const {
    return ((ci * s + i % s) * s + j % s) * hph * wph + (i / s) * wph + j / s;
  }
  // buf[at(ci, i + p, j + p)] = x[ci][i][j]; the border and the tail stay zero from allocation
  void pad(const float* x, int64_t c, int64_t h, int64_t w, float* buf) const {
    copy_rows<true>(const_cast<float*>(x), c, h, w, buf);
  }
  // x[ci][i][j] = buf[at(ci, i + p, j + p)]
  void unpad(const float* buf, int64_t c, int64_t h, int64_t w, float* x) const {
    copy_rows<false>(x, c, h, w, const_cast<float*>(buf));
  }
  // row by row; within a row, one phase (j + p) % s at a time, so the inner loops are plain strided copies
  template <bool IN>
  void copy_rows(float* x, int64_t c, int64_t h, int64_t w, float* buf) const {
    for (int64_t ci = 0; ci < c; ++ci)
      for (int64_t i = 0; i < h; ++i) {
        float* img = x + (ci * h + i) * w;
        if (s == 1) {
          float* row = buf + (ci * hp + i + p) * wp + p;
          IN ? copy_floats(row, img, w) : copy_floats(img, row, w);
          continue;
        }
        for (int64_t j0 = 0; j0 < std::min(s, w); ++j0) {
          float* row = buf + at(ci, i + p, j0 + p);  // then every s-th pixel, one phase column further
          for (int64_t j = j0, t = 0; j < w; j += s, ++t) IN ? (void)(row[t] = img[j]) : (void)(img[j] = row[t]);
        }
      }
  }
};

// im2col's adjoint on the wide grid, without read-modify-write passes over the padded image:
// pad[pos] = +0 + dcol[k][pos - shift[k]] + ... over the rows k that reach pos, in row order. Adding the rows one
// after the other in place (each shifted one float from the last) stalled on store forwarding; here eight
// positions at a time stay in a register and each block lists the rows that reach it. dcol's rows carry M zeros
// either side, so a row reaching only part of a block adds +0 to the rest: +0 changes no sum (none is -0, each
// starting from +0). Per element the same additions in the same order: the same bits.
struct Col2im {
  static constexpr int64_t B = 8, M = 8;  // positions a block; zeros either side of a dcol row
  int64_t ld, blocks;                      // dcol's row stride (Q + 2M); blocks covering every channel's planes
  std::vector<int64_t> first, off;         // block b's rows: dcol + off[first[b]], ..., dcol + off[first[b + 1] - 1]
  bool four = false;                       // blocks four at a time (stride 1, where a block sums up to k * k rows)
  Col2im() : ld(0), blocks(0) {}
  // The blocks a row reaches are a run (from its shift's block to its last column's): counted per block, then each
  // block's rows listed in row order — work per entry. Testing every (block, nearby row) pair instead was a third of
  // LeNet_nopool's conv backward's own time (its conv2: ~57k tests a call for ~4k entries).
  Col2im(const Wide& w, int64_t c, int64_t K, int64_t Q) : ld(Q + 2 * M), four(w.s == 1) {
    const int64_t span = w.s * w.s * w.hph * w.wph;  // one channel's planes
    blocks = (c * span + B - 1) / B;
    const auto reach = [&](int64_t r) {  // blocks [b0, b1) of row r: b * B < shift + q and b * B + B > shift
      const int64_t sh = w.shift[r];
      return std::pair<int64_t, int64_t>(sh / B, std::min(blocks, (sh + w.q + B - 1) / B));
    };
    first.assign(blocks + 1, 0);
    for (int64_t r = 0; r < K; ++r)
      for (auto [b, end] = reach(r); b < end; ++b) ++first[b + 1];
    for (int64_t b = 0; b < blocks; ++b) first[b + 1] += first[b];
    off.resize(first[blocks]);
    std::vector<int64_t> next(first.begin(), first.end() - 1);
    for (int64_t r = 0; r < K; ++r)
      for (auto [b, end] = reach(r); b < end; ++b) off[next[b]++] = r * ld + M + b * B - w.shift[r];
  }
  // dcol: [rows][ld], row r's column q at r * ld + M + q, margins zero
  void run(const float* __restrict dcol, float* __restrict pad) const {
    int64_t b = 0;
#ifdef __AVX2__
    // four blocks' chains side by side: each block's sum is one chain of dependent adds (up to k * k rows), whose
    // latency, not the loads, set the pace (~17% of LeNet_nopool's conv3 backward on Zen 3); each block still adds
    // its rows in row order from +0, so the same bits. Forward + backward, in-process A/B on Zen 3 (AVX2): LeNet conv2
    // 0.95x, LeNet_BN conv2 0.95x, LeNet_nopool conv3 0.96x, LIP's first logit conv 0.94x. Stride 2 keeps one chain
    // at a time: its blocks sum a phase's few rows (LeNet_nopool's conv2 and conv4 measured 1.00x and 1.02x).
    for (; four && b + 4 <= blocks; b += 4) {
      const int64_t* o[4] = {off.data() + first[b], off.data() + first[b + 1], off.data() + first[b + 2],
                             off.data() + first[b + 3]};
      const int64_t n[4] = {first[b + 1] - first[b], first[b + 2] - first[b + 1], first[b + 3] - first[b + 2],
                            first[b + 4] - first[b + 3]};
      const int64_t common = std::min(std::min(n[0], n[1]), std::min(n[2], n[3]));
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      for (int64_t e = 0; e < common; ++e) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(dcol + o[0][e]));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(dcol + o[1][e]));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(dcol + o[2][e]));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(dcol + o[3][e]));
      }
      for (int64_t e = common; e < n[0]; ++e) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(dcol + o[0][e]));
      for (int64_t e = common; e < n[1]; ++e) a1 = _mm256_add_ps(a1, _mm256_loadu_ps(dcol + o[1][e]));
      for (int64_t e = common; e < n[2]; ++e) a2 = _mm256_add_ps(a2, _mm256_loadu_ps(dcol + o[2][e]));
      for (int64_t e = common; e < n[3]; ++e) a3 = _mm256_add_ps(a3, _mm256_loadu_ps(dcol + o[3][e]));
      _mm256_storeu_ps(pad + b * B, a0);
      _mm256_storeu_ps(pad + (b + 1) * B, a1);
      _mm256_storeu_ps(pad + (b + 2) * B, a2);
      _mm256_storeu_ps(pad + (b + 3) * B, a3);
    }
#endif
    for (; b < blocks; ++b) {
#ifdef __AVX2__
      __m256 acc = _mm256_setzero_ps();  // a register (GCC kept a float[8] on the stack: a store-forward chain)
      for (int64_t e = first[b]; e < first[b + 1]; ++e) acc = _mm256_add_ps(acc, _mm256_loadu_ps(dcol + off[e]));
      _mm256_storeu_ps(pad + b * B, acc);
#else
      float acc[B] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      for (int64_t e = first[b]; e < first[b + 1]; ++e)
        for (int64_t l = 0; l < B; ++l) acc[l] += dcol[off[e] + l];
      std::memcpy(pad + b * B, acc, sizeof acc);
#endif
    }
  }
};

// Layers with tiny outputs (LeNet_BN's 5x5 -> 1x1 convolution) would fill one of L columns per image: there G
// images sit side by side in one explicit im2col matrix [K][G*P] instead. Every element still sums its products
// in the same order (depth order; over images then pixels for the weight gradient; channels for dcol), so the
// results are bit-identical to the per-image path.
struct Batch {
  int64_t g, nb;  // images per group (G * P a multiple of L where possible), columns per group (a multiple of L)
  Batch(int64_t P, int64_t most) {
    int64_t a = P, b = L;
    while (b) std::swap(a %= b, b);  // a = gcd(P, L)
    g = std::max<int64_t>(1, std::min(L / a, most));
    nb = round_up(g * P, L);
  }
};

// columns of the wide grid of one image (Wide::qp): its output pixels plus padding
int64_t wide_columns(const Geom& g) { return round_up(g.ho * ((g.w + 2 * g.p + g.s - 1) / g.s), L); }

// when the wide grid would be more than a third padding (outputs of 5x5 or smaller: the GAP head's 25 of 48 columns,
// backward 2.48 -> 2.11 ms on Zen 4; LeNet's conv2, 100 of 144, was 1.66x slower batched: explicit im2col copies)
bool batched(const Geom& g) { return 3 * g.P() <= 2 * wide_columns(g); }

// the forward pass copies im2col only once per image (no adjoint to add back): batched already when the wide
// grid is more than ~40% padding (the GAP head's 5x5 outputs: 25 of 48 columns)
bool batched_forward(const Geom& g) { return 5 * g.P() <= 3 * wide_columns(g); }

// The batched path's im2col through a table: with the image zero-padded to [C][Hp][Wp], entry q = (oh, ow) of row
// k = (c, kh, kw) is pad[base[k] + qoff[q]], so a row is P plain loads (the per-row loops over output rows and the
// clipping to the image cost more than the copies: LeNet_BN's 3x3 outputs). Entries where the window leaves the
// image read the border's zeros, the values im2col has there. The adjoint (col2im_t) sums, for each element of dx,
// the entries that im2col read from it, in depth order: an explicit col2im's additions in the same order.
struct Gather {
  int64_t p, hp, wp, size;
  std::vector<int64_t> base, qoff;
  explicit Gather(const Geom& g) : p(g.p), hp(g.h + 2 * g.p), wp(g.w + 2 * g.p), size(g.c * hp * wp) {
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t kh = 0; kh < g.k; ++kh)
        for (int64_t kw = 0; kw < g.k; ++kw) base.push_back((c * hp + kh) * wp + kw);
    for (int64_t oh = 0; oh < g.ho; ++oh)
      for (int64_t ow = 0; ow < g.wo; ++ow) qoff.push_back(oh * g.s * wp + ow * g.s);
  }
  // the image padded (into buf, whose border stays zero from allocation), or the image itself without padding
  const float* padded(const Geom& g, const float* x, float* buf) const {
    if (p == 0) return x;
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t i = 0; i < g.h; ++i) copy_floats(buf + (c * hp + i + p) * wp + p, x + (c * g.h + i) * g.w, g.w);
    return buf;
  }
  // col[k][off + q] = pad[base[k] + qoff[q]]
  void im2col(const float* pad, float* col, int64_t ld, int64_t off) const {
    const int64_t P = static_cast<int64_t>(qoff.size());
    for (size_t k = 0; k < base.size(); ++k) {
      float* dst = col + k * ld + off;
      const float* src = pad + base[k];
      for (int64_t q = 0; q < P; ++q) dst[q] = src[qoff[q]];
    }
  }
  // im2col written as gemm_packed's A (pack_rows' layout for depth D, this image's P columns from off): the weight
  // gradient's GEMM then walks one pointer, not RB row pointers (LeNet_BN's conv3: 2.7-3.1 -> 2.5-2.7 M TSC ticks a call)
  void im2col_packed(const float* pad, float* colp, int64_t D, int64_t off) const {
    const int64_t P = static_cast<int64_t>(qoff.size());
    for (size_t k = 0; k < base.size(); ++k) {
      float* dst = colp + (static_cast<int64_t>(k) / RB * D + off) * RB + static_cast<int64_t>(k) % RB;
      const float* src = pad + base[k];
      for (int64_t q = 0; q < P; ++q) dst[q * RB] = src[qoff[q]];
    }
  }
  // The adjoint from dcol's transpose ct[q * ldq + t * C + c] (channels innermost: tap t = kh * k + kw): each element
  // of x sums its taps' entries in tap order from +0, channels a vector at a time — col2im's additions in its order
  // (rows k = (c, t) one after the other into a zeroed padded image, whose border sums are dropped), so the same bits,
  // without its read-modify-write chains through memory (which were ~14% of LeNet_BN_strided's conv3 backward; with
  // the transposes below, conv3 forward + backward 0.93x, the GAP head's conv 0.92x, LeNet_BN's conv3 0.89x on Zen 5).
  // taps(): interior position i of a plane reads ct at off[start[i] .. start[i + 1]), in tap order.
  struct Taps {
    std::vector<int64_t> start, off;
  };
  Taps taps(const Geom& g, int64_t ldq) const {
    Taps tp;
    tp.start.push_back(0);
    for (int64_t y = p; y < p + g.h; ++y)
      for (int64_t x = p; x < p + g.w; ++x) {
        for (int64_t kh = 0; kh < g.k; ++kh)
          for (int64_t kw = 0; kw < g.k; ++kw) {
            const int64_t dy = y - kh, dx = x - kw;
            if (dy < 0 || dx < 0 || dy % g.s || dx % g.s || dy / g.s >= g.ho || dx / g.s >= g.wo) continue;
            tp.off.push_back((dy / g.s * g.wo + dx / g.s) * ldq + (kh * g.k + kw) * g.c);
          }
        tp.start.push_back(static_cast<int64_t>(tp.off.size()));
      }
    return tp;
  }
  template <int64_t CB>
  static void col2im_t(const Geom& g, const Taps& tp, const float* ct, float* x) {
    const int64_t plane = g.h * g.w;
    // acc += the channels [c0, c0 + CB) of taps [from, to) of the list at o, in tap order
    const auto add = [ct](float* acc, const int64_t* o, int64_t from, int64_t to, int64_t c0) {
      for (int64_t e = from; e < to; ++e) {
        const float* src = ct + o[e] + c0;
#pragma omp simd
        for (int64_t l = 0; l < CB; ++l) acc[l] += src[l];
      }
    };
    int64_t i = 0;
    // two positions' chains side by side (a position's sum is one chain of dependent adds over its up to k * k taps:
    // latency-bound alone); each still sums its taps in tap order from +0, so the same bits. Forward + backward,
    // in-process A/B on Zen 3 (AVX2): LeNet_BN's conv3 0.98x, the GAP head's conv 0.98x
    for (; i + 2 <= plane; i += 2)
      for (int64_t c0 = 0; c0 < g.c; c0 += CB) {
        float a0[CB] = {}, a1[CB] = {};
        const int64_t* o0 = tp.off.data() + tp.start[i];
        const int64_t* o1 = tp.off.data() + tp.start[i + 1];
        const int64_t n0 = tp.start[i + 1] - tp.start[i], n1 = tp.start[i + 2] - tp.start[i + 1];
        const int64_t common = std::min(n0, n1);
        for (int64_t e = 0; e < common; ++e) {
          add(a0, o0, e, e + 1, c0);
          add(a1, o1, e, e + 1, c0);
        }
        add(a0, o0, common, n0, c0);
        add(a1, o1, common, n1, c0);
        for (int64_t l = 0; l < std::min(CB, g.c - c0); ++l) {
          x[(c0 + l) * plane + i] = a0[l];
          x[(c0 + l) * plane + i + 1] = a1[l];
        }
      }
    for (; i < plane; ++i)
      for (int64_t c0 = 0; c0 < g.c; c0 += CB) {
        float acc[CB] = {};
        add(acc, tp.off.data(), tp.start[i], tp.start[i + 1], c0);
        for (int64_t l = 0; l < std::min(CB, g.c - c0); ++l) x[(c0 + l) * plane + i] = acc[l];
      }
  }
};

}  // namespace

std::vector<paddle::Tensor> Conv2dForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                          const paddle::Tensor& b, int stride, int padding, bool need_dx,
                                          bool dx_conv, int threads) {
  const Geom g = geom(x.shape(), w.shape(), stride, padding);
  const int64_t K = g.K(), fr = forward_rows(g.o), Op = round_up(g.o, fr);
  auto out = paddle::empty({g.n, g.o, g.ho, g.wo}, paddle::DataType::FLOAT32, x.place());
  const float* xp = x.data<float>();
  const float* bp = b.data<float>();
  float* op = out.data<float>();
  std::vector<float> wpad(Op * K, 0.f);  // weights as [Op][K], zero rows past O
  std::copy(w.data<float>(), w.data<float>() + g.o * K, wpad.begin());
  const auto wrow = strided(Op, K);
  const std::vector<float> wpk = forward_pack(fr, Op, K, wpad.data(), wrow.data());
  if (batched_forward(g)) {
    const Batch bt(g.P(), g.n);
    const Gather ga(g);
    const auto crow = strided(K, bt.nb);
    const int64_t groups = (g.n + bt.g - 1) / bt.g, P = g.P();
#pragma omp parallel num_threads(num_threads(threads))
    {
      // col's columns past a short last group keep an earlier group's values: their results are not read
      std::vector<float> col(K * bt.nb, 0.f), res(Op * bt.nb), xpad(g.p ? ga.size : 0, 0.f);
#pragma omp for schedule(static)
      for (int64_t gi = 0; gi < groups; ++gi) {
        const int64_t n0 = gi * bt.g, m = std::min(bt.g, g.n - n0);
        for (int64_t j = 0; j < m; ++j)
          ga.im2col(ga.padded(g, xp + (n0 + j) * g.in_size(), xpad.data()), col.data(), bt.nb, j * P);
        forward_gemm(fr, Op, bt.nb, K, wpk.data(), col.data(), crow.data(), res.data(), bt.nb);
        for (int64_t j = 0; j < m; ++j)
          for (int64_t o = 0; o < g.o; ++o)
            for (int64_t q = 0; q < P; ++q) op[((n0 + j) * g.o + o) * P + q] = res[o * bt.nb + j * P + q] + bp[o];
      }
    }
    return {out};
  }
  const Wide wide(g.c, g.h, g.w, g.k, g.s, g.p, g.ho, K);
  const int64_t N = wide.qp, ld = wide.wph;
  if (pixel_major(g.o)) {
    const int64_t M = round_up(wide.q, PRB);  // rows: the wide grid's pixels; its buffer reads up to PRB past qp
    std::vector<float> wt(K * g.o);          // weights as [K][O]
    for (int64_t o = 0; o < g.o; ++o)
      for (int64_t k = 0; k < K; ++k) wt[k * g.o + o] = wpad[o * K + k];
#pragma omp parallel num_threads(num_threads(threads))
    {
      std::vector<float> buf(wide.size + PRB, 0.f), res(M * g.o);
#pragma omp for schedule(static)
      for (int64_t n = 0; n < g.n; ++n) {
        wide.pad(xp + n * g.in_size(), g.c, g.h, g.w, buf.data());
        gemm_pixels<PRB, L>(M, g.o, K, buf.data(), wide.shift.data(), wt.data(), res.data());
        float* dst = op + n * g.o * g.P();
        for (int64_t i = 0; i < g.ho; ++i)
          for (int64_t j = 0; j < g.wo; ++j) {
            const float* r = res.data() + (i * ld + j) * g.o;
            for (int64_t o = 0; o < g.o; ++o) dst[(o * g.ho + i) * g.wo + j] = r[o] + bp[o];
          }
      }
    }
    return {out};
  }
#pragma omp parallel num_threads(num_threads(threads))
  {
    std::vector<float> buf(wide.size, 0.f), res(Op * N);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; ++n) {
      wide.pad(xp + n * g.in_size(), g.c, g.h, g.w, buf.data());
      forward_gemm(fr, Op, N, K, wpk.data(), buf.data(), wide.shift.data(), res.data(), N);
      float* dst = op + n * g.o * g.P();
      for (int64_t o = 0; o < g.o; ++o)
        for (int64_t i = 0; i < g.ho; ++i)
          for (int64_t j = 0; j < g.wo; ++j) dst[(o * g.ho + i) * g.wo + j] = res[o * N + i * ld + j] + bp[o];
    }
  }
  return {out};
}

// dx_conv: the input gradient as a convolution of dout with the flipped, transposed kernel (stride 1, padding
// k - 1 - p) on the forward pass's code, instead of dcol = W^T dout and im2col's adjoint. The same function with
// other rounding (each element sums its O*k*k products in another order), so it is a layer's choice, not the
// kernel's: LIP's logit convolutions (6 -> 6 and 16 -> 16 channels, 3x3) take it, where dcol's GEMM has depth O = 6
// or 16 and ran at ~half the forward pass's rate (logit1 dx ~1.0 ms against its forward's 0.47 on Zen 4).
paddle::Tensor conv_input_grad(const Geom& g, const paddle::Tensor& w, const paddle::Tensor& dout, int threads) {
  const int64_t kk = g.k * g.k;
  auto wf = paddle::empty({g.c, g.o, g.k, g.k}, paddle::DataType::FLOAT32, w.place());
  const float* wp = w.data<float>();
  float* fp = wf.data<float>();
  for (int64_t o = 0; o < g.o; ++o)
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t t = 0; t < kk; ++t) fp[(c * g.o + o) * kk + t] = wp[(o * g.c + c) * kk + (kk - 1 - t)];
  const auto zero = paddle::full({g.c}, 0.f, paddle::DataType::FLOAT32, w.place());
  return Conv2dForward(dout, wf, zero, 1, static_cast<int>(g.k - 1 - g.p), false, false, threads)[0];
}

std::vector<paddle::Tensor> Conv2dBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                           const paddle::Tensor& dout, int stride, int padding, bool need_dx,
                                           bool dx_conv, int threads) {
  const Geom g = geom(x.shape(), w.shape(), stride, padding);
  const bool by_conv = need_dx && dx_conv && g.s == 1 && g.p <= g.k - 1;
  if (by_conv) need_dx = false;  // the code below then computes dW and db only; dx comes from conv_input_grad
  // few output channels: the weight-gradient GEMM's columns are the channels; a narrow tile wastes fewer
  const bool narrow = g.o <= NL;
  const int64_t K = g.K(), P = g.P(), nr = narrow_rows(K), Kp = round_up(K, narrow ? nr : RB);
  const int64_t Ol = narrow ? NL : round_up(g.o, L), Kd = round_up(K, RB);  // Kd: rows of dcol = W^T @ dout
  auto dx = paddle::empty({need_dx ? g.n : 0, g.c, g.h, g.w}, paddle::DataType::FLOAT32, x.place());
  auto dw = paddle::empty({g.o, g.c, g.k, g.k}, paddle::DataType::FLOAT32, x.place());
  auto db = paddle::empty({g.o}, paddle::DataType::FLOAT32, x.place());
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  const float* gp = dout.data<float>();
  float* dxp = need_dx ? dx.data<float>() : nullptr;
  // dW^T = im2col(x) @ dout^T over the wide grid (dout is zero on the extra columns)
  const Wide wide(g.c, g.h, g.w, g.k, g.s, g.p, g.ho, Kp);
  const int64_t Q = wide.qp, ld = wide.wph;
  const auto gtrow = strided(Q, Ol);
  // per chunk: dW^T [Kp][Ol] and db [O]
  std::vector<float> dwt(CHUNKS * Kp * Ol, 0.f), dbc(CHUNKS * g.o, 0.f);
  if (batched(g)) {
    const Batch bt(g.P(), (g.n + CHUNKS - 1) / CHUNKS);  // groups stay inside a chunk (the unit of reduction)
    const Gather ga(g);
    const auto crow = strided(Kp, bt.nb), gtb_row = strided(bt.nb, Ol);
    // dx: dcol^T = dout^T @ W' ([nb][Kq], W' the weights as [O][Kq] with column t * C + c = w[o][c][t]), then the
    // adjoint from it (Gather::col2im_t). Each dcol element sums the same O products in the same order from +0 as
    // dcol = W^T @ dout did (fma(a, b, c) = fma(b, a, c)): the same bits. A of its GEMM (dout^T, packed as pack_rows
    // would) is written straight from dout.
    const int64_t Kq = round_up(K, L), kk = g.k * g.k;
    std::vector<float> wk(need_dx ? g.o * Kq : 0, 0.f);
    for (int64_t o = 0; o < (need_dx ? g.o : 0); ++o)
      for (int64_t c = 0; c < g.c; ++c)
        for (int64_t t = 0; t < kk; ++t) wk[o * Kq + t * g.c + c] = wp[(o * g.c + c) * kk + t];
    const auto wkrow = strided(g.o, Kq);
    const Gather::Taps taps = need_dx ? ga.taps(g, Kq) : Gather::Taps{};
#pragma omp parallel num_threads(num_threads(threads))
    {
      // gt's lanes past O and gpk's columns past g * P stay zero from here; a short last group's stale columns
      // past m * P are never read back (the GEMMs' depth is m * P; the adjoint reads the first m images)
      // (gpk and dct with whole RB-row tiles: RB = 6 with AVX2 need not divide nb)
      const int64_t nbr = round_up(bt.nb, RB);
      std::vector<float> col(Kp * bt.nb, 0.f), gt(bt.nb * Ol, 0.f), gpk(need_dx ? g.o * nbr : 0, 0.f);
      std::vector<float> dct(need_dx ? nbr * Kq + L : 0), xpad(g.p ? ga.size : 0, 0.f);
#pragma omp for schedule(static)
      for (int64_t chunk = 0; chunk < CHUNKS; ++chunk) {
        float* my_dwt = dwt.data() + chunk * Kp * Ol;
        float* my_db = dbc.data() + chunk * g.o;
        const int64_t end = chunk_begin(chunk + 1, g.n);
        for (int64_t n0 = chunk_begin(chunk, g.n); n0 < end; n0 += bt.g) {
          const int64_t m = std::min(bt.g, end - n0);  // col's columns past m * P are not read
          for (int64_t j = 0; j < m; ++j) {
            const float* go = gp + (n0 + j) * g.o * P;
            float* gtj = gt.data() + j * P * Ol;
            transpose_dout(go, g.o, 1, P, P, Ol, gtj);
            add_bias_grad(gtj, g.o, 1, P, P, Ol, my_db);  // per image, as the per-image path
            // gpk: each channel's pixels in runs of up to RB columns (a tile's)
            for (int64_t o = 0; o < (need_dx ? g.o : 0); ++o)
              for (int64_t q = 0, n; q < P; q += n) {
                const int64_t cl = j * P + q;
                n = std::min(RB - cl % RB, P - q);
                copy_floats(gpk.data() + (cl / RB * g.o + o) * RB + cl % RB, go + o * P + q, n);
              }
            const float* padded = ga.padded(g, xp + (n0 + j) * g.in_size(), xpad.data());
            if (narrow) {
              ga.im2col(padded, col.data(), bt.nb, j * P);
            } else {
              ga.im2col_packed(padded, col.data(), m * P, j * P);  // rows past K: never read back (dW has K rows)
            }
          }
          if (narrow) {
            narrow_gemm(nr, Kp, Ol, m * P, col.data(), crow.data(), gt.data(), gtb_row.data(), my_dwt, Ol);
          } else {  // the same products in the same order as weight_gemm over the unpacked rows: the same bits
            gemm_packed<true, RB, L>(Kp, Ol, m * P, col.data(), gt.data(), gtb_row.data(), my_dwt, Ol);
          }
          if (!need_dx) continue;
          gemm_packed<false, RB, L>(round_up(m * P, RB), Kq, g.o, gpk.data(), wk.data(), wkrow.data(), dct.data(), Kq);
          for (int64_t j = 0; j < m; ++j)
            (g.c % L == 0 ? Gather::col2im_t<L> : Gather::col2im_t<8>)(g, taps, dct.data() + j * P * Kq,
                                                                     dxp + (n0 + j) * g.in_size());
        }
      }
    }
  } else {
  std::vector<float> wt(need_dx ? Kd * g.o : 0, 0.f);  // weights transposed, [Kd][O], for dcol = W^T @ dout
  for (int64_t o = 0; o < (need_dx ? g.o : 0); ++o)
    for (int64_t k = 0; k < K; ++k) wt[k * g.o + o] = wp[o * K + k];
  const auto wtrow = strided(Kd, g.o), grow = strided(g.o, Q);
  const std::vector<float> wtp = pack_rows<RB>(need_dx ? Kd : 0, g.o, wt.data(), wtrow.data());  // A of the dcol GEMMs
  const Col2im c2i = need_dx ? Col2im(wide, g.c, K, Q) : Col2im{};
  const Depth pixels(g.ho, g.wo, ld);  // the wide grid's real pixels: its extra columns are zeros of dout
  const bool window = narrow && (g.k == 3 || g.k == 5) && g.s == 1;  // window_gemm: narrow_gemm's bits, faster
  const bool window16 = !narrow && Ol == L && (g.k == 3 || g.k == 5) && g.s == 1;  // weight_gemm's bits
  const bool phased = narrow && g.s == 2 && g.k == 5;  // window_phased: narrow_gemm's bits
#pragma omp parallel num_threads(num_threads(threads))
  {
    std::vector<float> buf(wide.size, 0.f), gt(Q * Ol, 0.f);
    std::vector<float> gbuf(need_dx ? g.o * Q : 0, 0.f), dcol(need_dx ? Kd * c2i.ld : 0, 0.f);
    std::vector<float> dpad(need_dx ? wide.size : 0);
#pragma omp for schedule(static)
    for (int64_t chunk = 0; chunk < CHUNKS; ++chunk) {
      float* my_dwt = dwt.data() + chunk * Kp * Ol;
      float* my_db = dbc.data() + chunk * g.o;
      for (int64_t n = chunk_begin(chunk, g.n); n < chunk_begin(chunk + 1, g.n); ++n) {
        const float* go = gp + n * g.o * P;
        transpose_dout(go, g.o, g.ho, g.wo, ld, Ol, gt.data());  // dout^T on the wide grid
        add_bias_grad(gt.data(), g.o, g.ho, g.wo, ld, Ol, my_db);
        wide.pad(xp + n * g.in_size(), g.c, g.h, g.w, buf.data());
        if (window) {
          (g.k == 3 ? window_gemm<3> : window_gemm<5>)(g.c, wide.hph * wide.wph, wide.wph, pixels, buf.data(), gt.data(),
                                                      my_dwt);
#ifdef __AVX2__
        } else if (phased) {
          window_phased<Ymm>(g.c, g.k, g.s, wide.hph * wide.wph, wide.wph, pixels, buf.data(), gt.data(), my_dwt);
#endif
        } else if (narrow) {
          narrow_gemm(nr, Kp, Ol, pixels, buf.data(), wide.shift.data(), gt.data(), gtrow.data(), my_dwt, Ol);
#ifdef __AVX512F__
        } else if (window16) {
          (g.k == 3 ? window16_gemm<3> : window16_gemm<5>)(g.c, wide.hph * wide.wph, wide.wph, pixels, buf.data(),
                                                          gt.data(), my_dwt);
#endif
        } else {
          weight_gemm(Kp, Ol, pixels, buf.data(), wide.shift.data(), gt.data(), gtrow.data(), my_dwt, Ol);
        }
        if (!need_dx) continue;
        // dx: dcol = W^T @ dout on the wide grid, then im2col's adjoint: every dcol row is added, shifted, into
        // the padded (phase-split) image, in row order; dout is zero on the extra columns
        for (int64_t o = 0; o < g.o; ++o)
          for (int64_t i = 0; i < g.ho; ++i)
            copy_floats(gbuf.data() + o * Q + i * ld, go + (o * g.ho + i) * g.wo, g.wo);
        gemm_packed<false, RB, L>(Kd, Q, g.o, wtp.data(), gbuf.data(), grow.data(), dcol.data() + Col2im::M, c2i.ld);
        c2i.run(dcol.data(), dpad.data());
        wide.unpad(dpad.data(), g.c, g.h, g.w, dxp + n * g.in_size());
      }
    }
  }
  }
  float* dwp = dw.data<float>();
  float* dbp = db.data<float>();
  // each element sums its chunks in chunk order from 0, as ever; a row of Ol channels at a time (a vector)
  std::vector<float> row(Ol);
  for (int64_t k = 0; k < K; ++k) {
    std::fill(row.begin(), row.end(), 0.f);
    for (int64_t chunk = 0; chunk < CHUNKS; ++chunk) {
      const float* src = dwt.data() + (chunk * Kp + k) * Ol;
#pragma omp simd
      for (int64_t o = 0; o < Ol; ++o) row[o] += src[o];
    }
    for (int64_t o = 0; o < g.o; ++o) dwp[o * K + k] = row[o];
  }
  for (int64_t o = 0; o < g.o; ++o) {
    float s = 0.f;
    for (int64_t chunk = 0; chunk < CHUNKS; ++chunk) s += dbc[chunk * g.o + o];
    dbp[o] = s;
  }
  if (by_conv) dx = conv_input_grad(g, w, dout, threads);
  return {dx, dw, db};
}

std::vector<std::vector<int64_t>> Conv2dInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                                                   const std::vector<int64_t>& b, int stride, int padding,
                                                   bool need_dx, bool dx_conv, int threads) {
  const Geom g = geom(x, w, stride, padding);
  return {{g.n, g.o, g.ho, g.wo}};
}

std::vector<paddle::DataType> Conv2dInferDtype(const paddle::DataType& x, const paddle::DataType& w,
                                               const paddle::DataType& b) {
  return {x};
}

PD_BUILD_OP(lenet_conv2d)
    .Inputs({"X", "W", "B"})
    .Outputs({"Out"})
    .Attrs({"stride: int", "padding: int", "need_dx: bool", "dx_conv: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(Conv2dForward))
    .SetInferShapeFn(PD_INFER_SHAPE(Conv2dInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(Conv2dInferDtype));

PD_BUILD_GRAD_OP(lenet_conv2d)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("B")})
    .Attrs({"stride: int", "padding: int", "need_dx: bool", "dx_conv: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(Conv2dBackward));

// 2x2 max pooling, stride 2 (even H and W). Ties go to the first element in row-major order, as
// in Paddle's kernels, so the gradient is routed to the same input; a NaN never wins a comparison (x > m).
#ifdef __AVX2__
// the first n of 8 lanes set (n in 0..8)
static inline __m256i first_lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
// windows 0..n-1 (n <= 8) of one window row, the same comparisons as the scalar loop below, eight windows in the
// lanes of one vector: the scalar loop's data-dependent branches mispredict on real activations (~3x slower)
static inline void max2x2_row8(const float* r0, const float* r1, float* dst, uint8_t* arg, int64_t n) {
  const __m256i lo = first_lanes(std::min<int64_t>(2 * n, 8)), hi = first_lanes(std::max<int64_t>(2 * n - 8, 0));
  const __m256 a0 = _mm256_maskload_ps(r0, lo), a1 = _mm256_maskload_ps(r0 + 8, hi);
  const __m256 b0 = _mm256_maskload_ps(r1, lo), b1 = _mm256_maskload_ps(r1 + 8, hi);
  // even and odd columns of both rows, in one lane order (windows 0 1 4 5 | 2 3 6 7), undone before the stores
  __m256 m = _mm256_shuffle_ps(a0, a1, 0x88);
  const __m256 v1 = _mm256_shuffle_ps(a0, a1, 0xDD), v2 = _mm256_shuffle_ps(b0, b1, 0x88),
               v3 = _mm256_shuffle_ps(b0, b1, 0xDD);
  __m256 k = _mm256_setzero_ps();
  __m256 c = _mm256_cmp_ps(v1, m, _CMP_GT_OQ);  // ordered: false for NaN, as the scalar x > m
  m = _mm256_blendv_ps(m, v1, c), k = _mm256_blendv_ps(k, _mm256_set1_ps(1.f), c);
  c = _mm256_cmp_ps(v2, m, _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, v2, c), k = _mm256_blendv_ps(k, _mm256_set1_ps(2.f), c);
  c = _mm256_cmp_ps(v3, m, _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, v3, c), k = _mm256_blendv_ps(k, _mm256_set1_ps(3.f), c);
  m = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), 0xD8));
  k = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(k), 0xD8));
  alignas(32) float mb[8];
  _mm256_store_ps(mb, m);  // a masked store is microcoded (slow) on AMD: stage and copy
  std::memcpy(dst, mb, sizeof(float) * n);
  const __m256i ki = _mm256_cvttps_epi32(k);
  const __m128i k16 = _mm_packus_epi32(_mm256_castsi256_si128(ki), _mm256_extracti128_si256(ki, 1));
  alignas(16) uint8_t kb[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(kb), _mm_packus_epi16(k16, k16));
  std::memcpy(arg, kb, n);
}
#endif

std::vector<paddle::Tensor> MaxPoolForward(const paddle::Tensor& x, int threads) {
  auto s = x.shape();
  const int64_t planes = s[0] * s[1], h = s[2], w = s[3], ho = h / 2, wo = w / 2;
  auto out = paddle::empty({s[0], s[1], ho, wo}, paddle::DataType::FLOAT32, x.place());
  auto arg = paddle::empty({s[0], s[1], ho, wo}, paddle::DataType::UINT8, x.place());
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  uint8_t* ap = arg.data<uint8_t>();
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t i = 0; i < ho; ++i) {
      const float* r0 = xp + (pl * h + 2 * i) * w;
      const float* r1 = r0 + w;
      float* dst = op + (pl * ho + i) * wo;
      uint8_t* a = ap + (pl * ho + i) * wo;
#ifdef __AVX2__
      for (int64_t j = 0; j < wo; j += 8) max2x2_row8(r0 + 2 * j, r1 + 2 * j, dst + j, a + j, std::min<int64_t>(8, wo - j));
#else
      for (int64_t j = 0; j < wo; ++j) {
        float m = r0[2 * j];
        uint8_t k = 0;
        if (r0[2 * j + 1] > m) m = r0[2 * j + 1], k = 1;
        if (r1[2 * j] > m) m = r1[2 * j], k = 2;
        if (r1[2 * j + 1] > m) m = r1[2 * j + 1], k = 3;
        dst[j] = m;
        a[j] = k;
      }
#endif
    }
  return {out, arg};
}

std::vector<paddle::Tensor> MaxPoolBackward(const paddle::Tensor& x, const paddle::Tensor& arg,
                                            const paddle::Tensor& dout, int threads) {
  auto s = x.shape();
  const int64_t planes = s[0] * s[1], h = s[2], w = s[3], ho = h / 2, wo = w / 2;
  auto dx = paddle::empty(s, paddle::DataType::FLOAT32, x.place());
  const uint8_t* ap = arg.data<uint8_t>();
  const float* gp = dout.data<float>();
  float* dp = dx.data<float>();
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t i = 0; i < ho; ++i) {
      float* r[2] = {dp + (pl * h + 2 * i) * w, dp + (pl * h + 2 * i + 1) * w};
      const float* g = gp + (pl * ho + i) * wo;
      const uint8_t* a = ap + (pl * ho + i) * wo;
      for (int64_t j = 0; j < wo; ++j) {
        r[0][2 * j] = r[0][2 * j + 1] = r[1][2 * j] = r[1][2 * j + 1] = 0.f;
        r[a[j] >> 1][2 * j + (a[j] & 1)] = g[j];
      }
      for (int64_t j = 2 * wo; j < w; ++j) r[0][j] = r[1][j] = 0.f;
    }
  return {dx};
}

std::vector<std::vector<int64_t>> MaxPoolInferShape(const std::vector<int64_t>& x, int threads) {
  return {{x[0], x[1], x[2] / 2, x[3] / 2}, {x[0], x[1], x[2] / 2, x[3] / 2}};
}

std::vector<paddle::DataType> MaxPoolInferDtype(const paddle::DataType& x) { return {x, paddle::DataType::UINT8}; }

PD_BUILD_OP(lenet_max_pool2x2)
    .Inputs({"X"})
    .Outputs({"Out", "Arg"})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(MaxPoolForward))
    .SetInferShapeFn(PD_INFER_SHAPE(MaxPoolInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(MaxPoolInferDtype));

PD_BUILD_GRAD_OP(lenet_max_pool2x2)
    .Inputs({"X", "Arg", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(MaxPoolBackward));

// 2x2 average pooling, stride 2 (odd last rows and columns in no window): Paddle's CPU kernel's arithmetic exactly,
// without its generic window loop (0.5 ms a call for LeNet's first layer) — the sum from +0 in row-major window
// order, divided by 4; the gradient 0 + 0.25 * dout at each of the window's pixels, 0 elsewhere.
std::vector<paddle::Tensor> AvgPoolForward(const paddle::Tensor& x, int threads) {
  auto s = x.shape();
  const int64_t planes = s[0] * s[1], h = s[2], w = s[3], ho = h / 2, wo = w / 2;
  auto out = paddle::empty({s[0], s[1], ho, wo}, paddle::DataType::FLOAT32, x.place());
  const float* xp = x.data<float>();
  float* op = out.data<float>();
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t i = 0; i < ho; ++i) {
      const float* __restrict r0 = xp + (pl * h + 2 * i) * w;
      const float* __restrict r1 = r0 + w;
      float* __restrict dst = op + (pl * ho + i) * wo;
#pragma omp simd
      for (int64_t j = 0; j < wo; ++j) {
        float v = 0.f;
        v += r0[2 * j];
        v += r0[2 * j + 1];
        v += r1[2 * j];
        v += r1[2 * j + 1];
        dst[j] = v / 4.f;
      }
    }
  return {out};
}

std::vector<paddle::Tensor> AvgPoolBackward(const paddle::Tensor& x, const paddle::Tensor& dout, int threads) {
  auto s = x.shape();
  const int64_t planes = s[0] * s[1], h = s[2], w = s[3], ho = h / 2, wo = w / 2;
  auto dx = paddle::empty(s, paddle::DataType::FLOAT32, x.place());
  const float* gp = dout.data<float>();
  float* dp = dx.data<float>();
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    for (int64_t i = 0; i < ho; ++i) {
      float* __restrict r0 = dp + (pl * h + 2 * i) * w;
      float* __restrict r1 = r0 + w;
      const float* __restrict g = gp + (pl * ho + i) * wo;
#pragma omp simd
      for (int64_t j = 0; j < wo; ++j) {
        const float d = 0.f + 0.25f * g[j];  // Paddle adds scale * dout into zeros: -0 becomes +0
        r0[2 * j] = d, r0[2 * j + 1] = d, r1[2 * j] = d, r1[2 * j + 1] = d;
      }
      for (int64_t j = 2 * wo; j < w; ++j) r0[j] = r1[j] = 0.f;
    }
    for (int64_t i = 2 * ho; i < h; ++i) std::fill(dp + (pl * h + i) * w, dp + (pl * h + i + 1) * w, 0.f);
  }
  return {dx};
}

std::vector<std::vector<int64_t>> AvgPoolInferShape(const std::vector<int64_t>& x, int threads) {
  return {{x[0], x[1], x[2] / 2, x[3] / 2}};
}

std::vector<paddle::DataType> AvgPoolInferDtype(const paddle::DataType& x) { return {x}; }

PD_BUILD_OP(lenet_avg_pool2x2)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(AvgPoolForward))
    .SetInferShapeFn(PD_INFER_SHAPE(AvgPoolInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(AvgPoolInferDtype));

PD_BUILD_GRAD_OP(lenet_avg_pool2x2)
    .Inputs({"X", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(AvgPoolBackward));

// Global average pooling (AdaptiveAvgPool2D(1): LeNet_BN's head, the GAP head): Paddle's CPU pool2d arithmetic
// exactly — each plane summed from +0 in row-major order, divided by its size; the gradient 0 + scale * dout at every
// pixel with scale = float(1.0 / size), as Paddle's pool2d_grad computes it. Every number is Paddle's; of a NaN, its
// sign bit may differ (which NaN an addition of two returns depends on the compiled operand order). Paddle's op cost 0.4 ms a call each way
// on [64, 120, 5, 5] (one serial chain of additions per plane); here eight planes' chains run side by side.
std::vector<paddle::Tensor> GlobalAvgForward(const paddle::Tensor& x, int threads) {
  auto s = x.shape();
  const int64_t planes = s[0] * s[1], size = s[2] * s[3];
  auto out = paddle::empty({s[0], s[1], 1, 1}, paddle::DataType::FLOAT32, x.place());
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  const float div = static_cast<float>(size);
  const int64_t blocks = (planes + 7) / 8;
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t p0 = b * 8, m = std::min<int64_t>(8, planes - p0);
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#ifdef __AVX2__
    if (size <= (int64_t{1} << 27)) {
      // eight planes' sums side by side, each still adding its pixels one after the other from +0
      const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const __m256i idx = _mm256_mullo_epi32(lanes, _mm256_set1_epi32(static_cast<int>(size)));
      const __m256 live = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(m)), lanes));
      __m256 v = _mm256_setzero_ps();
      for (int64_t i = 0; i < size; ++i)
        v = _mm256_add_ps(v, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), xp + p0 * size + i, idx, live, 4));
      _mm256_storeu_ps(acc, v);
    } else
#endif
    {
      for (int64_t l = 0; l < m; ++l)
        for (int64_t i = 0; i < size; ++i) acc[l] += xp[(p0 + l) * size + i];
    }
    for (int64_t l = 0; l < m; ++l) op[p0 + l] = acc[l] / div;
  }
  return {out};
}

std::vector<paddle::Tensor> GlobalAvgBackward(const paddle::Tensor& x, const paddle::Tensor& dout, int threads) {
  auto s = x.shape();
  const int64_t planes = s[0] * s[1], size = s[2] * s[3];
  auto dx = paddle::empty(s, paddle::DataType::FLOAT32, x.place());
  const float* gp = dout.data<float>();
  float* dp = dx.data<float>();
  const float scale = static_cast<float>(1.0 / static_cast<double>(size));
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float d = 0.f + scale * gp[pl];  // Paddle adds scale * dout into zeros: -0 becomes +0
    std::fill(dp + pl * size, dp + (pl + 1) * size, d);
  }
  return {dx};
}

std::vector<std::vector<int64_t>> GlobalAvgInferShape(const std::vector<int64_t>& x, int threads) {
  return {{x[0], x[1], 1, 1}};
}

PD_BUILD_OP(lenet_global_avg_pool)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(GlobalAvgForward))
    .SetInferShapeFn(PD_INFER_SHAPE(GlobalAvgInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(AvgPoolInferDtype));

PD_BUILD_GRAD_OP(lenet_global_avg_pool)
    .Inputs({"X", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"threads: int"})
    .SetKernelFn(PD_KERNEL(GlobalAvgBackward));

// Softmax-weighted window pooling: out[o] = sum_i p_i x_i over the k x k window of output o (stride s,
// padding p; padded positions are not part of any window), with p = softmax(L) over that window.
// One kernel for every operator that is "a weighted mean with positive weights e^L": SoftPool (L = x),
// LIP (L = its logit), a weighted mean with weights w (L = log w). Stable: L is shifted by the window's
// maximum. Backward: dX_i = g p_i and dL_i = g p_i (x_i - out). Windows may overlap (LIP: 3x3, stride 2),
// so each thread owns whole planes: gradients accumulate without races, in a fixed order.
namespace {

struct Win {
  int64_t planes, h, w, k, s, p, ho, wo;
  bool lip() const { return k == 3 && s == 2 && p == 1; }  // LIP's windows: the separable path (struct Lip)
};

Win win(const std::vector<int64_t>& xs, int k, int s, int p) {
  return {xs[0] * xs[1], xs[2], xs[3], k, s, p, (xs[2] + 2 * p - k) / s + 1, (xs[3] + 2 * p - k) / s + 1};
}

// calls f(index into the plane) for every valid input position of window (i, j)
template <class F>
inline void for_window(const Win& g, int64_t i, int64_t j, F f) {
  const int64_t r0 = std::max<int64_t>(i * g.s - g.p, 0), r1 = std::min<int64_t>(i * g.s - g.p + g.k, g.h);
  const int64_t c0 = std::max<int64_t>(j * g.s - g.p, 0), c1 = std::min<int64_t>(j * g.s - g.p + g.k, g.w);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c) f(r * g.w + c);
}

}  // namespace

// e^(L - M) for every pixel of a plane, M the plane's maximum: one exp per pixel instead of one per window
// element (LIP's 3x3 windows overlap 2.25x, and the backward pass needs the same weights). A window whose
// weights all but underflow (its logits ~46 below the plane's maximum) is recomputed with its own maximum.
// The plane's maximum logit as std::max(m, v) over the plane finds it (a NaN never replaces m), sixteen lanes at a
// time (the serial chain of maxima was most of this function's time). The value is the serial one's; only the sign
// of a zero maximum may differ, and that moves no weight: v - m differs between m = +0 and m = -0 only for v = -0,
// and fexp(+0) and fexp(-0) both reduce to r = +0, the same bits (tests/test_kernel_bits.py).
float plane_max(const float* ls, int64_t size) {
  float m = -INFINITY;
  const int64_t body = size / 16 * 16;
#ifdef __AVX2__
  if (body > 0) {
    __m256 a = _mm256_set1_ps(-INFINITY), b = a;
    for (int64_t q = 0; q < body; q += 16) {
      const __m256 u = _mm256_loadu_ps(ls + q), v = _mm256_loadu_ps(ls + q + 8);
      a = _mm256_blendv_ps(a, u, _mm256_cmp_ps(a, u, _CMP_LT_OQ));  // (a < u) ? u : a, false for NaN
      b = _mm256_blendv_ps(b, v, _mm256_cmp_ps(b, v, _CMP_LT_OQ));
    }
    alignas(32) float t[16];
    _mm256_store_ps(t, a);
    _mm256_store_ps(t + 8, b);
    for (const float v : t) m = std::max(m, v);
  }
#else
  for (int64_t q = 0; q < body; ++q) m = std::max(m, ls[q]);
#endif
  for (int64_t q = body; q < size; ++q) m = std::max(m, ls[q]);
  return m;
}

float plane_weights(const float* ls, int64_t size, float* e) {
  const float m = plane_max(ls, size);
  for (int64_t q = 0; q < size; ++q) e[q] = fexp(ls[q] - m);
  return m;
}

constexpr float UNDERFLOW = 1e-20f;

// z = sum of the window's weights e[q]; if that underflows, *own is set and z sums e^(L - *m) with *m the
// window's own maximum instead
// the sum of e^(L - *m) over window (i, j), *m set to the window's own maximum logit
inline float own_sum(const Win& g, int64_t i, int64_t j, const float* ls, float* m) {
  *m = -INFINITY;
  for_window(g, i, j, [&](int64_t q) { *m = std::max(*m, ls[q]); });
  float z = 0.f;
  for_window(g, i, j, [&](int64_t q) { z += std::exp(ls[q] - *m); });
  return z;
}

inline float window_sum(const Win& g, int64_t i, int64_t j, const float* ls, const float* e, bool* own, float* m) {
  float z = 0.f;
  for_window(g, i, j, [&](int64_t q) { z += e[q]; });
  *own = z < UNDERFLOW;
  return *own ? own_sum(g, i, j, ls, m) : z;
}

// 2x2 windows at stride 2 (SoftPool's), window-major (Quad): the loop runs across the plane's windows in vector
// registers. A window whose weights underflow is redone by the generic code afterwards (z: each window's sum).
void soft2_forward(const float* __restrict X, const float* __restrict E, int64_t n, float* __restrict out,
                   float* __restrict z) {
  for (int64_t t = 0; t < n; ++t) {
    float zz = 0.f, acc = 0.f;
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) zz += E[e * n + t];
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) acc += E[e * n + t] * X[e * n + t];
    z[t] = zz;
    out[t] = acc / zz;
  }
}

void soft2_backward(const float* __restrict X, const float* __restrict E, const float* __restrict y,
                    const float* __restrict g, int64_t n, float* __restrict DX, float* __restrict DL,
                    float* __restrict z) {
  for (int64_t t = 0; t < n; ++t) {
    float zz = 0.f;
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) zz += E[e * n + t];
    const float gz = g[t] / zz;
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) {
      DX[e * n + t] = gz * E[e * n + t];
      DL[e * n + t] = DX[e * n + t] * (X[e * n + t] - y[t]);
    }
    z[t] = zz;
  }
}

// 3x3 windows at stride 2 with padding 1 (LIP's), as separable sums: window (i, j) spans rows 2i-1..2i+1 and
// columns 2j-1..2j+1 of the plane, clipped. Forward: per output row, the three rows' column sums of e and e*x (a
// vector loop over columns), then three columns of those per window. Backward: dX_q = e_q A_q and
// dL_q = e_q (x_q A_q - B_q), with A_q, B_q the sums of g/z and g y/z over the windows holding pixel q (an even
// row or column lies in one window row or column, an odd one in two). Windows whose weights underflow are left
// out here and redone by the caller with their own maximum.
struct Lip {
  int64_t h, w, ho, wo;
};

// ce, cx: w + 2 floats each, the first and the last zero: window j's columns 2j - 1 .. 2j + 1 are ce[2j .. 2j + 2], so
// every window adds three columns from 0 in column order, a border window a zero first (+0 + +0 is +0) or last (+0
// added to a sum that is never -0: each starts from +0), the same bits as adding only its columns
void lip_forward(const Lip& g, const float* __restrict x, const float* __restrict e, float* __restrict out,
                 float* __restrict z, float* __restrict ce, float* __restrict cx) {
  float *pe = ce + 1, *px = cx + 1;
  for (int64_t i = 0; i < g.ho; ++i) {
    const int64_t r0 = std::max<int64_t>(2 * i - 1, 0), r1 = std::min<int64_t>(2 * i + 2, g.h);
    for (int64_t c = 0; c < g.w; ++c) pe[c] = px[c] = 0.f;
    for (int64_t r = r0; r < r1; ++r) {
      const float *er = e + r * g.w, *xr = x + r * g.w;
#pragma omp simd
      for (int64_t c = 0; c < g.w; ++c) {
        pe[c] += er[c];
        px[c] += er[c] * xr[c];
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < g.wo; ++j) {
      const float zz = ((0.f + ce[2 * j]) + ce[2 * j + 1]) + ce[2 * j + 2];
      z[i * g.wo + j] = zz;
      out[i * g.wo + j] = (((0.f + cx[2 * j]) + cx[2 * j + 1]) + cx[2 * j + 2]) / zz;
    }
  }
}

// gz = g / z and gzy = g y / z per window (0 where z is below UNDERFLOW: those windows are the caller's), then per
// window row i the sums over that row's windows holding each column, ea and eb (column 2j lies in window j, column
// 2j + 1 in windows j and j + 1 if there is one), then per pixel: row 2i lies in window row i, row 2i + 1 in rows i
// and i + 1 if there is one (a vector loop over the row's columns). Before revision 4 each pixel row summed the
// windows' values in window-row order first and expanded to columns after, a scalar loop per pixel row.
void lip_backward(const Lip& g, const float* __restrict x, const float* __restrict e, const float* __restrict y,
                  const float* __restrict gout, const float* __restrict z, float* __restrict dx, float* __restrict dl,
                  float* __restrict gz, float* __restrict gzy, float* __restrict ea, float* __restrict eb) {
  for (int64_t t = 0; t < g.ho * g.wo; ++t) {
    const float v = z[t] < UNDERFLOW ? 0.f : gout[t] / z[t];
    gz[t] = v;
    gzy[t] = v * y[t];
  }
  for (int64_t i = 0; i < g.ho; ++i) {
    const float *a = gz + i * g.wo, *b = gzy + i * g.wo;
    float *ra = ea + i * g.w, *rb = eb + i * g.w;
    for (int64_t j = 0; j < g.wo; ++j) {
      const bool next = j + 1 < g.wo;
      if (2 * j < g.w) ra[2 * j] = a[j], rb[2 * j] = b[j];
      if (2 * j + 1 < g.w) ra[2 * j + 1] = next ? a[j] + a[j + 1] : a[j], rb[2 * j + 1] = next ? b[j] + b[j + 1] : b[j];
    }
  }
  for (int64_t r = 0; r < g.h; ++r) {
    const int64_t i = r / 2;
    const float *er = e + r * g.w, *xr = x + r * g.w, *a0 = ea + i * g.w, *b0 = eb + i * g.w;
    float *dxr = dx + r * g.w, *dlr = dl + r * g.w;
    if (r % 2 == 1 && i + 1 < g.ho) {
      const float *a1 = a0 + g.w, *b1 = b0 + g.w;
#pragma omp simd
      for (int64_t c = 0; c < g.w; ++c) {
        const float ca = a0[c] + a1[c], cb = b0[c] + b1[c];
        dxr[c] = er[c] * ca;
        dlr[c] = er[c] * (xr[c] * ca - cb);
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < g.w; ++c) {
        dxr[c] = er[c] * a0[c];
        dlr[c] = er[c] * (xr[c] * a0[c] - b0[c]);
      }
    }
  }
}

std::vector<paddle::Tensor> SoftWindowForward(const paddle::Tensor& x, const paddle::Tensor& logit, int k, int s,
                                              int p, int threads) {
  const Win g = win(x.shape(), k, s, p);
  auto out = paddle::empty({x.shape()[0], x.shape()[1], g.ho, g.wo}, paddle::DataType::FLOAT32, x.place());
  // the plane weights e and the window sums z are kept for the backward pass (which recomputed them: ~half its time)
  auto weights = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  auto sums = paddle::empty({x.shape()[0], x.shape()[1], g.ho, g.wo}, paddle::DataType::FLOAT32, x.place());
  const float *xp = x.data<float>(), *lp = logit.data<float>();
  float *op = out.data<float>(), *ep = weights.data<float>(), *zp = sums.data<float>();
  const int64_t quad = g.k == 2 && g.s == 2 && g.p == 0 ? Quad(g.h, g.w).n : 0;
  const bool lip = g.lip();
#pragma omp parallel num_threads(num_threads(threads))
  {
    std::vector<float> X(4 * quad), E(4 * quad), ce(lip ? g.w + 2 : 0, 0.f), cx(lip ? g.w + 2 : 0, 0.f);
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      const float *xs = xp + pl * g.h * g.w, *ls = lp + pl * g.h * g.w;
      float *e = ep + pl * g.h * g.w, *z = zp + pl * g.ho * g.wo;
      plane_weights(ls, g.h * g.w, e);
      if (g.k == 2 && g.s == 2 && g.p == 0) {
        const Quad qd(g.h, g.w);
        float* o = op + pl * qd.n;
        qd.gather(xs, X.data());
        qd.gather(e, E.data());
        soft2_forward(X.data(), E.data(), qd.n, o, z);
        for (int64_t t = 0; t < qd.n; ++t)
          if (z[t] < UNDERFLOW) {  // all four weights underflow against the plane's maximum: the window's own
            const int64_t i = t / qd.wo, j = t % qd.wo;
            float wm, acc = 0.f;
            const float zz = own_sum(g, i, j, ls, &wm);
            for_window(g, i, j, [&](int64_t q) { acc += std::exp(ls[q] - wm) * xs[q]; });
            o[t] = acc / zz;
          }
        continue;
      }
      if (g.lip()) {
        const Lip lg{g.h, g.w, g.ho, g.wo};
        float* o = op + pl * g.ho * g.wo;
        lip_forward(lg, xs, e, o, z, ce.data(), cx.data());
        for (int64_t t = 0; t < g.ho * g.wo; ++t)
          if (z[t] < UNDERFLOW) {  // the window's own maximum, as in the generic code
            const int64_t i = t / g.wo, j = t % g.wo;
            float wm, acc = 0.f;
            const float zz = own_sum(g, i, j, ls, &wm);
            for_window(g, i, j, [&](int64_t q) { acc += std::exp(ls[q] - wm) * xs[q]; });
            o[t] = acc / zz;
          }
        continue;
      }
      for (int64_t i = 0; i < g.ho; ++i)
        for (int64_t j = 0; j < g.wo; ++j) {
          float acc = 0.f, wm = 0.f;
          bool own;
          const float zz = window_sum(g, i, j, ls, e, &own, &wm);
          if (own)
            for_window(g, i, j, [&](int64_t q) { acc += std::exp(ls[q] - wm) * xs[q]; });
          else
            for_window(g, i, j, [&](int64_t q) { acc += e[q] * xs[q]; });
          z[i * g.wo + j] = zz;
          op[(pl * g.ho + i) * g.wo + j] = acc / zz;
        }
    }
  }
  return {out, weights, sums};
}

std::vector<paddle::Tensor> SoftWindowBackward(const paddle::Tensor& x, const paddle::Tensor& logit,
                                               const paddle::Tensor& out, const paddle::Tensor& weights,
                                               const paddle::Tensor& sums, const paddle::Tensor& dout, int k, int s,
                                               int p, int threads) {
  const Win g = win(x.shape(), k, s, p);
  // LIP's separable backward writes every pixel; the others add into (or skip) some: zeros first
  const auto grad = [&] {
    return g.lip() ? paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place())
                   : paddle::full(x.shape(), 0.f, paddle::DataType::FLOAT32, x.place());
  };
  auto dx = grad(), dl = grad();
  const float *xp = x.data<float>(), *lp = logit.data<float>(), *op = out.data<float>(), *gp = dout.data<float>(),
              *ep = weights.data<float>(), *zp = sums.data<float>();
  float *dxp = dx.data<float>(), *dlp = dl.data<float>();
  const int64_t quad = g.k == 2 && g.s == 2 && g.p == 0 ? Quad(g.h, g.w).n : 0;
  const int64_t lip = g.lip() ? g.ho * g.wo : 0;
#pragma omp parallel num_threads(num_threads(threads))
  {
    std::vector<float> z(quad), X(4 * quad), E(4 * quad), DX(4 * quad), DL(4 * quad), gz(lip), gzy(lip),
        ea(lip ? g.ho * g.w : 0), eb(lip ? g.ho * g.w : 0);
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      const int64_t base = pl * g.h * g.w;
      const float *xs = xp + base, *ls = lp + base;
      float *dxs = dxp + base, *dls = dlp + base;
      const float* e = ep + base;  // the forward pass's weights
      if (g.k == 2 && g.s == 2 && g.p == 0) {
        const Quad qd(g.h, g.w);
        const int64_t o = pl * qd.n;
        qd.gather(xs, X.data());
        qd.gather(e, E.data());
        soft2_backward(X.data(), E.data(), op + o, gp + o, qd.n, DX.data(), DL.data(), z.data());
        qd.scatter(DX.data(), dxs);
        qd.scatter(DL.data(), dls);
        for (int64_t t = 0; t < qd.n; ++t)
          if (z[t] < UNDERFLOW) {  // as in the forward pass: the window's own maximum
            const int64_t i = t / qd.wo, j = t % qd.wo;
            float wm;
            const float zz = own_sum(g, i, j, ls, &wm);
            const float gz = gp[o + t] / zz;
            for_window(g, i, j, [&](int64_t q) {
              dxs[q] = gz * std::exp(ls[q] - wm);
              dls[q] = dxs[q] * (xs[q] - op[o + t]);
            });
          }
        continue;
      }
      if (g.lip()) {
        const Lip lg{g.h, g.w, g.ho, g.wo};
        const int64_t o = pl * g.ho * g.wo;
        const float* zs = zp + o;  // the forward pass's window sums
        lip_backward(lg, xs, e, op + o, gp + o, zs, dxs, dls, gz.data(), gzy.data(), ea.data(), eb.data());
        for (int64_t t = 0; t < g.ho * g.wo; ++t)
          if (zs[t] < UNDERFLOW) {  // left out above: added with the window's own maximum
            const int64_t i = t / g.wo, j = t % g.wo;
            float wm;
            const float zz = own_sum(g, i, j, ls, &wm);
            const float gzz = gp[o + t] / zz;
            for_window(g, i, j, [&](int64_t q) {
              const float gpq = gzz * std::exp(ls[q] - wm);
              dxs[q] += gpq;
              dls[q] += gpq * (xs[q] - op[o + t]);
            });
          }
        continue;
      }
      for (int64_t i = 0; i < g.ho; ++i)
        for (int64_t j = 0; j < g.wo; ++j) {
          const int64_t o = (pl * g.ho + i) * g.wo + j;
          float wm = 0.f;
          bool own;
          const float zz = window_sum(g, i, j, ls, e, &own, &wm);
          const float gz = gp[o] / zz, y = op[o];
          for_window(g, i, j, [&](int64_t q) {
            const float gpq = gz * (own ? std::exp(ls[q] - wm) : e[q]);  // g * p_q
            dxs[q] += gpq;
            dls[q] += gpq * (xs[q] - y);
          });
        }
    }
  }
  return {dx, dl};
}

std::vector<std::vector<int64_t>> SoftWindowInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& l,
                                                       int k, int s, int p, int threads) {
  const std::vector<int64_t> o = {x[0], x[1], (x[2] + 2 * p - k) / s + 1, (x[3] + 2 * p - k) / s + 1};
  return {o, x, o};
}

std::vector<paddle::DataType> SoftWindowInferDtype(const paddle::DataType& x, const paddle::DataType& l) {
  return {x, x, x};
}

PD_BUILD_OP(lenet_soft_window)
    .Inputs({"X", "L"})
    .Outputs({"Out", "E", "Z"})
    .Attrs({"k: int", "s: int", "p: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(SoftWindowForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SoftWindowInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SoftWindowInferDtype));

PD_BUILD_GRAD_OP(lenet_soft_window)
    .Inputs({"X", "L", "Out", "E", "Z", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("L")})
    .Attrs({"k: int", "s: int", "p: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(SoftWindowBackward));

// Pooling operators over non-overlapping k x k windows (stride k, the last rows/columns that do not fill a
// window are dropped, as Paddle's pooling does). Each thread owns whole planes; per-channel parameter
// gradients are summed per plane, then over the batch in plane order: bit-identical for any thread count.
namespace {

struct Tile {
  int64_t n, c, h, w, k, ho, wo;
  int64_t planes() const { return n * c; }
};

Tile tile(const std::vector<int64_t>& xs, int k) { return {xs[0], xs[1], xs[2], xs[3], k, xs[2] / k, xs[3] / k}; }

// offsets (into the plane) of the k*k pixels of window (i, j), row-major
inline void window_offsets(const Tile& g, int64_t i, int64_t j, int64_t* q) {
  for (int64_t r = 0; r < g.k; ++r)
    for (int64_t c = 0; c < g.k; ++c) q[r * g.k + c] = (i * g.k + r) * g.w + j * g.k + c;
}

constexpr int64_t MAXK2 = 256;  // windows up to 16 x 16

}  // namespace

// Stochastic pooling, training (Zeiler & Fergus 2013; positive parts, as StochasticPool documents): with one
// uniform u per window, the first element (row-major) whose cumulative positive mass exceeds u * mass;
// a window with no positive activation takes its first maximum. Arg records the pick for the backward pass,
// which routes the gradient to it (the sampled element's value is the output).
namespace {

// One plane's windows (KT: k known at compile time, 0: g.k), without branches on the data: the pick is random, so a
// search that stops at it mispredicted about once a window (~2 ms for LeNet's 75k windows on Zen 5). The cumulative
// mass never decreases (each step adds a positive part, and rounding is monotone), so the first e < K - 1 with
// target < cum[e] (K - 1 if none) is the count of e < K - 1 without it; the first maximum is a running select. The
// same element either way, so the same bits.
template <int64_t KT>
void stochastic_plane(const Tile& g, const float* xs, const float* up, float* op, uint8_t* ap) {
  const int64_t k = KT ? KT : g.k, K = k * k;
  float cum[MAXK2];
  for (int64_t i = 0; i < g.ho; ++i)
    for (int64_t j = 0; j < g.wo; ++j) {
      const int64_t o = i * g.wo + j;
      const float* w0 = xs + i * k * g.w + j * k;
      float run = 0.f, best = w0[0];
      int64_t top = 0;
      for (int64_t r = 0; r < k; ++r)
        for (int64_t c = 0; c < k; ++c) {
          const int64_t e = r * k + c;
          const float v = w0[r * g.w + c];
          cum[e] = run += std::max(v, 0.f);
          const bool above = v > best;
          top = above ? e : top;
          best = above ? v : best;
        }
      const float target = up[o] * (run / K) * K;
      int64_t drawn = 0;
      for (int64_t e = 0; e < K - 1; ++e) drawn += !(target < cum[e]);
      const int64_t pick = run / K > 0.f ? drawn : top;  // the plain graph's test: the window's mean positive part
      op[o] = w0[(pick / k) * g.w + pick % k];
      ap[o] = static_cast<uint8_t>(pick);
    }
}

}  // namespace

std::vector<paddle::Tensor> StochasticForward(const paddle::Tensor& x, const paddle::Tensor& u, int k, int threads) {
  const Tile g = tile(x.shape(), k);
  auto out = paddle::empty({g.n, g.c, g.ho, g.wo}, paddle::DataType::FLOAT32, x.place());
  auto arg = paddle::empty({g.n, g.c, g.ho, g.wo}, paddle::DataType::UINT8, x.place());
  const float *xp = x.data<float>(), *up = u.data<float>();
  float* op = out.data<float>();
  uint8_t* ap = arg.data<uint8_t>();
  const int64_t P = g.ho * g.wo;
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < g.planes(); ++pl) {
    const float* xs = xp + pl * g.h * g.w;
    if (g.k == 2) {
      stochastic_plane<2>(g, xs, up + pl * P, op + pl * P, ap + pl * P);
    } else if (g.k == 3) {
      stochastic_plane<3>(g, xs, up + pl * P, op + pl * P, ap + pl * P);
    } else {
      stochastic_plane<0>(g, xs, up + pl * P, op + pl * P, ap + pl * P);
    }
  }
  return {out, arg};
}

std::vector<paddle::Tensor> StochasticBackward(const paddle::Tensor& x, const paddle::Tensor& arg,
                                               const paddle::Tensor& dout, int k, int threads) {
  const Tile g = tile(x.shape(), k);
  auto dx = paddle::full(x.shape(), 0.f, paddle::DataType::FLOAT32, x.place());
  const uint8_t* ap = arg.data<uint8_t>();
  const float* gp = dout.data<float>();
  float* dp = dx.data<float>();
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < g.planes(); ++pl)
    for (int64_t i = 0; i < g.ho; ++i)
      for (int64_t j = 0; j < g.wo; ++j) {
        const int64_t o = (pl * g.ho + i) * g.wo + j, e = ap[o];
        dp[pl * g.h * g.w + (i * g.k + e / g.k) * g.w + j * g.k + e % g.k] = gp[o];
      }
  return {dx};
}

std::vector<std::vector<int64_t>> StochasticInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& u,
                                                       int k, int threads) {
  return {{x[0], x[1], x[2] / k, x[3] / k}, {x[0], x[1], x[2] / k, x[3] / k}};
}

std::vector<paddle::DataType> StochasticInferDtype(const paddle::DataType& x, const paddle::DataType& u) {
  return {x, paddle::DataType::UINT8};
}

PD_BUILD_OP(lenet_stochastic_pool)
    .Inputs({"X", "U"})
    .Outputs({"Out", "Arg"})
    .Attrs({"k: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(StochasticForward))
    .SetInferShapeFn(PD_INFER_SHAPE(StochasticInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(StochasticInferDtype));

PD_BUILD_GRAD_OP(lenet_stochastic_pool)
    .Inputs({"X", "Arg", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"k: int", "threads: int"})
    .SetKernelFn(PD_KERNEL(StochasticBackward));

// Detail-preserving pooling, symmetric lite (Saeedan et al. 2018; DPPPool documents the definition). Per window:
// m = mean(x), d_i = (x_i - m)^2 + eps, dn = mean(d), r_i = d_i / dn, w_i = r_i^gamma + a, out = sum w x / sum w,
// with gamma = e^lam / 2 and a = e^min(alpha, 10) per channel. The backward pass recomputes the window (2x2: from the
// forward's r^gamma and ln r) and applies the chain rule through w, r, dn, d and m (derivation in the comments below).
namespace {

constexpr float DPP_EPS = 1e-3f;

struct DppWindow {
  float x[MAXK2], d[MAXK2], r[MAXK2], p[MAXK2], w[MAXK2];  // p = r^gamma
  float m, dn, W, out;
};

inline void dpp_window(const float* xs, const int64_t* q, int64_t K, float gamma, float a, DppWindow& v) {
  float s = 0.f;
  for (int64_t e = 0; e < K; ++e) s += v.x[e] = xs[q[e]];
  v.m = s / K;
  float sd = 0.f;
  for (int64_t e = 0; e < K; ++e) {
    const float t = v.x[e] - v.m;
    sd += v.d[e] = t * t + DPP_EPS;
  }
  v.dn = sd / K;
  float W = 0.f, acc = 0.f;
  for (int64_t e = 0; e < K; ++e) {
    v.r[e] = v.d[e] / v.dn;
    v.p[e] = fexp(gamma * flog(v.r[e]));
    W += v.w[e] = v.p[e] + a;
    acc += v.w[e] * v.x[e];
  }
  v.W = W;
  v.out = acc / W;
}

struct DppParams {
  std::vector<float> gamma, a;
  std::vector<bool> alpha_free;  // alpha below the cap: its gradient passes
};

DppParams dpp_params(const paddle::Tensor& lam, const paddle::Tensor& alpha, int64_t c) {
  DppParams P{std::vector<float>(c), std::vector<float>(c), std::vector<bool>(c)};
  const float *lp = lam.data<float>(), *ap = alpha.data<float>();
  for (int64_t i = 0; i < c; ++i) {
    P.gamma[i] = std::exp(lp[i]) / 2.f;
    P.a[i] = std::exp(std::min(ap[i], 10.f));
    P.alpha_free[i] = ap[i] < 10.f;
  }
  return P;
}

// 2x2 windows, window-major (Quad): the same formula as dpp_window and the generic backward, with the loop
// running across the plane's windows in vector registers. KEEP: P and LR get each pixel's r^gamma and ln r (X's
// layout) for the backward pass, which then computes no exp or log (it had recomputed the forward's eight and four
// more: the same floats, so the same bits).
template <bool KEEP>
void dpp2_forward(const float* __restrict X, int64_t n, float gamma, float a, float* __restrict out,
                  float* __restrict P, float* __restrict LR) {
#pragma GCC ivdep  // inlined, the restricts are lost (more than GCC's 10 run-time alias checks)
  for (int64_t t = 0; t < n; ++t) {
    float x[4], s = 0.f;
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) s += x[e] = X[e * n + t];
    const float m = s / 4;
    float d[4], sd = 0.f;
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) {
      const float u = x[e] - m;
      sd += d[e] = u * u + DPP_EPS;
    }
    const float dn = sd / 4;
    float W = 0.f, acc = 0.f;
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) {
      const float lr = flog(d[e] / dn), p = fexp(gamma * lr);
      const float w = p + a;
      W += w;
      acc += w * x[e];
      if (KEEP) P[e * n + t] = p, LR[e * n + t] = lr;
    }
    out[t] = acc / W;
  }
}

void dpp2_backward(const float* __restrict X, const float* __restrict P, const float* __restrict LR,
                   const float* __restrict gout, int64_t n, float gamma, float a, float* __restrict DX,
                   float* __restrict wgs, float* __restrict ags) {
#pragma GCC ivdep
  for (int64_t t = 0; t < n; ++t) {
    float x[4], s = 0.f;
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) s += x[e] = X[e * n + t];
    const float m = s / 4;
    float d[4], r[4], p[4], w[4], sd = 0.f;
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) {
      const float u = x[e] - m;
      sd += d[e] = u * u + DPP_EPS;
    }
    const float dn = sd / 4;
    float W = 0.f, acc = 0.f;
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) {
      r[e] = d[e] / dn;
      p[e] = P[e * n + t];
      W += w[e] = p[e] + a;
      acc += w[e] * x[e];
    }
    const float y = acc / W;
    const float gW = gout[t] / W;
    float dx[4], gd[4], sgr_r = 0.f, wg = 0.f, ag = 0.f;
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) {
      const float gw = gW * (x[e] - y);  // d out / d w_e = (x_e - out) / W
      dx[e] = gW * w[e];                  // through the numerator
      wg += gw * p[e] * LR[e * n + t];    // d w_e / d gamma = r^gamma ln r
      ag += gw;                           // d w_e / d a = 1
      const float gr = gw * gamma * p[e] / r[e];  // d w_e / d r_e = gamma r^(gamma-1)
      gd[e] = gr / dn;                            // r_e = d_e / dn
      sgr_r += gr * r[e];
    }
    const float gdn = -sgr_r / dn;  // d r_e / d dn = -r_e / dn
    float gm = 0.f;
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) {
      const float u = 2.f * (x[e] - m) * (gd[e] + gdn / 4);  // d_e = (x_e - m)^2 + eps, dn = mean(d)
      dx[e] += u;
      gm -= u;
    }
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) DX[e * n + t] = dx[e] + gm / 4;  // m = mean(x)
    wgs[t] = wg;
    ags[t] = ag;
  }
}

}  // namespace

// keep: a gradient is needed. The outputs past Out (2x2 windows: each pixel's r^gamma and ln r) are the backward
// pass's; 1-element placeholders without, and for other windows, whose backward recomputes them as before (reading
// the forward's instead moved the last bits of their gradients: the two passes' inlined exp/log do not round alike)
std::vector<paddle::Tensor> DppForward(const paddle::Tensor& x, const paddle::Tensor& lam, const paddle::Tensor& alpha,
                                       int k, bool keep, int threads) {
  const Tile g = tile(x.shape(), k);
  const DppParams P = dpp_params(lam, alpha, g.c);
  const int64_t K = g.k * g.k, win = g.ho * g.wo;
  auto out = paddle::empty({g.n, g.c, g.ho, g.wo}, paddle::DataType::FLOAT32, x.place());
  keep = keep && g.k == 2;
  const std::vector<int64_t> kept = keep ? std::vector<int64_t>{g.n, g.c, K * win} : std::vector<int64_t>{1, 1, 1};
  auto pw = paddle::empty(kept, paddle::DataType::FLOAT32, x.place());
  auto lg = paddle::empty(kept, paddle::DataType::FLOAT32, x.place());
  const float* xp = x.data<float>();
  float *op = out.data<float>(), *pp = pw.data<float>(), *lp = lg.data<float>();
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < g.planes(); ++pl) {
    const int64_t c = pl % g.c;
    if (g.k == 2) {
      const Quad qd(g.h, g.w);
      std::vector<float> X(4 * qd.n);
      qd.gather(xp + pl * g.h * g.w, X.data());
      (keep ? dpp2_forward<true> : dpp2_forward<false>)(X.data(), qd.n, P.gamma[c], P.a[c], op + pl * qd.n,
                                                        pp + pl * 4 * qd.n, lp + pl * 4 * qd.n);
      continue;
    }
    int64_t q[MAXK2];
    DppWindow v;
    for (int64_t i = 0; i < g.ho; ++i)
      for (int64_t j = 0; j < g.wo; ++j) {
        window_offsets(g, i, j, q);
        dpp_window(xp + pl * g.h * g.w, q, K, P.gamma[c], P.a[c], v);
        op[(pl * g.ho + i) * g.wo + j] = v.out;
      }
  }
  return {out, pw, lg};
}

std::vector<paddle::Tensor> DppBackward(const paddle::Tensor& x, const paddle::Tensor& lam, const paddle::Tensor& alpha,
                                        const paddle::Tensor& pw, const paddle::Tensor& lg, const paddle::Tensor& dout,
                                        int k, bool keep, int threads) {
  const Tile g = tile(x.shape(), k);
  const DppParams P = dpp_params(lam, alpha, g.c);
  auto dx = paddle::full(x.shape(), 0.f, paddle::DataType::FLOAT32, x.place());
  auto dlam = paddle::empty(lam.shape(), paddle::DataType::FLOAT32, x.place());
  auto dalpha = paddle::empty(alpha.shape(), paddle::DataType::FLOAT32, x.place());
  std::vector<double> gg(g.planes()), ga(g.planes());  // per plane: d/dgamma and d/da
  const float *xp = x.data<float>(), *gp = dout.data<float>(), *pp = pw.data<float>(), *lp = lg.data<float>();
  float* dxp = dx.data<float>();
  const int64_t K = g.k * g.k;
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < g.planes(); ++pl) {
    const int64_t c = pl % g.c;
    const float gamma = P.gamma[c], a = P.a[c];
    const float* xs = xp + pl * g.h * g.w;
    float* dxs = dxp + pl * g.h * g.w;
    double sg = 0.0, sa = 0.0;
    if (g.k == 2) {
      const Quad qd(g.h, g.w);
      std::vector<float> X(4 * qd.n), DX(4 * qd.n), wg(qd.n), ag(qd.n);
      qd.gather(xs, X.data());
      dpp2_backward(X.data(), pp + pl * 4 * qd.n, lp + pl * 4 * qd.n, gp + pl * qd.n, qd.n, gamma, a, DX.data(),
                    wg.data(), ag.data());
      qd.scatter(DX.data(), dxs);
      for (int64_t t = 0; t < qd.n; ++t) sg += wg[t], sa += ag[t];  // in window order, as below
      gg[pl] = sg;
      ga[pl] = sa;
      continue;
    }
    int64_t q[MAXK2];
    float gd[MAXK2];
    DppWindow v;
    for (int64_t i = 0; i < g.ho; ++i)
      for (int64_t j = 0; j < g.wo; ++j) {
        window_offsets(g, i, j, q);
        dpp_window(xs, q, K, gamma, a, v);
        const float gW = gp[(pl * g.ho + i) * g.wo + j] / v.W;
        float sgr_r = 0.f, wg = 0.f, ag = 0.f;
        for (int64_t e = 0; e < K; ++e) {
          const float gw = gW * (v.x[e] - v.out);  // d out / d w_e = (x_e - out) / W
          dxs[q[e]] = gW * v.w[e];                  // through the numerator
          wg += gw * v.p[e] * flog(v.r[e]);         // d w_e / d gamma = r^gamma ln r
          ag += gw;                                 // d w_e / d a = 1
          const float gr = gw * gamma * v.p[e] / v.r[e];  // d w_e / d r_e = gamma r^(gamma-1)
          gd[e] = gr / v.dn;                               // r_e = d_e / dn
          sgr_r += gr * v.r[e];
        }
        const float gdn = -sgr_r / v.dn;  // d r_e / d dn = -r_e / dn
        float gm = 0.f;
        for (int64_t e = 0; e < K; ++e) {
          const float gde = gd[e] + gdn / K;          // dn = mean(d)
          const float t = 2.f * (v.x[e] - v.m) * gde;  // d_e = (x_e - m)^2 + eps
          dxs[q[e]] += t;
          gm -= t;
        }
        for (int64_t e = 0; e < K; ++e) dxs[q[e]] += gm / K;  // m = mean(x)
        sg += wg;
        sa += ag;
      }
    gg[pl] = sg;
    ga[pl] = sa;
  }
  float *dl = dlam.data<float>(), *da = dalpha.data<float>();
  for (int64_t c = 0; c < g.c; ++c) {
    double sg = 0.0, sa = 0.0;
    for (int64_t n = 0; n < g.n; ++n) sg += gg[n * g.c + c], sa += ga[n * g.c + c];
    dl[c] = static_cast<float>(sg * P.gamma[c]);                            // gamma = e^lam / 2
    da[c] = P.alpha_free[c] ? static_cast<float>(sa * P.a[c]) : 0.f;         // a = e^alpha below the cap
  }
  return {dx, dlam, dalpha};
}

std::vector<std::vector<int64_t>> DppInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& lam,
                                                const std::vector<int64_t>& alpha, int k, bool keep, int threads) {
  const std::vector<int64_t> kept = keep && k == 2 ? std::vector<int64_t>{x[0], x[1], k * k * (x[2] / k) * (x[3] / k)}
                                         : std::vector<int64_t>{1, 1, 1};
  return {{x[0], x[1], x[2] / k, x[3] / k}, kept, kept};
}

std::vector<paddle::DataType> DppInferDtype(const paddle::DataType& x, const paddle::DataType& lam,
                                            const paddle::DataType& alpha) {
  return {x, x, x};
}

PD_BUILD_OP(lenet_dpp)
    .Inputs({"X", "Lam", "Alpha"})
    .Outputs({"Out", "Pow", "Log"})
    .Attrs({"k: int", "keep: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(DppForward))
    .SetInferShapeFn(PD_INFER_SHAPE(DppInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(DppInferDtype));

PD_BUILD_GRAD_OP(lenet_dpp)
    .Inputs({"X", "Lam", "Alpha", "Pow", "Log", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Lam"), paddle::Grad("Alpha")})
    .Attrs({"k: int", "keep: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(DppBackward));

// Lp pooling over non-overlapping k x k windows, as LpPool defines it: out = m (sum (|x|/m)^p)^(1/p) with m the
// window's largest |x| (0 for an all-zero window), r = |x|/m clipped below at 1e-30 as in the plain graph. m
// carries no gradient (the function is homogeneous in it): d out / d x_e = s^(1/p - 1) r_e^(p-1) sign(x_e).
// 2x2 windows run window-major (Quad), others window by window.
namespace {

constexpr float LP_TINY = 1e-30f;

inline float lp_window(const float* x, int64_t K, float p, float* t, float* r, float* s_out, float* root) {
  float m = 0.f;
  for (int64_t e = 0; e < K; ++e) m = std::max(m, std::fabs(x[e]));
  const float safe = m > 0.f ? m : 1.f;
  float s = 0.f;
  for (int64_t e = 0; e < K; ++e) {
    r[e] = std::max(std::fabs(x[e]) / safe, LP_TINY);
    s += t[e] = fexp(p * flog(r[e]));
  }
  *s_out = s;
  *root = fexp(flog(s) / p);
  return m > 0.f ? m * *root : 0.f;
}

inline float sign(float v) { return static_cast<float>(v > 0.f) - static_cast<float>(v < 0.f); }

// The forward pass keeps what its transcendentals gave (r_e^p per pixel, each window's s and s^(1/p)) for the
// backward pass, which then only divides and multiplies: it had recomputed all ten exp/log of a window (0.8 of
// LeNet pool=lp's 1.9 ms a step in Lp kernels on Zen 5). The same floats, so the same gradient bits.
// lp_window for 2x2 windows, written out so that the loop over windows vectorises; T: the windows' r_e^p in X's
// layout, S, R: s and s^(1/p) per window (KEEP false: inference, nothing kept)
template <bool KEEP>  // two loops: a store under a runtime test inside one stopped it vectorising (4.8x slower)
void lp2_forward(const float* __restrict X, int64_t n, float p, float* __restrict out, float* __restrict T,
                 float* __restrict S, float* __restrict R) {
#pragma GCC ivdep
  for (int64_t t = 0; t < n; ++t) {
    const float a0 = std::fabs(X[t]), a1 = std::fabs(X[n + t]), a2 = std::fabs(X[2 * n + t]), a3 = std::fabs(X[3 * n + t]);
    const float m = std::max(std::max(std::max(0.f, a0), a1), std::max(a2, a3));
    const float safe = m > 0.f ? m : 1.f;
    const float t0 = fexp(p * flog(std::max(a0 / safe, LP_TINY))), t1 = fexp(p * flog(std::max(a1 / safe, LP_TINY)));
    const float t2 = fexp(p * flog(std::max(a2 / safe, LP_TINY))), t3 = fexp(p * flog(std::max(a3 / safe, LP_TINY)));
    const float s = t0 + t1 + t2 + t3, root = fexp(flog(s) / p);
    out[t] = m > 0.f ? m * root : 0.f;
    if (KEEP) T[t] = t0, T[n + t] = t1, T[2 * n + t] = t2, T[3 * n + t] = t3, S[t] = s, R[t] = root;
  }
}

void lp2_backward(const float* __restrict X, const float* __restrict T, const float* __restrict S,
                  const float* __restrict R, const float* __restrict g, int64_t n, float* __restrict DX) {
#pragma GCC ivdep  // inlined, the restricts are lost: GCC would need more than its 10 run-time alias checks
  for (int64_t t = 0; t < n; ++t) {
    const float x0 = X[t], x1 = X[n + t], x2 = X[2 * n + t], x3 = X[3 * n + t];
    const float m = std::max(std::max(std::max(0.f, std::fabs(x0)), std::fabs(x1)), std::max(std::fabs(x2), std::fabs(x3)));
    const float safe = m > 0.f ? m : 1.f;
    const float gs = g[t] * R[t] / S[t];  // g s^(1/p) / s; loaded unconditionally, or the loop does not vectorise
    const float c = m > 0.f ? gs : 0.f;
    const auto d = [&](float x, float te) {
      const float r = std::max(std::fabs(x) / safe, LP_TINY);
      return r > LP_TINY ? c * te / r * sign(x) : 0.f;
    };
    DX[t] = d(x0, T[t]), DX[n + t] = d(x1, T[n + t]), DX[2 * n + t] = d(x2, T[2 * n + t]), DX[3 * n + t] = d(x3, T[3 * n + t]);
  }
}

}  // namespace

// keep: the input needs a gradient (the outputs past Out are the backward pass's; 1-element placeholders without)
std::vector<paddle::Tensor> LpForward(const paddle::Tensor& x, float p, int k, bool keep, int threads) {
  const Tile g = tile(x.shape(), k);
  const int64_t K = g.k * g.k, win = g.ho * g.wo;
  auto out = paddle::empty({g.n, g.c, g.ho, g.wo}, paddle::DataType::FLOAT32, x.place());
  auto pw = paddle::empty({keep ? g.n : 1, keep ? g.c : 1, keep ? K * win : 1}, paddle::DataType::FLOAT32, x.place());
  auto sum = paddle::empty(keep ? out.shape() : std::vector<int64_t>{1}, paddle::DataType::FLOAT32, x.place());
  auto root = paddle::empty(keep ? out.shape() : std::vector<int64_t>{1}, paddle::DataType::FLOAT32, x.place());
  const float* xp = x.data<float>();
  float *op = out.data<float>(), *tp = pw.data<float>(), *sp = sum.data<float>(), *rp = root.data<float>();
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < g.planes(); ++pl) {
    const float* xs = xp + pl * g.h * g.w;
    if (g.k == 2) {
      const Quad qd(g.h, g.w);
      std::vector<float> X(4 * qd.n);
      qd.gather(xs, X.data());
      (keep ? lp2_forward<true> : lp2_forward<false>)(X.data(), qd.n, p, op + pl * qd.n, tp + pl * 4 * qd.n,
                                                      sp + pl * qd.n, rp + pl * qd.n);
      continue;
    }
    int64_t q[MAXK2];
    float v[MAXK2], r[MAXK2], t[MAXK2], s, rt;
    for (int64_t i = 0; i < g.ho; ++i)
      for (int64_t j = 0; j < g.wo; ++j) {
        window_offsets(g, i, j, q);
        for (int64_t e = 0; e < K; ++e) v[e] = xs[q[e]];
        const int64_t w = pl * win + i * g.wo + j;
        op[w] = lp_window(v, K, p, t, r, &s, &rt);
        if (!keep) continue;
        std::copy(t, t + K, tp + w * K);
        sp[w] = s, rp[w] = rt;
      }
  }
  return {out, pw, sum, root};
}

std::vector<paddle::Tensor> LpBackward(const paddle::Tensor& x, const paddle::Tensor& pw, const paddle::Tensor& sum,
                                       const paddle::Tensor& root, const paddle::Tensor& dout, float p, int k,
                                       bool keep, int threads) {
  const Tile g = tile(x.shape(), k);
  auto dx = paddle::full(x.shape(), 0.f, paddle::DataType::FLOAT32, x.place());
  const float *xp = x.data<float>(), *gp = dout.data<float>(), *tp = pw.data<float>(), *sp = sum.data<float>(),
              *rp = root.data<float>();
  float* dxp = dx.data<float>();
  const int64_t K = g.k * g.k, win = g.ho * g.wo;
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < g.planes(); ++pl) {
    const float* xs = xp + pl * g.h * g.w;
    float* dxs = dxp + pl * g.h * g.w;
    if (g.k == 2) {
      const Quad qd(g.h, g.w);
      std::vector<float> X(4 * qd.n), DX(4 * qd.n);
      qd.gather(xs, X.data());
      lp2_backward(X.data(), tp + pl * 4 * qd.n, sp + pl * qd.n, rp + pl * qd.n, gp + pl * qd.n, qd.n, DX.data());
      qd.scatter(DX.data(), dxs);
      continue;
    }
    int64_t q[MAXK2];
    float v[MAXK2];
    for (int64_t i = 0; i < g.ho; ++i)
      for (int64_t j = 0; j < g.wo; ++j) {
        window_offsets(g, i, j, q);
        float m = 0.f;
        for (int64_t e = 0; e < K; ++e) m = std::max(m, std::fabs(v[e] = xs[q[e]]));
        const float safe = m > 0.f ? m : 1.f;
        const int64_t w = pl * win + i * g.wo + j;
        const float y = m > 0.f ? m * rp[w] : 0.f;
        const float c = y > 0.f ? gp[w] * rp[w] / sp[w] : 0.f;
        for (int64_t e = 0; e < K; ++e) {
          const float r = std::max(std::fabs(v[e]) / safe, LP_TINY);
          dxs[q[e]] = r > LP_TINY ? c * tp[w * K + e] / r * sign(v[e]) : 0.f;
        }
      }
  }
  return {dx};
}

std::vector<std::vector<int64_t>> LpInferShape(const std::vector<int64_t>& x, float p, int k, bool keep, int threads) {
  const std::vector<int64_t> out = {x[0], x[1], x[2] / k, x[3] / k};
  if (!keep) return {out, {1, 1, 1}, {1}, {1}};
  return {out, {x[0], x[1], k * k * (x[2] / k) * (x[3] / k)}, out, out};
}

std::vector<paddle::DataType> LpInferDtype(const paddle::DataType& x) { return {x, x, x, x}; }

PD_BUILD_OP(lenet_lp_pool)
    .Inputs({"X"})
    .Outputs({"Out", "Pow", "Sum", "Root"})
    .Attrs({"p: float", "k: int", "keep: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(LpForward))
    .SetInferShapeFn(PD_INFER_SHAPE(LpInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(LpInferDtype));

PD_BUILD_GRAD_OP(lenet_lp_pool)
    .Inputs({"X", "Pow", "Sum", "Root", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"p: float", "k: int", "keep: bool", "threads: int"})
    .SetKernelFn(PD_KERNEL(LpBackward));

// LIP's logit branch after its convolution: out = 12 sigmoid(gamma_c yh + beta_c) with yh = (y - mean) / sqrt(var +
// eps) over each plane (an affine instance norm, biased variance, as Paddle's instance_norm), one pass over a plane
// instead of Paddle's five ops (norm, sigmoid, scale and their gradients). Per-plane mean and 1/sqrt(var + eps)
// are a second output, for the backward pass. Plane statistics accumulate in double in pixel order; gamma's and
// beta's gradients are summed per plane, then over the batch in plane order: bit-identical for any thread count.
namespace {

constexpr float LIP_SCALE = 12.0f;

// sum of f(0) .. f(n - 1) in doubles over 16 interleaved lanes (element i in lane i % 16), the lanes then added in a
// fixed tree: the loop vectorises, with the same order (the same bits) on every ISA. A single serial chain of double
// adds was nearly all of the logit kernels' time (4 cycles an element: forward 0.76 ms for LIP's 64x6x28x28).
template <class F>
inline double lane_sum(int64_t n, F f) {
  constexpr int64_t W = 16;
  double a[W] = {};
  const int64_t body = n / W * W;
  for (int64_t i = 0; i < body; i += W)
#pragma GCC unroll 16
    for (int64_t l = 0; l < W; ++l) a[l] += f(i + l);
  for (int64_t i = body; i < n; ++i) a[i - body] += f(i);
  for (int64_t w = W / 2; w > 0; w /= 2)
    for (int64_t l = 0; l < w; ++l) a[l] += a[l + w];
  return a[0];
}

// sigmoid from e = exp(-|z|) <= 1, so no exp overflows: 1 / (1 + e) for z >= 0, e / (1 + e) below
inline float fsigmoid(float z) {
  const float e = fexp(-std::fabs(z));
  const float r = 1.0f / (1.0f + e);
  return z >= 0.0f ? r : e * r;
}

}  // namespace

std::vector<paddle::Tensor> LipLogitForward(const paddle::Tensor& y, const paddle::Tensor& gamma,
                                            const paddle::Tensor& beta, float eps, int threads) {
  const auto s = y.shape();
  const int64_t planes = s[0] * s[1], c = s[1], n = s[2] * s[3];
  auto out = paddle::empty(s, paddle::DataType::FLOAT32, y.place());
  auto stats = paddle::empty({s[0], s[1], 2}, paddle::DataType::FLOAT32, y.place());
  const float *yp = y.data<float>(), *gp = gamma.data<float>(), *bp = beta.data<float>();
  float *op = out.data<float>(), *sp = stats.data<float>();
#pragma omp parallel for num_threads(num_threads(threads)) schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* ys = yp + pl * n;
    const double mean = lane_sum(n, [&](int64_t i) { return static_cast<double>(ys[i]); }) / static_cast<double>(n);
    const double sq = lane_sum(n, [&](int64_t i) { return (ys[i] - mean) * (ys[i] - mean); });
    const float m = static_cast<float>(mean);
    const float rstd = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(n) + static_cast<double>(eps)));
    const float g = gp[pl % c], b = bp[pl % c];
    float* os = op + pl * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) os[i] = LIP_SCALE * fsigmoid(g * ((ys[i] - m) * rstd) + b);
    sp[2 * pl] = m;
    sp[2 * pl + 1] = rstd;
  }
  return {out, stats};
}

std::vector<paddle::Tensor> LipLogitBackward(const paddle::Tensor& y, const paddle::Tensor& gamma,
                                             const paddle::Tensor& beta, const paddle::Tensor& out,
                                             const paddle::Tensor& stats, const paddle::Tensor& dout, float eps,
                                             int threads) {
  const auto s = y.shape();
  const int64_t planes = s[0] * s[1], c = s[1], n = s[2] * s[3];
  auto dy = paddle::empty(s, paddle::DataType::FLOAT32, y.place());
  auto dgamma = paddle::empty({c}, paddle::DataType::FLOAT32, y.place());
  auto dbeta = paddle::empty({c}, paddle::DataType::FLOAT32, y.place());
  const float *yp = y.data<float>(), *gp = gamma.data<float>(), *op = out.data<float>(), *sp = stats.data<float>(),
              *dop = dout.data<float>();
  float* dyp = dy.data<float>();
  std::vector<double> dg(planes), db(planes);
#pragma omp parallel num_threads(num_threads(threads))
  {
    std::vector<float> dz(n), yh(n);
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < planes; ++pl) {
      const float *ys = yp + pl * n, *os = op + pl * n, *gs = dop + pl * n;
      const float m = sp[2 * pl], rstd = sp[2 * pl + 1], g = gp[pl % c];
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const float sg = os[i] * (1.0f / LIP_SCALE);
        dz[i] = gs[i] * LIP_SCALE * sg * (1.0f - sg);  // d out / d z = 12 s (1 - s)
        yh[i] = (ys[i] - m) * rstd;
      }
      const double sdz = lane_sum(n, [&](int64_t i) { return static_cast<double>(dz[i]); });
      const double sdzy = lane_sum(n, [&](int64_t i) { return static_cast<double>(dz[i]) * yh[i]; });
      dg[pl] = sdzy;
      db[pl] = sdz;
      // dy = rstd (d - mean(d) - yh mean(d yh)) with d = gamma dz
      const float m1 = static_cast<float>(g * sdz / static_cast<double>(n)),
                  m2 = static_cast<float>(g * sdzy / static_cast<double>(n));
      float* ds = dyp + pl * n;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) ds[i] = rstd * (g * dz[i] - m1 - yh[i] * m2);
    }
  }
  float *dgp = dgamma.data<float>(), *dbp = dbeta.data<float>();
  for (int64_t ch = 0; ch < c; ++ch) {
    double a = 0.0, b = 0.0;
    for (int64_t pl = ch; pl < planes; pl += c) a += dg[pl], b += db[pl];
    dgp[ch] = static_cast<float>(a);
    dbp[ch] = static_cast<float>(b);
  }
  return {dy, dgamma, dbeta};
}

std::vector<std::vector<int64_t>> LipLogitInferShape(const std::vector<int64_t>& y, const std::vector<int64_t>& g,
                                                     const std::vector<int64_t>& b, float eps, int threads) {
  return {y, {y[0], y[1], 2}};
}

std::vector<paddle::DataType> LipLogitInferDtype(const paddle::DataType& y, const paddle::DataType& g,
                                                 const paddle::DataType& b) {
  return {y, y};
}

PD_BUILD_OP(lenet_lip_logit)
    .Inputs({"Y", "Gamma", "Beta"})
    .Outputs({"Out", "Stats"})
    .Attrs({"eps: float", "threads: int"})
    .SetKernelFn(PD_KERNEL(LipLogitForward))
    .SetInferShapeFn(PD_INFER_SHAPE(LipLogitInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(LipLogitInferDtype));

PD_BUILD_GRAD_OP(lenet_lip_logit)
    .Inputs({"Y", "Gamma", "Beta", "Out", "Stats", paddle::Grad("Out")})
    .Outputs({paddle::Grad("Y"), paddle::Grad("Gamma"), paddle::Grad("Beta")})
    .Attrs({"eps: float", "threads: int"})
    .SetKernelFn(PD_KERNEL(LipLogitBackward));

// ---- Paddle's CPU random draws (paddle.rand, dropout), the same bits, without the per-element cost ----
// Both draw from the default CPU generator's mt19937_64, one engine call per element in element order, through
// std::uniform_real_distribution<float>(0, 1). Paddle's loops spent ~10 ns an element: the distribution's generic
// code per call, and in dropout a branch on each random comparison, mispredicted at every other element (0.7 ms for
// LeNet_BN's 75k). Here the engine is called in the same order, so it ends in the same state and every later draw
// is unchanged, and the conversion and the comparison run branch-free over blocks of draws.
namespace {

constexpr int64_t kDrawBlock = 1024;

// std::uniform_real_distribution<float>(0, 1) of draws z of a 64-bit engine as Paddle's build computes it
// (generate_canonical: (float)z / 2^64, a result of 1 clamped to the float below it; tests/test_ops.py pins a draw that
// rounds to 1 against paddle.rand), times (1 - 0), plus 0 — without the two branches a compiler gives it, each taken
// at random. (float)z, rounded to nearest even, is the signed conversion below 2^63; from 2^63 on it is that of z
// halved with its lowest bit kept sticky (z >> 1 still has 63 bits, far more than float's 24, so it rounds as z
// would), times 2: picked as integers before one conversion, the factor 2 folded into the exact power-of-two scale.
// The clamp is a minimum of bit patterns (non-negative floats order as their bits). Two passes: the conversions
// (scalar on AVX2), then the scale and clamp as one vector loop.
inline float i64_to_float(int64_t v) {
#ifdef __AVX2__
  return _mm_cvtss_f32(_mm_cvtsi64_ss(_mm_setzero_ps(), v));  // from a zeroed register: no false dependency on the last
#else
  return static_cast<float>(v);
#endif
}

constexpr uint32_t kTwoToMinus64 = 0x1f800000u, kBelowOne = 0x3f7fffffu;  // bits of 2^-64 (2^-63 is one exponent up)

inline void unit_floats(const uint64_t* __restrict z, int64_t n, float* __restrict out) {
  alignas(64) float f[kDrawBlock];
  alignas(64) uint32_t scale[kDrawBlock];
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t top = z[j] >> 63, pick = static_cast<uint64_t>(0) - top;
    const uint64_t v = (((z[j] >> 1) | (z[j] & 1)) & pick) | (z[j] & ~pick);
    f[j] = i64_to_float(static_cast<int64_t>(v));
    scale[j] = kTwoToMinus64 + (static_cast<uint32_t>(top) << 23);
  }
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    float s, r;
    uint32_t bits;
    std::memcpy(&s, &scale[j], 4);
    r = f[j] * s;
    std::memcpy(&bits, &r, 4);
    bits = std::min(bits, kBelowOne);
    std::memcpy(&out[j], &bits, 4);
  }
}

inline float unit_float(uint64_t z) {
  float out;
  unit_floats(&z, 1, &out);
  return out;
}

// The least draw z whose unit_float(z) is not below p (0 <= p < 1): unit_float is monotone in z, so "unit_float(z) < p"
// is "z < threshold", an integer comparison that vectorises.
inline uint64_t unit_threshold(float p) {
  uint64_t lo = 0, hi = ~static_cast<uint64_t>(0);  // unit_float(2^64 - 1) is the float below 1, not below p < 1
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    if (unit_float(mid) < p) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// n draws of the generator that Paddle's CPU kernels draw from, in order, handed to use(first, count, draws) a block
// at a time: one thread, as Paddle's own loop (the order of the draws is the result)
template <typename Use>
void draw_blocks(int64_t n, Use&& use) {
  if (n <= 0) return;
  const std::shared_ptr<std::mt19937_64> engine = phi::DefaultCPUGenerator()->GetCPUEngine();
  std::mt19937_64& e = *engine;
  alignas(64) uint64_t z[kDrawBlock];
  for (int64_t i0 = 0; i0 < n; i0 += kDrawBlock) {
    const int64_t b = std::min(kDrawBlock, n - i0);
    for (int64_t j = 0; j < b; ++j) z[j] = e();
    use(i0, b, z);
  }
}

}  // namespace

// paddle.rand(shape) (float32, CPU): `like` only names the place
std::vector<paddle::Tensor> RandForward(const paddle::Tensor& like, const std::vector<int64_t>& shape) {
  auto out = paddle::empty(shape, paddle::DataType::FLOAT32, like.place());
  float* o = out.data<float>();
  draw_blocks(out.numel(), [o](int64_t i0, int64_t b, const uint64_t* z) { unit_floats(z, b, o + i0); });
  return {out};
}

std::vector<std::vector<int64_t>> RandInferShape(const std::vector<int64_t>& like, const std::vector<int64_t>& shape) {
  return {shape};
}

std::vector<paddle::DataType> RandInferDtype(const paddle::DataType& like) { return {paddle::DataType::FLOAT32}; }

PD_BUILD_OP(lenet_rand)
    .Inputs({"Like"})
    .Outputs({"Out"})
    .Attrs({"shape: std::vector<int64_t>"})
    .SetKernelFn(PD_KERNEL(RandForward))
    .SetInferShapeFn(PD_INFER_SHAPE(RandInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(RandInferDtype));

// F.dropout(x, p) in training, mode upscale_in_train, 0 < p < 1: Paddle's kernel's arithmetic — an element is dropped
// where its uniform is below p, kept ones are x / (1 - p), the mask is uint8; the gradient dout * mask / (1 - p)
std::vector<paddle::Tensor> DropoutForward(const paddle::Tensor& x, float p) {
  auto out = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  auto mask = paddle::empty(x.shape(), paddle::DataType::UINT8, x.place());
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  uint8_t* mp = mask.data<uint8_t>();
  const float c = static_cast<float>(1.0f - p);
  const uint64_t threshold = unit_threshold(p);
  draw_blocks(x.numel(), [=](int64_t i0, int64_t b, const uint64_t* z) {
    const float* __restrict xs = xp + i0;
    float* __restrict ys = op + i0;
    uint8_t* __restrict ms = mp + i0;
#pragma omp simd
    for (int64_t j = 0; j < b; ++j) {
      const bool drop = z[j] < threshold;
      const float kept = xs[j] / c;
      ms[j] = drop ? 0 : 1;
      ys[j] = drop ? 0.f : kept;
    }
  });
  return {out, mask};
}

std::vector<paddle::Tensor> DropoutBackward(const paddle::Tensor& mask, const paddle::Tensor& dout, float p) {
  auto dx = paddle::empty(dout.shape(), paddle::DataType::FLOAT32, dout.place());
  const uint8_t* __restrict mp = mask.data<uint8_t>();
  const float* __restrict gp = dout.data<float>();
  float* __restrict dp = dx.data<float>();
  const float c = static_cast<float>(1.0f - p);
  const int64_t n = dout.numel();
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dp[i] = gp[i] * static_cast<float>(mp[i]) / c;
  return {dx};
}

std::vector<std::vector<int64_t>> DropoutInferShape(const std::vector<int64_t>& x, float p) { return {x, x}; }

std::vector<paddle::DataType> DropoutInferDtype(const paddle::DataType& x) { return {x, paddle::DataType::UINT8}; }

PD_BUILD_OP(lenet_dropout)
    .Inputs({"X"})
    .Outputs({"Out", "Mask"})
    .Attrs({"p: float"})
    .SetKernelFn(PD_KERNEL(DropoutForward))
    .SetInferShapeFn(PD_INFER_SHAPE(DropoutInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(DropoutInferDtype));

PD_BUILD_GRAD_OP(lenet_dropout)
    .Inputs({"Mask", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"p: float"})
    .SetKernelFn(PD_KERNEL(DropoutBackward));
