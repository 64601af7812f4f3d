// Paged attention on the CPU (see paged_attention.h).
//
// [SECTION] index
//   [1] Scalar kernels: scores of a run of key rows, max, exp-and-sum, value accumulation,
//       mass
//   [2] AVX2+FMA kernels: the same, with a vector exp
//   [3] Tiles: one walk over a KV head's pages for a tile of query rows
//   [4] Validation and dispatch
//
// How a call runs. Query rows (h, t) go in tiles of up to 8 that share a KV head: its query
// heads inside [head_begin, head_end) times a few queries (all three query heads of a
// SmolLM2 KV head in decode). A tile walks the head's pages once, in runs of consecutive
// pool rows small enough for L1 (a page, or part of a big one). Per run:
//   - which rows see which slots (one compare per distinct query, not per row);
//   - scores: each key row is dotted with every row's query while it is in L1;
//   - per row, online softmax: a running max m and sum l; when a run raises m, the row's
//     output accumulator and l are rescaled by exp(old m - new m);
//   - values: p = exp(score - m) weights the run's value rows into each row's accumulator.
// So keys and values stream from memory once per tile, side by side. At the end out =
// acc / l, and when the row adds mass, prob = exp(score - m) / l from the scores kept for
// the whole head (O(slots) per row; without mass only one run's scores are kept).
#include "kernels/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvscope::kernels {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kMaxRows = 8; // query rows per tile: one visibility byte per slot

// The inner loops, one set per instruction set.
struct Ops {
    // For j < count, r < n_rows: scores[r * stride + j] = scale * q[r] . k_j when bit r of
    // mask[j] is set, else -inf; k_j = k + j * dim.
    void (*scores)(const float* k, int64_t count, int64_t dim, const uint8_t* mask, const float* const* q,
                   int n_rows, float scale, float* scores, int64_t stride);
    // max_i s[i] (n >= 1).
    float (*max)(const float* s, int64_t n);
    // p[i] = exp(s[i] - m) (m >= every s[i], finite); returns sum p. exp(-inf) = 0 exactly.
    float (*exp_sum)(const float* s, int64_t n, float m, float* p);
    // acc[d] += sum_j p[j] * v_j[d], v_j = v + j * dim.
    void (*accumulate)(const float* v, int64_t count, int64_t dim, const float* p, float* acc);
    // mass[i] += exp(s[i] - m) * inv_l: invisible slots (-inf) add exactly 0.
    void (*add_mass)(const float* s, int64_t n, float m, float inv_l, float* mass);
};

// =======================================================================================
// [1] Scalar kernels (the portable twin)

float dot_scalar(const float* a, const float* b, int64_t n) {
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; ++i) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

void scores_scalar(const float* k, int64_t count, int64_t dim, const uint8_t* mask, const float* const* q,
                   int n_rows, float scale, float* scores, int64_t stride) {
    for (int64_t j = 0; j < count; ++j) {
        const float* kj = k + j * dim;
        for (int r = 0; r < n_rows; ++r)
            scores[r * stride + j] = (mask[j] >> r) & 1 ? scale * dot_scalar(kj, q[r], dim) : kNegInf;
    }
}

float max_scalar(const float* s, int64_t n) {
    float m = s[0];
    for (int64_t i = 1; i < n; ++i) m = std::max(m, s[i]);
    return m;
}

float exp_sum_scalar(const float* s, int64_t n, float m, float* p) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
        p[i] = std::exp(s[i] - m);
        sum += p[i];
    }
    return sum;
}

void accumulate_scalar(const float* v, int64_t count, int64_t dim, const float* p, float* acc) {
    for (int64_t j = 0; j < count; ++j) {
        const float pj = p[j];
        const float* vj = v + j * dim;
        for (int64_t d = 0; d < dim; ++d) acc[d] += pj * vj[d];
    }
}

void add_mass_scalar(const float* s, int64_t n, float m, float inv_l, float* mass) {
    for (int64_t i = 0; i < n; ++i) mass[i] += std::exp(s[i] - m) * inv_l;
}

constexpr Ops kScalar = {scores_scalar, max_scalar, exp_sum_scalar, accumulate_scalar, add_mass_scalar};

// =======================================================================================
// [2] AVX2+FMA kernels

#if KVSCOPE_X86

// Lane j = the sum of a[j]'s lanes (eight horizontal sums at once).
KVSCOPE_AVX2 inline __m256 hsum8x8(const __m256* a) {
    const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Slots one at a time: the key row is loaded once for all rows (any dim).
template <int kRows>
KVSCOPE_AVX2 void scores_each_avx2(const float* k, int64_t count, int64_t dim, const uint8_t* mask,
                                   const float* const* q, float scale, float* scores, int64_t stride) {
    for (int64_t j = 0; j < count; ++j) {
        const unsigned m = mask[j];
        if (m == 0) {
            for (int r = 0; r < kRows; ++r) scores[r * stride + j] = kNegInf;
            continue;
        }
        const float* kj = k + j * dim;
        __m256 acc[kRows];
        for (int r = 0; r < kRows; ++r) acc[r] = _mm256_setzero_ps();
        int64_t d = 0;
        for (; d + 8 <= dim; d += 8) {
            const __m256 kv = _mm256_loadu_ps(kj + d);
            for (int r = 0; r < kRows; ++r) acc[r] = _mm256_fmadd_ps(kv, _mm256_loadu_ps(q[r] + d), acc[r]);
        }
        for (int r = 0; r < kRows; ++r) {
            float s = hsum(acc[r]);
            for (int64_t e = d; e < dim; ++e) s = std::fma(kj[e], q[r][e], s);
            scores[r * stride + j] = (m >> r) & 1 ? scale * s : kNegInf;
        }
    }
}

// Eight slots at a time, per row: eight accumulators, then one transposing reduction
// instead of eight horizontal sums (dim a multiple of 8; the block's keys stay in L1).
template <int kRows>
KVSCOPE_AVX2 void scores_avx2_rows(const float* k, int64_t count, int64_t dim, const uint8_t* mask,
                                   const float* const* q, float scale, float* scores, int64_t stride) {
    const __m256 neg_inf = _mm256_set1_ps(kNegInf), vscale = _mm256_set1_ps(scale);
    int64_t j = 0;
    if (dim % 8 == 0) {
        for (; j + 8 <= count; j += 8) {
            uint64_t m8;
            std::memcpy(&m8, mask + j, 8);
            if (m8 == 0) {
                for (int r = 0; r < kRows; ++r) _mm256_storeu_ps(scores + r * stride + j, neg_inf);
                continue;
            }
            const float* kj = k + j * dim;
            const __m256i bits = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mask + j)));
            for (int r = 0; r < kRows; ++r) {
                __m256 acc[8];
                for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
                for (int64_t d = 0; d < dim; d += 8) {
                    const __m256 qv = _mm256_loadu_ps(q[r] + d);
                    for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(kj + i * dim + d), qv, acc[i]);
                }
                const __m256i bit = _mm256_set1_epi32(1 << r);
                const __m256 seen = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(bits, bit), bit));
                _mm256_storeu_ps(scores + r * stride + j,
                                 _mm256_blendv_ps(neg_inf, _mm256_mul_ps(hsum8x8(acc), vscale), seen));
            }
        }
    }
    if (j < count) {
        const float* qj[kRows];
        for (int r = 0; r < kRows; ++r) qj[r] = q[r];
        scores_each_avx2<kRows>(k + j * dim, count - j, dim, mask + j, qj, scale, scores + j, stride);
    }
}

KVSCOPE_AVX2 void scores_avx2(const float* k, int64_t count, int64_t dim, const uint8_t* mask, const float* const* q,
                              int n_rows, float scale, float* scores, int64_t stride) {
    switch (n_rows) {
    case 1: return scores_avx2_rows<1>(k, count, dim, mask, q, scale, scores, stride);
    case 2: return scores_avx2_rows<2>(k, count, dim, mask, q, scale, scores, stride);
    case 3: return scores_avx2_rows<3>(k, count, dim, mask, q, scale, scores, stride);
    case 4: return scores_avx2_rows<4>(k, count, dim, mask, q, scale, scores, stride);
    case 5: return scores_avx2_rows<5>(k, count, dim, mask, q, scale, scores, stride);
    case 6: return scores_avx2_rows<6>(k, count, dim, mask, q, scale, scores, stride);
    case 7: return scores_avx2_rows<7>(k, count, dim, mask, q, scale, scores, stride);
    default: return scores_avx2_rows<8>(k, count, dim, mask, q, scale, scores, stride);
    }
}

// exp(x) for x <= 0 (Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial;
// ~1 ulp). Below -87.3 the result is 0, for -inf too, so invisible slots weigh exactly 0.
KVSCOPE_AVX2 inline __m256 exp_nonpositive(__m256 x) {
    const __m256 lowest = _mm256_set1_ps(-87.33654f);
    const __m256 underflow = _mm256_cmp_ps(x, lowest, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lowest);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(underflow, _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n)));
}

KVSCOPE_AVX2 float max_avx2(const float* s, int64_t n) {
    int64_t i = 0;
    __m256 mv = _mm256_set1_ps(kNegInf);
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float m = _mm_cvtss_f32(m4);
    for (; i < n; ++i) m = std::max(m, s[i]);
    return m;
}

KVSCOPE_AVX2 float exp_sum_avx2(const float* s, int64_t n, float m, float* p) {
    const __m256 mb = _mm256_set1_ps(m);
    __m256 sum = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + i), mb));
        _mm256_storeu_ps(p + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    float total = hsum(sum);
    for (; i < n; ++i) {
        p[i] = std::exp(s[i] - m);
        total += p[i];
    }
    return total;
}

// kAcc registers of output (8 * kAcc columns of acc) held across the whole run.
template <int kAcc>
KVSCOPE_AVX2 inline void accumulate_cols_avx2(const float* v, int64_t count, int64_t dim, const float* p, float* acc) {
    __m256 a[kAcc];
    for (int i = 0; i < kAcc; ++i) a[i] = _mm256_loadu_ps(acc + 8 * i);
    for (int64_t j = 0; j < count; ++j) {
        const __m256 pj = _mm256_broadcast_ss(p + j);
        const float* vj = v + j * dim;
        for (int i = 0; i < kAcc; ++i) a[i] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8 * i), a[i]);
    }
    for (int i = 0; i < kAcc; ++i) _mm256_storeu_ps(acc + 8 * i, a[i]);
}

KVSCOPE_AVX2 void accumulate_avx2(const float* v, int64_t count, int64_t dim, const float* p, float* acc) {
    int64_t d = 0;
    for (; d + 64 <= dim; d += 64) accumulate_cols_avx2<8>(v + d, count, dim, p, acc + d);
    if (d + 32 <= dim) {
        accumulate_cols_avx2<4>(v + d, count, dim, p, acc + d);
        d += 32;
    }
    for (; d + 8 <= dim; d += 8) accumulate_cols_avx2<1>(v + d, count, dim, p, acc + d);
    for (; d < dim; ++d) {
        float a = acc[d];
        for (int64_t j = 0; j < count; ++j) a = std::fma(p[j], v[j * dim + d], a);
        acc[d] = a;
    }
}

KVSCOPE_AVX2 void add_mass_avx2(const float* s, int64_t n, float m, float inv_l, float* mass) {
    const __m256 mb = _mm256_set1_ps(m), inv = _mm256_set1_ps(inv_l);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 p = _mm256_mul_ps(exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + i), mb)), inv);
        _mm256_storeu_ps(mass + i, _mm256_add_ps(_mm256_loadu_ps(mass + i), p));
    }
    for (; i < n; ++i) mass[i] += std::exp(s[i] - m) * inv_l;
}

constexpr Ops kAvx2 = {scores_avx2, max_avx2, exp_sum_avx2, accumulate_avx2, add_mass_avx2};

#endif // KVSCOPE_X86

// =======================================================================================
// [3] Tiles

// Per-thread scratch, grown (never shrunk) to the largest size a thread has needed.
struct Scratch {
    std::vector<float> scores; // [rows, slots] with mass, else [rows, run]
    std::vector<float> p;      // [run]: one row's weights of one run
    std::vector<float> acc;    // [rows, head_dim]
    std::vector<uint8_t> mask; // [run]: bit r = row r sees the slot
};

template <typename T>
T* grown(std::vector<T>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
}

// The rows of the page that comes next: pages are scattered over the pool and the
// hardware prefetcher stops at 4 KiB boundaries, so without this every page starts with
// a full memory latency. Decode from DRAM ran ~20% faster with the next page's first
// 4 KiB of keys and of values requested (2 KiB or two pages ahead: no better).
void prefetch(const void* p, int64_t bytes) {
    const char* c = static_cast<const char*>(p);
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b);
}
constexpr int64_t kPrefetchBytes = 4096; // of each of the next page's keys and values

struct Tile {
    int64_t g;              // KV head
    int64_t h0, n_heads;    // query heads [h0, h0 + n_heads)
    int64_t t0, n_queries;  // queries [t0, t0 + n_queries)
};

void run_tile(const Ops& ops, const PagedKv& kv, const AttentionQueries& qs, const Tile& tile, Scratch& scratch) {
    const int64_t dim = kv.head_dim, ps = kv.page_size;
    const int64_t n = kv.n_slots[tile.g];
    const int32_t* pages = kv.page_table + tile.g * kv.page_table_stride;
    const auto* K = static_cast<const float*>(kv.k);
    const auto* V = static_cast<const float*>(kv.v);
    const int n_rows = static_cast<int>(tile.n_heads * tile.n_queries);
    const int nq = static_cast<int>(tile.n_queries);

    // Row r = (head h0 + r / nq, query t0 + r % nq). Query i is seen by the rows of
    // query_rows[i] when oldest[i] < pos <= newest[i].
    const float* q[kMaxRows];
    bool adds_mass[kMaxRows];
    for (int r = 0; r < n_rows; ++r) {
        const int64_t h = tile.h0 + r / nq, t = tile.t0 + r % nq;
        q[r] = static_cast<const float*>(qs.q) + (h * qs.T + t) * dim;
        adds_mass[r] = qs.mass && t >= qs.T - qs.mass_queries;
    }
    int64_t newest[kMaxRows], oldest[kMaxRows];
    unsigned query_rows[kMaxRows] = {};
    for (int i = 0; i < nq; ++i) {
        newest[i] = qs.q_pos[tile.t0 + i];
        oldest[i] = qs.window > 0 ? std::max<int64_t>(newest[i] - qs.window, -1) : -1; // position -1: a hole
        for (int r = i; r < n_rows; r += nq) query_rows[i] |= 1u << r;
    }
    const bool keep_scores = std::any_of(adds_mass, adds_mass + n_rows, [](bool b) { return b; });

    // Runs of consecutive pool rows: a page, or a piece of one that fits L1 (16 KiB of
    // values) so every row reuses it from there.
    const int64_t run = std::min(ps, std::max<int64_t>(8, 4096 / dim));
    const int64_t score_stride = keep_scores ? n : run;
    float* scores = grown(scratch.scores, n_rows * score_stride);
    float* p = grown(scratch.p, run);
    float* acc = grown(scratch.acc, n_rows * dim);
    uint8_t* mask = grown(scratch.mask, run);
    std::fill(acc, acc + n_rows * dim, 0.0f);
    float m[kMaxRows], l[kMaxRows];
    std::fill(m, m + n_rows, kNegInf);
    std::fill(l, l + n_rows, 0.0f);

    for (int64_t s0 = 0; s0 < n; s0 += ps) {
        const int64_t page_row = int64_t(pages[s0 / ps]) * ps, page_count = std::min(ps, n - s0);
        if (s0 + ps < n) {
            const int64_t next = int64_t(pages[s0 / ps + 1]) * ps;
            const int64_t bytes = std::min<int64_t>(kPrefetchBytes, ps * dim * 4);
            prefetch(K + next * dim, bytes);
            prefetch(V + next * dim, bytes);
            prefetch(kv.positions + next, std::min<int64_t>(ps * 4, 256));
        }
        for (int64_t c0 = 0; c0 < page_count; c0 += run) {
            const int64_t count = std::min(run, page_count - c0), row0 = page_row + c0;
            float* sc = scores + (keep_scores ? s0 + c0 : 0);
            unsigned any = 0;
            for (int64_t j = 0; j < count; ++j) {
                const int64_t pos = kv.positions[row0 + j];
                unsigned bits = 0;
                for (int i = 0; i < nq; ++i)
                    if (pos <= newest[i] && pos > oldest[i]) bits |= query_rows[i];
                mask[j] = static_cast<uint8_t>(bits);
                any |= bits;
            }
            if (any == 0) { // nobody sees the run (future tokens in prefill): no reads
                if (keep_scores)
                    for (int r = 0; r < n_rows; ++r) std::fill(sc + r * score_stride, sc + r * score_stride + count, kNegInf);
                continue;
            }
            ops.scores(K + row0 * dim, count, dim, mask, q, n_rows, qs.scale, sc, score_stride);
            for (int r = 0; r < n_rows; ++r) {
                if (!((any >> r) & 1)) continue;
                const float* sr = sc + r * score_stride;
                const float run_max = ops.max(sr, count);
                float* ar = acc + r * dim;
                if (run_max > m[r]) { // rescale what came before to the new max
                    const float c = std::exp(m[r] - run_max); // 0 on the first visible run
                    l[r] *= c;
                    for (int64_t d = 0; d < dim; ++d) ar[d] *= c;
                    m[r] = run_max;
                }
                l[r] += ops.exp_sum(sr, count, m[r], p);
                ops.accumulate(V + row0 * dim, count, dim, p, ar);
            }
        }
    }

    for (int r = 0; r < n_rows; ++r) {
        const int64_t h = tile.h0 + r / nq, t = tile.t0 + r % nq;
        float* out = static_cast<float*>(qs.out) + (h * qs.T + t) * dim;
        if (qs.lse) qs.lse[h * qs.T + t] = m[r] == kNegInf ? kNegInf : m[r] + std::log(l[r]);
        if (m[r] == kNegInf) { // sees nothing: zeros, no mass
            std::fill(out, out + dim, 0.0f);
            continue;
        }
        const float inv = 1.0f / l[r];
        for (int64_t d = 0; d < dim; ++d) out[d] = acc[r * dim + d] * inv;
        if (adds_mass[r]) ops.add_mass(scores + r * score_stride, n, m[r], inv, qs.mass + h * qs.mass_stride);
    }
}

// =======================================================================================
// [4] Validation and dispatch

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument("paged_attention: " + what); }

} // namespace

void check_paged_attention(const PagedKv& kv, const AttentionQueries& qs) {
    if (kv.n_head_kv <= 0 || kv.head_dim <= 0 || kv.page_size <= 0 || kv.page_table_stride < 0)
        fail("n_head_kv, head_dim and page_size must be positive, page_table_stride >= 0");
    if (!kv.k || !kv.v || !kv.positions || !kv.page_table || !kv.n_slots)
        fail("k, v, positions, page_table and n_slots are required");
    if (qs.n_head <= 0 || qs.n_head % kv.n_head_kv != 0)
        fail("n_head " + std::to_string(qs.n_head) + " is not a positive multiple of n_head_kv " +
             std::to_string(kv.n_head_kv));
    if (qs.T < 0 || qs.window < 0) fail("T and window must be >= 0");
    if (qs.T > 0 && (!qs.q || !qs.q_pos || !qs.out)) fail("q, q_pos and out are required");
    if (!std::isfinite(qs.scale)) fail("scale is not finite");
    if (qs.mass_queries < 0 || qs.mass_queries > qs.T)
        fail("mass_queries " + std::to_string(qs.mass_queries) + " is outside 0..T = " + std::to_string(qs.T));
    if (qs.mass && qs.mass_stride < 0) fail("mass_stride must be >= 0");
}

void paged_attention_cpu_with_isa(CpuIsa isa, const PagedKv& kv, const AttentionQueries& qs, int64_t head_begin,
                                  int64_t head_end) {
    check_paged_attention(kv, qs);
    if (kv.dtype != KvDtype::F32) fail("the CPU kernel reads F32 storage only");
    if (head_begin < 0 || head_end < head_begin || head_end > qs.n_head)
        fail("bad head range [" + std::to_string(head_begin) + ", " + std::to_string(head_end) + ")");
    for (int64_t g = 0; g < kv.n_head_kv; ++g) {
        const int64_t n = kv.n_slots[g];
        if (n < 0 || n > kv.page_table_stride * kv.page_size)
            fail("KV head " + std::to_string(g) + " holds " + std::to_string(n) + " slots, more than its page table");
        if (qs.mass && qs.mass_queries > 0 && n > qs.mass_stride)
            fail("KV head " + std::to_string(g) + " holds " + std::to_string(n) + " slots > mass_stride " +
                 std::to_string(qs.mass_stride));
    }
    if (!cpu_isa_supported(isa)) fail("this CPU lacks AVX2/FMA");
    const Ops* ops = &kScalar;
#if KVSCOPE_X86
    if (isa == CpuIsa::Avx2) ops = &kAvx2;
#endif
    if (qs.T == 0 || head_begin == head_end) return;

    thread_local Scratch scratch;
    const int64_t group = qs.n_head / kv.n_head_kv;
    for (int64_t g = head_begin / group; g * group < head_end; ++g) {
        const int64_t h_end = std::min(head_end, (g + 1) * group);
        for (int64_t h0 = std::max(head_begin, g * group); h0 < h_end; h0 += kMaxRows) {
            const int64_t n_heads = std::min<int64_t>(kMaxRows, h_end - h0);
            const int64_t n_queries = std::max<int64_t>(1, kMaxRows / n_heads);
            for (int64_t t0 = 0; t0 < qs.T; t0 += n_queries)
                run_tile(*ops, kv, qs, Tile{g, h0, n_heads, t0, std::min(n_queries, qs.T - t0)}, scratch);
        }
    }
}

void paged_attention_cpu(const PagedKv& kv, const AttentionQueries& qs, int64_t head_begin, int64_t head_end) {
    paged_attention_cpu_with_isa(cpu_isa(), kv, qs, head_begin, head_end);
}

} // namespace kvscope::kernels
