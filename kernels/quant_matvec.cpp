// Quantized-weight matrix-vector products (see quant_matvec.h).
//
// [SECTION] index
//   [1] Shared helpers: byte loads, fp16, K-quant scale unpacking, per-block sums of x
//   [2] Scalar kernels: one function per type, one row at a time (portable reference)
//   [3] AVX2+FMA+F16C kernels: the same algebra eight lanes wide; Q4_0/Q4_1/Q8_0 also
//       two rows at a time
//   [4] Row loops (with software prefetch), the generic dequantize-a-row path,
//       validation and dispatch
//
// Block algebra (x stays fp32; per block, d/m/scales are the block's fp16 or int fields):
//   Q4_0  sum (q-8)*d*x       = d * sum (q-8)*x            (q-8 formed as an integer)
//   Q4_1  sum (q*d+m)*x       = d * sum q*x + m * sum x    (sum x per block once per call)
//   Q8_0  sum q*d*x           = d * sum q*x
//   Q4_K  sum (d*sc*q - dmin*mn)*x over a 32-element sub-block
//                             = (d*sc) * sum q*x - dmin * mn * sum x
//   Q6_K  sum d*sc*(q-32)*x over a 16-element run = (d*sc) * sum (q-32)*x
// Each row is computed by one fixed sequence of operations that does not depend on which
// rows are computed with it, so any split of the row range gives bit-identical results.
//
// Speed (AMD EPYC Zen 3, one thread): the AVX2 Q4_1 kernel is bound by the core, not
// DRAM: ~19 vector ops per 32-weight block (widen, mask/shift, int->float, FMA, scales).
// Cheaper conversions (fp16 subnormals via vcvtph2ps, 2^23 magic-number floats) measured
// slower; reading the full byte and correcting with sum x would lose the "equal up to
// summation order" property, so it is not done.
#include "kernels/quant_matvec.h"

#include "kernels/cpu_isa.h"
#include "kernels/dequant.h"
#include "kernels/ggml_bytes.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvscope::kernels {

namespace {

// =======================================================================================
// [1] Shared helpers

// Q4_K's 12 scale bytes hold eight 6-bit scales and eight 6-bit mins (one pair per 32-element
// sub-block). Sub-blocks 0-3: low 6 bits of bytes 0-3 (scale) and 4-7 (min). Sub-blocks
// 4-7: low nibble (scale) / high nibble (min) of bytes 8-11, with their top two bits taken
// from the top two bits of bytes 0-3 (scale) / 4-7 (min). Done four bytes at a time.
// Byte j of the results is sub-block j's scale / min.
void unpack_k4_scales(const uint8_t* packed, uint64_t* scales, uint64_t* mins) {
    const uint32_t w0 = load_u32(packed), w1 = load_u32(packed + 4), w2 = load_u32(packed + 8);
    const uint32_t sc_lo = w0 & 0x3f3f3f3fu;
    const uint32_t mn_lo = w1 & 0x3f3f3f3fu;
    const uint32_t sc_hi = (w2 & 0x0f0f0f0fu) | ((w0 >> 2) & 0x30303030u);
    const uint32_t mn_hi = ((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 2) & 0x30303030u);
    *scales = sc_lo | (static_cast<uint64_t>(sc_hi) << 32);
    *mins = mn_lo | (static_cast<uint64_t>(mn_hi) << 32);
}

uint8_t byte_of(uint64_t v, int j) { return static_cast<uint8_t>(v >> (8 * j)); }

// sums[b] = x[32b] + ... + x[32b+31], for the types whose algebra needs sum x per block.
void block_sums(const float* x, int64_t n_blocks, float* sums) {
    for (int64_t b = 0; b < n_blocks; ++b, x += 32) {
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        for (int i = 0; i < 32; i += 4) {
            s0 += x[i];
            s1 += x[i + 1];
            s2 += x[i + 2];
            s3 += x[i + 3];
        }
        sums[b] = (s0 + s1) + (s2 + s3);
    }
}

bool needs_block_sums(GgmlType type) { return type == GgmlType::Q4_1 || type == GgmlType::Q4_K; }

// =======================================================================================
// [2] Scalar kernels: the dot product of one row (n_blocks blocks) with x.

float dot_f32_scalar(const uint8_t* row, int64_t n, const float* x, const float*) {
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float w[4];
        std::memcpy(w, row + 4 * i, sizeof w);
        s0 += w[0] * x[i];
        s1 += w[1] * x[i + 1];
        s2 += w[2] * x[i + 2];
        s3 += w[3] * x[i + 3];
    }
    for (; i < n; ++i) {
        float w;
        std::memcpy(&w, row + 4 * i, sizeof w);
        s0 += w * x[i];
    }
    return (s0 + s1) + (s2 + s3);
}

// fp16 and bf16 rows: two running sums; only the element conversion differs.
template <float (*load)(const uint8_t*)>
float dot_half_scalar(const uint8_t* row, int64_t n, const float* x, const float*) {
    float s0 = 0.0f, s1 = 0.0f;
    int64_t i = 0;
    for (; i + 2 <= n; i += 2) {
        s0 += load(row + 2 * i) * x[i];
        s1 += load(row + 2 * i + 2) * x[i + 1];
    }
    for (; i < n; ++i) s0 += load(row + 2 * i) * x[i];
    return s0 + s1;
}

// Q4_0: fp16 d, 16 bytes; byte j holds element j (low nibble) and j+16 (high).
float dot_q4_0_scalar(const uint8_t* row, int64_t n_blocks, const float* x, const float*) {
    float acc = 0.0f;
    for (int64_t b = 0; b < n_blocks; ++b, row += 18, x += 32) {
        const uint8_t* qs = row + 2;
        float s0 = 0.0f, s1 = 0.0f;
        for (int j = 0; j < 16; ++j) {
            s0 += static_cast<float>((qs[j] & 0x0f) - 8) * x[j];
            s1 += static_cast<float>((qs[j] >> 4) - 8) * x[j + 16];
        }
        acc += load_fp16(row) * (s0 + s1);
    }
    return acc;
}

// Q4_1: fp16 d, fp16 m, 16 nibble bytes as Q4_0.
float dot_q4_1_scalar(const uint8_t* row, int64_t n_blocks, const float* x, const float* sums) {
    float acc = 0.0f, acc_m = 0.0f;
    for (int64_t b = 0; b < n_blocks; ++b, row += 20, x += 32) {
        const uint8_t* qs = row + 4;
        float s0 = 0.0f, s1 = 0.0f;
        for (int j = 0; j < 16; ++j) {
            s0 += static_cast<float>(qs[j] & 0x0f) * x[j];
            s1 += static_cast<float>(qs[j] >> 4) * x[j + 16];
        }
        acc += load_fp16(row) * (s0 + s1);
        acc_m += load_fp16(row + 2) * sums[b];
    }
    return acc + acc_m;
}

// Q8_0: fp16 d, 32 int8.
float dot_q8_0_scalar(const uint8_t* row, int64_t n_blocks, const float* x, const float*) {
    float acc = 0.0f;
    for (int64_t b = 0; b < n_blocks; ++b, row += 34, x += 32) {
        const int8_t* qs = reinterpret_cast<const int8_t*>(row + 2);
        float s0 = 0.0f, s1 = 0.0f;
        for (int j = 0; j < 32; j += 2) {
            s0 += static_cast<float>(qs[j]) * x[j];
            s1 += static_cast<float>(qs[j + 1]) * x[j + 1];
        }
        acc += load_fp16(row) * (s0 + s1);
    }
    return acc;
}

// Q4_K: fp16 d, fp16 dmin, 12 scale bytes, 128 nibble bytes; 64-element group g uses bytes
// 32g..32g+31, low nibbles = sub-block 2g, high nibbles = sub-block 2g+1.
float dot_q4_k_scalar(const uint8_t* row, int64_t n_blocks, const float* x, const float* sums) {
    float acc = 0.0f, acc_min = 0.0f;
    for (int64_t b = 0; b < n_blocks; ++b, row += 144, x += 256, sums += 8) {
        const float d = load_fp16(row), dmin = load_fp16(row + 2);
        uint64_t scales, mins;
        unpack_k4_scales(row + 4, &scales, &mins);
        const uint8_t* qs = row + 16;
        for (int g = 0; g < 4; ++g) {
            float s_lo = 0.0f, s_hi = 0.0f;
            for (int l = 0; l < 32; ++l) {
                s_lo += static_cast<float>(qs[32 * g + l] & 0x0f) * x[64 * g + l];
                s_hi += static_cast<float>(qs[32 * g + l] >> 4) * x[64 * g + 32 + l];
            }
            acc += (d * byte_of(scales, 2 * g)) * s_lo;
            acc += (d * byte_of(scales, 2 * g + 1)) * s_hi;
        }
        float m = 0.0f;
        for (int j = 0; j < 8; ++j) m += static_cast<float>(byte_of(mins, j)) * sums[j];
        acc_min += dmin * m;
    }
    return acc - acc_min;
}

// Q6_K: ql[128] low nibbles, qh[64] high bit pairs, int8 scales[16], fp16 d. In each
// 128-element half, element l + 32k (l < 32) takes nibble (k&1 ? ql[l+32] : ql[l]) >> (k/2*4)
// and bits 2k..2k+1 of qh[l]; element e of the block uses scale e / 16.
float dot_q6_k_scalar(const uint8_t* row, int64_t n_blocks, const float* x, const float*) {
    float acc = 0.0f;
    for (int64_t b = 0; b < n_blocks; ++b, row += 210) {
        const uint8_t* ql = row;
        const uint8_t* qh = row + 128;
        const int8_t* sc = reinterpret_cast<const int8_t*>(row + 192);
        const float d = load_fp16(row + 208);
        for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, x += 128) {
            for (int run = 0; run < 2; ++run) { // l in [16 run, 16 run + 16)
                float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                for (int l = 16 * run; l < 16 * run + 16; ++l) {
                    const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    s[0] += static_cast<float>(q1) * x[l];
                    s[1] += static_cast<float>(q2) * x[l + 32];
                    s[2] += static_cast<float>(q3) * x[l + 64];
                    s[3] += static_cast<float>(q4) * x[l + 96];
                }
                for (int k = 0; k < 4; ++k) acc += (d * static_cast<float>(sc[run + 2 * k])) * s[k];
            }
        }
    }
    return acc;
}

// =======================================================================================
// [3] AVX2+FMA+F16C kernels. Every multiply-add is an explicit FMA intrinsic, so the
//     compiler's contraction settings cannot change results.

#if KVSCOPE_X86

KVSCOPE_AVX2 inline __m256i u8x8_to_i32(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

KVSCOPE_AVX2 inline __m256i s8x8_to_i32(const uint8_t* p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

KVSCOPE_AVX2 inline __m256 to_float(__m256i v) { return _mm256_cvtepi32_ps(v); }

// Two fp16 at p, p+2 -> lanes 0, 1 (lanes 2, 3 zero).
KVSCOPE_AVX2 inline __m128 fp16x2(const uint8_t* p) {
    return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(load_u32(p))));
}

KVSCOPE_AVX2 inline __m128 fp16x1(const uint8_t* p) {
    return _mm_cvtph_ps(_mm_cvtsi32_si128(load_u16(p)));
}

KVSCOPE_AVX2 float dot_f32_avx2(const uint8_t* row, int64_t n, const float* x, const float*) {
    const float* w = reinterpret_cast<const float*>(row);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float acc = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; ++i) {
        float wi;
        std::memcpy(&wi, row + 4 * i, sizeof wi);
        acc = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(wi), _mm_set_ss(x[i]), _mm_set_ss(acc)));
    }
    return acc;
}

// Eight fp16 / bf16 values to eight floats (both conversions are exact).
KVSCOPE_AVX2 inline __m256 widen_fp16(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
KVSCOPE_AVX2 inline __m256 widen_bf16(const uint8_t* p) {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
}

// fp16 and bf16 rows: two accumulators of eight; only the widening differs.
template <__m256 (*widen)(const uint8_t*), float (*load)(const uint8_t*)>
KVSCOPE_AVX2 float dot_half_avx2(const uint8_t* row, int64_t n, const float* x, const float*) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(widen(row + 2 * i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(widen(row + 2 * i + 16), _mm256_loadu_ps(x + i + 8), a1);
    }
    float acc = hsum(_mm256_add_ps(a0, a1));
    for (; i < n; ++i)
        acc = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(load(row + 2 * i)), _mm_set_ss(x[i]), _mm_set_ss(acc)));
    return acc;
}

// sum over one 32-element block of nibble q * x: bytes [0,8) and [8,16) of qs hold elements
// 0-7 / 8-15 (low nibbles) and 16-23 / 24-31 (high nibbles). `bias` is subtracted from q.
KVSCOPE_AVX2 inline __m256 nibble_block_dot(const uint8_t* qs, const float* x, __m256i bias) {
    const __m256i low4 = _mm256_set1_epi32(0x0f);
    const __m256i b0 = u8x8_to_i32(qs), b1 = u8x8_to_i32(qs + 8);
    __m256 s = _mm256_mul_ps(to_float(_mm256_sub_epi32(_mm256_and_si256(b0, low4), bias)), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(to_float(_mm256_sub_epi32(_mm256_and_si256(b1, low4), bias)), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(to_float(_mm256_sub_epi32(_mm256_srli_epi32(b0, 4), bias)), _mm256_loadu_ps(x + 16), s);
    s = _mm256_fmadd_ps(to_float(_mm256_sub_epi32(_mm256_srli_epi32(b1, 4), bias)), _mm256_loadu_ps(x + 24), s);
    return s;
}

KVSCOPE_AVX2 inline __m256 nibble_block_dot_unsigned(const uint8_t* qs, const float* x) {
    const __m256i low4 = _mm256_set1_epi32(0x0f);
    const __m256i b0 = u8x8_to_i32(qs), b1 = u8x8_to_i32(qs + 8);
    __m256 s = _mm256_mul_ps(to_float(_mm256_and_si256(b0, low4)), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(to_float(_mm256_and_si256(b1, low4)), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(to_float(_mm256_srli_epi32(b0, 4)), _mm256_loadu_ps(x + 16), s);
    s = _mm256_fmadd_ps(to_float(_mm256_srli_epi32(b1, 4)), _mm256_loadu_ps(x + 24), s);
    return s;
}

// Q4_0, Q4_1 and Q8_0 are read by one per-block step each, which both the one-row and the
// two-row drivers call in the same order for every row (blocks alternate between two
// accumulators to shorten the FMA dependency chain), so a row's result does not depend
// on whether it was computed alone or beside another. Two rows at a time share the x
// loads and give the out-of-order core two independent streams.

struct Acc {
    __m256 even, odd; // blocks 0, 2, 4... / 1, 3, 5...
    __m128 m_even, m_odd; // Q4_1's m * sum x, in lane 1
};

KVSCOPE_AVX2 inline void acc_zero(Acc& a) {
    a.even = a.odd = _mm256_setzero_ps();
    a.m_even = a.m_odd = _mm_setzero_ps();
}

KVSCOPE_AVX2 inline float acc_total(const Acc& a) {
    return hsum(_mm256_add_ps(a.even, a.odd)) + _mm_cvtss_f32(_mm_movehdup_ps(_mm_add_ps(a.m_even, a.m_odd)));
}

KVSCOPE_AVX2 inline void step_q4_0(const uint8_t* blk, const float* x, const float*, int64_t, __m256& acc, __m128&) {
    acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(fp16x1(blk)), nibble_block_dot(blk + 2, x, _mm256_set1_epi32(8)), acc);
}

// Q4_1: [d, m] * [sum x, sum x] puts m * sum x in lane 1 of acc_m (lane 0 is ignored).
KVSCOPE_AVX2 inline void step_q4_1(const uint8_t* blk, const float* x, const float* sums, int64_t b, __m256& acc,
                                  __m128& acc_m) {
    const __m128 dm = fp16x2(blk);
    acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), nibble_block_dot_unsigned(blk + 4, x), acc);
    acc_m = _mm_fmadd_ps(dm, _mm_broadcast_ss(sums + b), acc_m);
}

KVSCOPE_AVX2 inline __m256 q8_block_dot(const uint8_t* qs, const float* x) {
    __m256 s = _mm256_mul_ps(to_float(s8x8_to_i32(qs)), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(to_float(s8x8_to_i32(qs + 8)), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(to_float(s8x8_to_i32(qs + 16)), _mm256_loadu_ps(x + 16), s);
    s = _mm256_fmadd_ps(to_float(s8x8_to_i32(qs + 24)), _mm256_loadu_ps(x + 24), s);
    return s;
}

KVSCOPE_AVX2 inline void step_q8_0(const uint8_t* blk, const float* x, const float*, int64_t, __m256& acc, __m128&) {
    acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(fp16x1(blk)), q8_block_dot(blk + 2, x), acc);
}

// One row: y = row . x.
template <int kBlockBytes, void (*kStep)(const uint8_t*, const float*, const float*, int64_t, __m256&, __m128&)>
KVSCOPE_AVX2 float dot1_blocks(const uint8_t* row, int64_t n_blocks, const float* x, const float* sums) {
    Acc a;
    acc_zero(a);
    int64_t b = 0;
    for (; b + 2 <= n_blocks; b += 2) {
        kStep(row + b * kBlockBytes, x + 32 * b, sums, b, a.even, a.m_even);
        kStep(row + (b + 1) * kBlockBytes, x + 32 * (b + 1), sums, b + 1, a.odd, a.m_odd);
    }
    if (b < n_blocks) kStep(row + b * kBlockBytes, x + 32 * b, sums, b, a.even, a.m_even);
    return acc_total(a);
}

// Two rows, row0 and row0 + row_bytes: y[0], y[1].
template <int kBlockBytes, void (*kStep)(const uint8_t*, const float*, const float*, int64_t, __m256&, __m128&)>
KVSCOPE_AVX2 void dot2_blocks(const uint8_t* row0, int64_t row_bytes, int64_t n_blocks, const float* x,
                              const float* sums, float* y) {
    const uint8_t* row1 = row0 + row_bytes;
    Acc a, c;
    acc_zero(a);
    acc_zero(c);
    int64_t b = 0;
    for (; b + 2 <= n_blocks; b += 2) {
        kStep(row0 + b * kBlockBytes, x + 32 * b, sums, b, a.even, a.m_even);
        kStep(row1 + b * kBlockBytes, x + 32 * b, sums, b, c.even, c.m_even);
        kStep(row0 + (b + 1) * kBlockBytes, x + 32 * (b + 1), sums, b + 1, a.odd, a.m_odd);
        kStep(row1 + (b + 1) * kBlockBytes, x + 32 * (b + 1), sums, b + 1, c.odd, c.m_odd);
    }
    if (b < n_blocks) {
        kStep(row0 + b * kBlockBytes, x + 32 * b, sums, b, a.even, a.m_even);
        kStep(row1 + b * kBlockBytes, x + 32 * b, sums, b, c.even, c.m_even);
    }
    y[0] = acc_total(a);
    y[1] = acc_total(c);
}

KVSCOPE_AVX2 float dot_q4_0_avx2(const uint8_t* row, int64_t n, const float* x, const float* sums) {
    return dot1_blocks<18, step_q4_0>(row, n, x, sums);
}
KVSCOPE_AVX2 float dot_q4_1_avx2(const uint8_t* row, int64_t n, const float* x, const float* sums) {
    return dot1_blocks<20, step_q4_1>(row, n, x, sums);
}
KVSCOPE_AVX2 float dot_q8_0_avx2(const uint8_t* row, int64_t n, const float* x, const float* sums) {
    return dot1_blocks<34, step_q8_0>(row, n, x, sums);
}
KVSCOPE_AVX2 void dot2_q4_0_avx2(const uint8_t* row, int64_t rb, int64_t n, const float* x, const float* sums, float* y) {
    dot2_blocks<18, step_q4_0>(row, rb, n, x, sums, y);
}
KVSCOPE_AVX2 void dot2_q4_1_avx2(const uint8_t* row, int64_t rb, int64_t n, const float* x, const float* sums, float* y) {
    dot2_blocks<20, step_q4_1>(row, rb, n, x, sums, y);
}
KVSCOPE_AVX2 void dot2_q8_0_avx2(const uint8_t* row, int64_t rb, int64_t n, const float* x, const float* sums, float* y) {
    dot2_blocks<34, step_q8_0>(row, rb, n, x, sums, y);
}

// Q4_K: per super-block, the eight d*scale factors go through a small array so each is
// one broadcast load; the mins part is one 8-lane product with the block sums of x.
KVSCOPE_AVX2 float dot_q4_k_avx2(const uint8_t* row, int64_t n_blocks, const float* x, const float* sums) {
    const __m256i low4 = _mm256_set1_epi32(0x0f);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc_min = acc0;
    alignas(32) float scale[8];
    for (int64_t b = 0; b < n_blocks; ++b, row += 144, x += 256, sums += 8) {
        const __m128 dd = fp16x2(row); // [d, dmin]
        uint64_t sc, mn;
        unpack_k4_scales(row + 4, &sc, &mn);
        const __m256 sc_f = to_float(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(sc))));
        const __m256 mn_f = to_float(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(mn))));
        _mm256_store_ps(scale, _mm256_mul_ps(_mm256_broadcastss_ps(dd), sc_f));
        const __m256 dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dd));
        acc_min = _mm256_fmadd_ps(dmin, _mm256_mul_ps(mn_f, _mm256_loadu_ps(sums)), acc_min);
        const uint8_t* qs = row + 16;
        for (int g = 0; g < 4; ++g, qs += 32) {
            const float* xg = x + 64 * g;
            __m256 s_lo = _mm256_setzero_ps(), s_hi = s_lo;
            for (int k = 0; k < 4; ++k) {
                const __m256i q = u8x8_to_i32(qs + 8 * k);
                s_lo = _mm256_fmadd_ps(to_float(_mm256_and_si256(q, low4)), _mm256_loadu_ps(xg + 8 * k), s_lo);
                s_hi = _mm256_fmadd_ps(to_float(_mm256_srli_epi32(q, 4)), _mm256_loadu_ps(xg + 32 + 8 * k), s_hi);
            }
            acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(scale + 2 * g), s_lo, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(scale + 2 * g + 1), s_hi, acc1);
        }
    }
    return hsum(_mm256_add_ps(acc0, acc1)) - hsum(acc_min);
}

KVSCOPE_AVX2 float dot_q6_k_avx2(const uint8_t* row, int64_t n_blocks, const float* x, const float*) {
    const __m256i low4 = _mm256_set1_epi32(0x0f), three = _mm256_set1_epi32(3);
    const __m256i twelve = _mm256_set1_epi32(12), high2 = _mm256_set1_epi32(0x30);
    const __m256i bias = _mm256_set1_epi32(32);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    alignas(32) float scale[16];
    for (int64_t b = 0; b < n_blocks; ++b, row += 210) {
        const __m256 d = _mm256_broadcastss_ps(fp16x1(row + 208));
        _mm256_store_ps(scale, _mm256_mul_ps(d, to_float(s8x8_to_i32(row + 192))));
        _mm256_store_ps(scale + 8, _mm256_mul_ps(d, to_float(s8x8_to_i32(row + 200))));
        const uint8_t* ql = row;
        const uint8_t* qh = row + 128;
        const float* sc = scale;
        for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, x += 128) {
            for (int run = 0; run < 2; ++run) {
                __m256 s1 = _mm256_setzero_ps(), s2 = s1, s3 = s1, s4 = s1;
                for (int l = 16 * run; l < 16 * run + 16; l += 8) {
                    const __m256i a = u8x8_to_i32(ql + l), c = u8x8_to_i32(ql + l + 32);
                    const __m256i h = u8x8_to_i32(qh + l);
                    const __m256i q1 = _mm256_or_si256(_mm256_and_si256(a, low4),
                                                       _mm256_slli_epi32(_mm256_and_si256(h, three), 4));
                    const __m256i q2 = _mm256_or_si256(_mm256_and_si256(c, low4),
                                                       _mm256_slli_epi32(_mm256_and_si256(h, twelve), 2));
                    const __m256i q3 = _mm256_or_si256(_mm256_srli_epi32(a, 4), _mm256_and_si256(h, high2));
                    const __m256i q4 = _mm256_or_si256(_mm256_srli_epi32(c, 4),
                                                       _mm256_and_si256(_mm256_srli_epi32(h, 2), high2));
                    s1 = _mm256_fmadd_ps(to_float(_mm256_sub_epi32(q1, bias)), _mm256_loadu_ps(x + l), s1);
                    s2 = _mm256_fmadd_ps(to_float(_mm256_sub_epi32(q2, bias)), _mm256_loadu_ps(x + l + 32), s2);
                    s3 = _mm256_fmadd_ps(to_float(_mm256_sub_epi32(q3, bias)), _mm256_loadu_ps(x + l + 64), s3);
                    s4 = _mm256_fmadd_ps(to_float(_mm256_sub_epi32(q4, bias)), _mm256_loadu_ps(x + l + 96), s4);
                }
                acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(sc + run), s1, acc0);
                acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(sc + run + 2), s2, acc1);
                acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(sc + run + 4), s3, acc0);
                acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(sc + run + 6), s4, acc1);
            }
        }
    }
    return hsum(_mm256_add_ps(acc0, acc1));
}

#endif // KVSCOPE_X86

// =======================================================================================
// [4] Row loops, generic path, validation, dispatch

// One row's dot product: the row's bytes, its length in blocks (elements for F32/F16/BF16),
// x, and the per-block sums of x (only for the types that use them).
using RowDot = float (*)(const uint8_t* row, int64_t n, const float* x, const float* sums);
// Two rows at once (row0 and row0 + row_bytes into y[0], y[1]), bit-identical to RowDot.
using RowDot2 = void (*)(const uint8_t* row0, int64_t row_bytes, int64_t n, const float* x, const float* sums,
                         float* y);

struct Kernel {
    RowDot one = nullptr;
    RowDot2 two = nullptr; // nullptr: rows one at a time
};

struct KernelSet {
    Kernel f32, f16, bf16, q4_0, q4_1, q8_0, q4_k, q6_k;
};

constexpr KernelSet kScalar = {{dot_f32_scalar},  {dot_half_scalar<load_fp16>},  {dot_half_scalar<load_bf16>}, {dot_q4_0_scalar},
                               {dot_q4_1_scalar}, {dot_q8_0_scalar}, {dot_q4_k_scalar}, {dot_q6_k_scalar}};
#if KVSCOPE_X86
constexpr KernelSet kAvx2 = {{dot_f32_avx2},
                             {dot_half_avx2<widen_fp16, load_fp16>},
                             {dot_half_avx2<widen_bf16, load_bf16>},
                             {dot_q4_0_avx2, dot2_q4_0_avx2},
                             {dot_q4_1_avx2, dot2_q4_1_avx2},
                             {dot_q8_0_avx2, dot2_q8_0_avx2},
                             {dot_q4_k_avx2},
                             {dot_q6_k_avx2}};
#endif

const Kernel* kernel_for(const KernelSet& set, GgmlType type) {
    switch (type) {
    case GgmlType::F32: return &set.f32;
    case GgmlType::F16: return &set.f16;
    case GgmlType::BF16: return &set.bf16;
    case GgmlType::Q4_0: return &set.q4_0;
    case GgmlType::Q4_1: return &set.q4_1;
    case GgmlType::Q8_0: return &set.q8_0;
    case GgmlType::Q4_K: return &set.q4_k;
    case GgmlType::Q6_K: return &set.q6_k;
    default: return nullptr;
    }
}

// Software prefetch a fixed distance ahead of the rows being read: the hardware prefetcher
// alone leaves DRAM bandwidth unused while the core is busy converting blocks. 2-4 KiB was
// best on the default model's shapes (Zen 3; 1 KiB and 8+ KiB were slower).
constexpr int64_t kPrefetchBytes = 4096;

class Prefetcher {
  public:
    Prefetcher(const uint8_t* begin, int64_t size)
        : begin_(begin), size_(size), next_(std::min<int64_t>(kPrefetchBytes, size)) {}
    // Call before reading bytes [.., upto): requests the lines up to upto + the distance.
    void before(int64_t upto) {
        const int64_t target = std::min<int64_t>(size_, upto + kPrefetchBytes);
        for (; next_ < target; next_ += 64) __builtin_prefetch(begin_ + next_);
    }

  private:
    const uint8_t* begin_;
    int64_t size_, next_;
};

// Per-thread scratch, grown (never shrunk) to the largest size a thread has needed.
struct Scratch {
    std::vector<float> sums; // per-block sums of x
    std::vector<float> row;  // one dequantized row (generic path)
};

float* grown(std::vector<float>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
}

const GgmlTypeInfo& checked_info(GgmlType type, int64_t row_bytes, int64_t row_begin, int64_t row_end,
                                 int64_t n_cols) {
    const GgmlTypeInfo* info = ggml_type_info(static_cast<uint32_t>(type));
    if (!info)
        throw std::invalid_argument("quant_matvec: unsupported ggml type id " +
                                    std::to_string(static_cast<uint32_t>(type)));
    if (n_cols < 0 || n_cols % info->block_elems != 0)
        throw std::invalid_argument("quant_matvec: " + std::to_string(n_cols) +
                                    " columns is not a whole number of " + info->name + " blocks");
    const int64_t needed = n_cols / info->block_elems * static_cast<int64_t>(info->block_bytes);
    if (row_bytes < needed)
        throw std::invalid_argument("quant_matvec: row_bytes " + std::to_string(row_bytes) + " < the " +
                                    std::to_string(needed) + " bytes of a " + info->name + " row of " +
                                    std::to_string(n_cols));
    if (row_begin < 0 || row_end < row_begin)
        throw std::invalid_argument("quant_matvec: bad row range [" + std::to_string(row_begin) + ", " +
                                    std::to_string(row_end) + ")");
    return *info;
}

} // namespace

bool quant_matvec_isa_supported(MatvecIsa isa) { return cpu_isa_supported(isa); }

MatvecIsa quant_matvec_isa() { return cpu_isa(); }

bool quant_matvec_has_kernel(GgmlType type) { return kernel_for(kScalar, type) != nullptr; }

void quant_matvec_with_isa(MatvecIsa isa, GgmlType type, const void* weights, int64_t row_bytes,
                           int64_t row_begin, int64_t row_end, int64_t n_cols, const float* x,
                           float* y) {
    const GgmlTypeInfo& info = checked_info(type, row_bytes, row_begin, row_end, n_cols);
    if (!quant_matvec_isa_supported(isa))
        throw std::invalid_argument("quant_matvec: this CPU lacks AVX2/FMA/F16C");
    if (row_begin == row_end) return;
    const KernelSet* set = &kScalar;
#if KVSCOPE_X86
    if (isa == MatvecIsa::Avx2) set = &kAvx2;
#endif
    thread_local Scratch scratch;
    const auto* base = static_cast<const uint8_t*>(weights);
    const int64_t n_blocks = n_cols / info.block_elems;

    if (const Kernel* kernel = kernel_for(*set, type)) {
        const float* sums = nullptr;
        if (needs_block_sums(type)) {
            float* s = grown(scratch.sums, n_cols / 32);
            block_sums(x, n_cols / 32, s);
            sums = s;
        }
        const uint8_t* first = base + row_begin * row_bytes;
        Prefetcher prefetch(first, (row_end - row_begin) * row_bytes);
        int64_t r = row_begin;
        if (kernel->two)
            for (; r + 2 <= row_end; r += 2) {
                prefetch.before((r + 2 - row_begin) * row_bytes);
                kernel->two(base + r * row_bytes, row_bytes, n_blocks, x, sums, y + r);
            }
        for (; r < row_end; ++r) {
            prefetch.before((r + 1 - row_begin) * row_bytes);
            y[r] = kernel->one(base + r * row_bytes, n_blocks, x, sums);
        }
        return;
    }
    // Generic: dequantize one row at a time, then an fp32 dot.
    float* buf = grown(scratch.row, n_cols);
    for (int64_t r = row_begin; r < row_end; ++r) {
        dequantize(type, base + r * row_bytes, buf, n_cols);
        y[r] = set->f32.one(reinterpret_cast<const uint8_t*>(buf), n_cols, x, nullptr);
    }
}

void quant_matvec(GgmlType type, const void* weights, int64_t row_bytes, int64_t row_begin,
                  int64_t row_end, int64_t n_cols, const float* x, float* y) {
    quant_matvec_with_isa(quant_matvec_isa(), type, weights, row_bytes, row_begin, row_end, n_cols, x, y);
}

} // namespace kvscope::kernels
