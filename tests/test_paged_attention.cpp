// paged_attention_cpu tests: both instruction sets against a double-precision reference
// written here from the definition (kernels/paged_attention.h), with plain loops.
//
// [1] Random stores shaped like the real one after eviction: KV heads with different slot
//     counts, pages scattered over the pool out of order, positions with gaps, the step's
//     T new tokens appended to every head (so prefill is causal inside the step). Every
//     pool row no head lists, and the tail of each head's last page, is NaN: a kernel that
//     reads one gets NaN out. Window on and off, T = 1 and 37, mass_queries 0, 1 and T,
//     several head_dims (tails of the 8-lane loops) and GQA groups (tiles split at 8 rows).
// [2] Edge cases: holes (negative positions), queries that see nothing, an empty head, a
//     window of one, large scores.
// [3] Head ranges and threads: any split gives bit-identical results; rows outside the
//     range are not written. Bad arguments throw.
#include "kernels/paged_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using kvscope::kernels::AttentionQueries;
using kvscope::kernels::cpu_isa_supported;
using kvscope::kernels::CpuIsa;
using kvscope::kernels::KvDtype;
using kvscope::kernels::paged_attention_cpu;
using kvscope::kernels::paged_attention_cpu_with_isa;
using kvscope::kernels::PagedKv;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<CpuIsa> isas() {
    std::vector<CpuIsa> out{CpuIsa::Scalar};
    if (cpu_isa_supported(CpuIsa::Avx2)) out.push_back(CpuIsa::Avx2);
    return out;
}

std::string isa_name(CpuIsa isa) { return isa == CpuIsa::Avx2 ? "avx2" : "scalar"; }

// ---------------------------------------------------------------------------------------
// A store and the queries of one step

struct Shape {
    int64_t n_head, n_head_kv, head_dim, page_size;
    std::vector<int64_t> n_old; // per KV head: slots kept from earlier steps
    int64_t T;                  // new tokens this step (every head holds them too)
    int64_t window;
    float q_gain = 1.0f;        // > 1: peaked softmax (large scores)
    bool shuffle_slots = false; // positions out of slot order
};

struct Store {
    Shape shape;
    int64_t stride = 0;
    std::vector<float> k, v;
    std::vector<int32_t> positions, page_table, n_slots;
    std::vector<float> q;
    std::vector<int32_t> q_pos;

    PagedKv kv() const {
        PagedKv kv;
        kv.k = k.data();
        kv.v = v.data();
        kv.dtype = KvDtype::F32;
        kv.positions = positions.data();
        kv.page_table = page_table.data();
        kv.page_table_stride = stride;
        kv.page_size = shape.page_size;
        kv.n_slots = n_slots.data();
        kv.n_head_kv = shape.n_head_kv;
        kv.head_dim = shape.head_dim;
        return kv;
    }
    int64_t row(int64_t g, int64_t s) const {
        return int64_t(page_table[g * stride + s / shape.page_size]) * shape.page_size + s % shape.page_size;
    }
    int64_t max_slots() const { return *std::max_element(n_slots.begin(), n_slots.end()); }
};

Store make_store(const Shape& shape, std::mt19937& rng) {
    Store st;
    st.shape = shape;
    const int64_t G = shape.n_head_kv, D = shape.head_dim, ps = shape.page_size;
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);

    // Positions: each head keeps its own random subset of [0, P0), then the new tokens.
    const int64_t most_old = *std::max_element(shape.n_old.begin(), shape.n_old.end());
    const int64_t P0 = 2 * most_old + 5;
    std::vector<std::vector<int32_t>> pos(G);
    int64_t pages_total = 0, most_pages = 0;
    for (int64_t g = 0; g < G; ++g) {
        std::vector<int32_t> all(P0);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        pos[g].assign(all.begin(), all.begin() + shape.n_old[g]);
        std::sort(pos[g].begin(), pos[g].end());
        for (int64_t t = 0; t < shape.T; ++t) pos[g].push_back(int32_t(P0 + t));
        if (shape.shuffle_slots) std::shuffle(pos[g].begin(), pos[g].end(), rng);
        const int64_t pages = (int64_t(pos[g].size()) + ps - 1) / ps;
        pages_total += pages;
        most_pages = std::max(most_pages, pages);
    }

    // Pages: every id of a pool with three spare pages, handed out in random order.
    const int64_t capacity_pages = pages_total + 3;
    std::vector<int32_t> ids(capacity_pages);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    st.stride = most_pages + 1;
    st.page_table.assign(G * st.stride, std::numeric_limits<int32_t>::max() / 2); // unused: far out of the pool
    st.k.assign(capacity_pages * ps * D, kNaN);
    st.v.assign(capacity_pages * ps * D, kNaN);
    st.positions.assign(capacity_pages * ps, 0); // unread rows claim to be visible to all
    st.n_slots.resize(G);
    size_t next = 0;
    for (int64_t g = 0; g < G; ++g) {
        const int64_t n = int64_t(pos[g].size());
        st.n_slots[g] = int32_t(n);
        for (int64_t p = 0; p < (n + ps - 1) / ps; ++p) st.page_table[g * st.stride + p] = ids[next++];
        for (int64_t s = 0; s < n; ++s) {
            const int64_t r = st.row(g, s);
            st.positions[r] = pos[g][s];
            for (int64_t d = 0; d < D; ++d) {
                st.k[r * D + d] = uni(rng);
                st.v[r * D + d] = uni(rng);
            }
        }
    }
    st.q.resize(shape.n_head * shape.T * D);
    for (float& x : st.q) x = shape.q_gain * uni(rng);
    for (int64_t t = 0; t < shape.T; ++t) st.q_pos.push_back(int32_t(P0 + t));
    return st;
}

struct Result {
    std::vector<float> out, mass;
};

AttentionQueries queries(const Store& st, Result& res, int64_t mass_queries, int64_t mass_stride) {
    AttentionQueries qs;
    qs.q = st.q.data();
    qs.q_pos = st.q_pos.data();
    qs.n_head = st.shape.n_head;
    qs.T = st.shape.T;
    qs.window = st.shape.window;
    qs.scale = float(1.0 / std::sqrt(double(st.shape.head_dim)));
    qs.out = res.out.data();
    qs.mass = mass_queries > 0 ? res.mass.data() : nullptr;
    qs.mass_stride = mass_stride;
    qs.mass_queries = mass_queries;
    return qs;
}

constexpr float kOutSentinel = -12345.0f;
// Mass accumulates: start from a small power of two, so writes to entries that must stay
// untouched show, and the start adds no rounding to the added mass.
constexpr float kMassStart = 0x1p-10f;

Result run(CpuIsa isa, const Store& st, int64_t mass_queries, int64_t h_begin, int64_t h_end) {
    const int64_t S = st.max_slots() + 2; // the columns past n_slots must stay as they were
    Result res;
    res.out.assign(st.shape.n_head * st.shape.T * st.shape.head_dim, kOutSentinel);
    res.mass.assign(st.shape.n_head * S, kMassStart);
    paged_attention_cpu_with_isa(isa, st.kv(), queries(st, res, mass_queries, S), h_begin, h_end);
    return res;
}

// ---------------------------------------------------------------------------------------
// The reference: the definition, in double

struct Reference {
    std::vector<double> out;     // [n_head, T, D]
    std::vector<double> out_abs; // sum_s p_s |v_s,d|: the scale of out's rounding error
    std::vector<double> mass;    // [n_head, max_slots], added mass only
    std::vector<bool> sees_any;  // [n_head, T]
};

Reference reference(const Store& st, int64_t mass_queries) {
    const Shape& sh = st.shape;
    const int64_t D = sh.head_dim, S = st.max_slots() + 2, group = sh.n_head / sh.n_head_kv;
    const double scale = double(float(1.0 / std::sqrt(double(D))));
    Reference ref;
    ref.out.assign(sh.n_head * sh.T * D, 0.0);
    ref.out_abs.assign(sh.n_head * sh.T * D, 0.0);
    ref.mass.assign(sh.n_head * S, 0.0);
    ref.sees_any.assign(sh.n_head * sh.T, false);
    for (int64_t h = 0; h < sh.n_head; ++h) {
        const int64_t g = h / group, n = st.n_slots[g];
        for (int64_t t = 0; t < sh.T; ++t) {
            const double p = st.q_pos[t];
            std::vector<double> score(n, 0.0);
            std::vector<bool> visible(n, false);
            double best = -INFINITY;
            for (int64_t s = 0; s < n; ++s) {
                const int64_t r = st.row(g, s);
                const double pos = st.positions[r];
                visible[s] = pos >= 0 && pos <= p && (sh.window == 0 || pos > p - double(sh.window));
                if (!visible[s]) continue;
                double dot = 0.0;
                for (int64_t d = 0; d < D; ++d) dot += double(st.q[(h * sh.T + t) * D + d]) * double(st.k[r * D + d]);
                score[s] = scale * dot;
                best = std::max(best, score[s]);
            }
            if (best == -INFINITY) continue;
            ref.sees_any[h * sh.T + t] = true;
            double sum = 0.0;
            for (int64_t s = 0; s < n; ++s) sum += visible[s] ? std::exp(score[s] - best) : 0.0;
            for (int64_t s = 0; s < n; ++s) {
                if (!visible[s]) continue;
                const double prob = std::exp(score[s] - best) / sum;
                const int64_t r = st.row(g, s);
                for (int64_t d = 0; d < D; ++d) {
                    ref.out[(h * sh.T + t) * D + d] += prob * st.v[r * D + d];
                    ref.out_abs[(h * sh.T + t) * D + d] += prob * std::fabs(st.v[r * D + d]);
                }
                if (t >= sh.T - mass_queries) ref.mass[h * S + s] += prob;
            }
        }
    }
    return ref;
}

// out within rel_tol of sum p|v| (+ a tiny floor), mass within rel_tol of itself; rows
// past n_slots, and heads outside [h_begin, h_end), untouched.
void expect_matches(const Store& st, const Result& got, const Reference& ref, int64_t mass_queries, int64_t h_begin,
                    int64_t h_end, double rel_tol, const std::string& what) {
    const Shape& sh = st.shape;
    const int64_t D = sh.head_dim, S = st.max_slots() + 2, group = sh.n_head / sh.n_head_kv;
    int failures = 0;
    for (int64_t h = 0; h < sh.n_head && failures < 5; ++h) {
        const bool in = h >= h_begin && h < h_end;
        for (int64_t i = h * sh.T * D; i < (h + 1) * sh.T * D; ++i) {
            const double g = got.out[i];
            if (!in) {
                if (g != kOutSentinel && ++failures <= 5) ADD_FAILURE() << what << ": head " << h << " written";
                continue;
            }
            const double tol = rel_tol * ref.out_abs[i] + 1e-7;
            if (!(std::fabs(g - ref.out[i]) <= tol) && ++failures <= 5)
                ADD_FAILURE() << what << ": out[h=" << h << ", t=" << (i / D) % sh.T << ", d=" << i % D << "] = " << g
                              << ", reference " << ref.out[i] << " (tol " << tol << ")";
        }
        const int64_t n = st.n_slots[h / group];
        double total = 0.0;
        for (int64_t s = 0; s < S; ++s) {
            const double added = double(got.mass[h * S + s]) - kMassStart;
            if (!in || s >= n || mass_queries == 0) {
                if (got.mass[h * S + s] != kMassStart && ++failures <= 5)
                    ADD_FAILURE() << what << ": mass[" << h << ", " << s << "] written (n_slots " << n << ")";
                continue;
            }
            total += added;
            const double tol = rel_tol * ref.mass[h * S + s] + 1e-7;
            if (!(std::fabs(added - ref.mass[h * S + s]) <= tol) && ++failures <= 5)
                ADD_FAILURE() << what << ": mass[" << h << ", " << s << "] added " << added << ", reference "
                              << ref.mass[h * S + s];
        }
        if (in && mass_queries > 0) {
            int64_t seeing = 0;
            for (int64_t t = sh.T - mass_queries; t < sh.T; ++t) seeing += ref.sees_any[h * sh.T + t];
            EXPECT_NEAR(total, double(seeing), 1e-5 * double(mass_queries) + 1e-6 * double(S))
                << what << ": mass of head " << h << " should sum to the " << seeing << " queries that see keys";
        }
    }
    EXPECT_EQ(failures, 0) << what;
}

std::string describe(const Shape& sh, int64_t mass_queries, CpuIsa isa) {
    std::string s = isa_name(isa) + " n_head=" + std::to_string(sh.n_head) + "/" + std::to_string(sh.n_head_kv) +
                    " D=" + std::to_string(sh.head_dim) + " page=" + std::to_string(sh.page_size) +
                    " T=" + std::to_string(sh.T) + " window=" + std::to_string(sh.window) +
                    " mass_queries=" + std::to_string(mass_queries) + " slots";
    for (int64_t n : sh.n_old) s += " " + std::to_string(n);
    return s;
}

// ---------------------------------------------------------------------------------------
// [1] Random stores

TEST(PagedAttention, MatchesDoubleReference) {
    std::mt19937 rng(2024);
    struct Heads {
        int64_t n_head, n_head_kv;
        std::vector<int64_t> n_old;
    };
    const Heads heads[] = {
        {9, 3, {173, 40, 301}},    // SmolLM2's GQA
        {4, 1, {90}},              // one KV head
        {24, 2, {65, 129}},        // 12 query heads per KV head: tiles of 8 + 4
        {6, 6, {33, 0, 7, 100, 16, 58}}, // no GQA; one head empty (only the new tokens)
    };
    for (const Heads& hd : heads) {
        for (int64_t head_dim : {64, 20, 96}) {
            for (int64_t page_size : {16, 5}) {
                for (int64_t T : {1, 37}) {
                    for (int64_t window : {0, 50}) {
                        if (head_dim != 64 && page_size != 16) continue; // keep the count moderate
                        const Shape sh{hd.n_head, hd.n_head_kv, head_dim, page_size, hd.n_old, T, window};
                        const Store st = make_store(sh, rng);
                        for (int64_t mq : {int64_t{0}, int64_t{1}, T}) {
                            const Reference ref = reference(st, mq);
                            for (CpuIsa isa : isas()) {
                                const Result got = run(isa, st, mq, 0, sh.n_head);
                                expect_matches(st, got, ref, mq, 0, sh.n_head, 1e-5, describe(sh, mq, isa));
                            }
                        }
                    }
                }
            }
        }
    }
}

TEST(PagedAttention, PositionsOutOfSlotOrder) {
    std::mt19937 rng(7);
    Shape sh{9, 3, 64, 16, {80, 31, 150}, 37, 0};
    sh.shuffle_slots = true;
    for (int64_t window : {0, 20}) {
        sh.window = window;
        const Store st = make_store(sh, rng);
        const Reference ref = reference(st, sh.T);
        for (CpuIsa isa : isas())
            expect_matches(st, run(isa, st, sh.T, 0, sh.n_head), ref, sh.T, 0, sh.n_head, 1e-5,
                           "shuffled " + describe(sh, sh.T, isa));
    }
}

TEST(PagedAttention, LongDecodeContext) {
    std::mt19937 rng(11);
    const Shape sh{9, 3, 64, 16, {4000, 2500, 3100}, 1, 0};
    const Store st = make_store(sh, rng);
    const Reference ref = reference(st, 1);
    for (CpuIsa isa : isas())
        expect_matches(st, run(isa, st, 1, 0, sh.n_head), ref, 1, 0, sh.n_head, 1e-5, describe(sh, 1, isa));
}

// ---------------------------------------------------------------------------------------
// [2] Edge cases

TEST(PagedAttention, LargeScoresStayFinite) {
    // Scores up to ~|q||k|/8 ~ 250: exp would overflow without the max subtraction. The
    // scores' own fp32 rounding (~1e-7 of 250) moves probabilities by ~3e-5.
    std::mt19937 rng(5);
    Shape sh{9, 3, 64, 16, {60, 90, 120}, 37, 0};
    sh.q_gain = 40.0f;
    const Store st = make_store(sh, rng);
    const Reference ref = reference(st, sh.T);
    for (CpuIsa isa : isas())
        expect_matches(st, run(isa, st, sh.T, 0, sh.n_head), ref, sh.T, 0, sh.n_head, 1e-4, describe(sh, sh.T, isa));
}

TEST(PagedAttention, HolesAreNeverSeen) {
    // A negative position marks a slot the store emptied without refilling: its key and
    // value are still finite numbers, but no query sees it.
    std::mt19937 rng(6);
    for (int64_t window : {0, 40}) {
        const Shape sh{9, 3, 64, 16, {120, 60, 200}, 37, window};
        Store st = make_store(sh, rng);
        for (int64_t g = 0; g < sh.n_head_kv; ++g)
            for (int64_t s = 0; s < st.n_slots[g]; s += 3) st.positions[st.row(g, s)] = s % 2 ? -1 : -1000;
        const Reference ref = reference(st, sh.T);
        for (CpuIsa isa : isas())
            expect_matches(st, run(isa, st, sh.T, 0, sh.n_head), ref, sh.T, 0, sh.n_head, 1e-5,
                           "holes " + describe(sh, sh.T, isa));
    }
}

TEST(PagedAttention, WindowOfOneSeesOnlyItself) {
    std::mt19937 rng(9);
    const Shape sh{4, 2, 64, 16, {30, 50}, 37, 1};
    const Store st = make_store(sh, rng);
    const Reference ref = reference(st, sh.T);
    for (CpuIsa isa : isas()) {
        const Result got = run(isa, st, sh.T, 0, sh.n_head);
        expect_matches(st, got, ref, sh.T, 0, sh.n_head, 1e-5, describe(sh, sh.T, isa));
        // out[h, t] is exactly the value of the slot holding position q_pos[t]
        for (int64_t h = 0; h < sh.n_head; ++h) {
            const int64_t g = h / 2, s = sh.n_old[g] + 5;
            for (int64_t d = 0; d < sh.head_dim; ++d)
                EXPECT_EQ(got.out[(h * sh.T + 5) * sh.head_dim + d], st.v[st.row(g, s) * sh.head_dim + d]);
        }
    }
}

TEST(PagedAttention, QueriesThatSeeNothingGetZeros) {
    std::mt19937 rng(3);
    Store st = make_store(Shape{4, 2, 64, 16, {30, 50}, 3, 0}, rng);
    st.n_slots[1] = 0; // an empty head
    st.q_pos[0] = -1;  // before every key
    for (CpuIsa isa : isas()) {
        const Result got = run(isa, st, 3, 0, 4);
        const Reference ref = reference(st, 3);
        expect_matches(st, got, ref, 3, 0, 4, 1e-5, "see nothing " + isa_name(isa));
        for (int64_t h = 0; h < 4; ++h)
            for (int64_t t = 0; t < 3; ++t) {
                if (h < 2 && t != 0) continue;
                for (int64_t d = 0; d < 64; ++d) EXPECT_EQ(got.out[(h * 3 + t) * 64 + d], 0.0f);
            }
    }
}

TEST(PagedAttention, NoQueriesIsANoOp) {
    std::mt19937 rng(4);
    Store st = make_store(Shape{2, 1, 8, 4, {10}, 1, 0}, rng);
    st.shape.T = 0;
    for (CpuIsa isa : isas()) {
        Result res;
        res.mass.assign(2 * 16, kMassStart);
        paged_attention_cpu_with_isa(isa, st.kv(), queries(st, res, 0, 16), 0, 2);
        for (float m : res.mass) EXPECT_EQ(m, kMassStart);
    }
}

// ---------------------------------------------------------------------------------------
// [3] Head ranges, threads, arguments

TEST(PagedAttention, AnyHeadSplitIsBitIdentical) {
    std::mt19937 rng(8);
    const Shape sh{9, 3, 64, 16, {120, 77, 200}, 37, 0};
    const Store st = make_store(sh, rng);
    for (CpuIsa isa : isas()) {
        const Result whole = run(isa, st, 5, 0, 9);
        // two ranges that cut KV heads apart, run on threads at once
        const int64_t S = st.max_slots() + 2;
        Result parts;
        parts.out.assign(whole.out.size(), kOutSentinel);
        parts.mass.assign(whole.mass.size(), kMassStart);
        const AttentionQueries qs = queries(st, parts, 5, S);
        const PagedKv kv = st.kv();
        std::vector<std::thread> threads;
        for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 1}, {1, 4}, {4, 5}, {5, 9}})
            threads.emplace_back([&, b = b, e = e] { paged_attention_cpu_with_isa(isa, kv, qs, b, e); });
        for (auto& t : threads) t.join();
        EXPECT_EQ(std::memcmp(whole.out.data(), parts.out.data(), whole.out.size() * 4), 0) << isa_name(isa);
        EXPECT_EQ(std::memcmp(whole.mass.data(), parts.mass.data(), whole.mass.size() * 4), 0) << isa_name(isa);

        // a range leaves the other heads alone
        const Result some = run(isa, st, 5, 2, 7);
        expect_matches(st, some, reference(st, 5), 5, 2, 7, 1e-5, "heads [2, 7) " + isa_name(isa));
    }
}

TEST(PagedAttention, DispatchingEntryPoint) {
    std::mt19937 rng(12);
    const Shape sh{9, 3, 64, 16, {50, 60, 70}, 1, 0};
    const Store st = make_store(sh, rng);
    const int64_t S = st.max_slots() + 2;
    Result res;
    res.out.assign(9 * 64, kOutSentinel);
    res.mass.assign(9 * S, kMassStart);
    paged_attention_cpu(st.kv(), queries(st, res, 1, S), 0, 9);
    expect_matches(st, res, reference(st, 1), 1, 0, 9, 1e-5, "paged_attention_cpu");
    std::printf("paged_attention_cpu runs on: %s\n", isa_name(kvscope::kernels::cpu_isa()).c_str());
}

TEST(PagedAttention, BadArgumentsThrow) {
    std::mt19937 rng(13);
    const Store st = make_store(Shape{4, 2, 16, 4, {10, 12}, 2, 0}, rng);
    const int64_t S = st.max_slots() + 2;
    Result res;
    res.out.assign(4 * 2 * 16, 0.0f);
    res.mass.assign(4 * S, 0.0f);
    const PagedKv kv = st.kv();
    const AttentionQueries qs = queries(st, res, 2, S);
    auto expect_throw = [&](PagedKv k, AttentionQueries q, int64_t b, int64_t e, const char* why) {
        EXPECT_THROW(paged_attention_cpu(k, q, b, e), std::invalid_argument) << why;
    };
    PagedKv k = kv;
    k.dtype = KvDtype::BF16;
    expect_throw(k, qs, 0, 4, "bf16 on the CPU");
    k = kv;
    k.page_size = 0;
    expect_throw(k, qs, 0, 4, "page_size 0");
    k = kv;
    k.v = nullptr;
    expect_throw(k, qs, 0, 4, "no values");
    AttentionQueries q = qs;
    q.n_head = 5;
    expect_throw(kv, q, 0, 4, "n_head not a multiple of n_head_kv");
    q = qs;
    q.mass_queries = 3;
    expect_throw(kv, q, 0, 4, "mass_queries > T");
    q = qs;
    q.mass_stride = 11;
    expect_throw(kv, q, 0, 4, "a head with more slots than mass_stride");
    expect_throw(kv, qs, 3, 2, "reversed head range");
    expect_throw(kv, qs, 0, 5, "head range past n_head");
    q = qs;
    q.out = nullptr;
    expect_throw(kv, q, 0, 4, "no output");
    paged_attention_cpu(kv, qs, 0, 4); // and the unchanged arguments are fine
}

} // namespace
