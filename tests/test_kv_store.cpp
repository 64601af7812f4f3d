// The paged KV store (core/kv_store.h) on CPU fp32 with synthetic queries, keys and values
// (no model). A shadow copy written here keeps, per (layer, KV head), the positions, keys,
// values and state the store should hold; attention is checked against plain softmax
// attention in double precision, written from the definition with loops over the shadow's
// slots (causal by original position, optional sliding window).
//
// [a] attention = naive reference (1e-5): prefill T>1, decode T=1, chunks after per-head
//     evictions, with and without a sliding window
// [b] attention mass: rows sum to the mass queries, equal the reference's column sums
// [c] bytes: pages x page_bytes, page counts, falling on eviction, free pages reused,
//     shrink_to_fit keeps contents and lowers reserved_bytes
// [d] evict() refuses bad row lists with kvscope::Error and leaves the store as it was
// [e] clone() is deep
// [f] per-slot state moves with its slot
// [g] moments: sums of A^2 and -A ln A over the mass queries equal the reference's
// [h] compensation: evicted keys and values fold into one slot per head that attention
//     reads with logit q.mean_k/sqrt(d) + ln(count); dropping identical tokens changes
//     nothing; the slot costs one slot's bytes
#include "core/error.h"
#include "core/kv_store.h"
#include "core/model_config.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

using kvscope::KvStore;
using kvscope::ModelConfig;
using Kept = std::vector<std::vector<int64_t>>;

constexpr int64_t kLayers = 2, kHeads = 4, kKvHeads = 2, kDim = 16, kPage = 4;

ModelConfig tiny_config(int64_t sliding_window = 0) {
    ModelConfig c;
    c.n_layer = kLayers;
    c.n_head = kHeads;
    c.n_head_kv = kKvHeads;
    c.head_dim = kDim;
    c.n_embd = kHeads * kDim;
    c.n_ctx = 4096;
    c.sliding_window = sliding_window;
    return c;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The rows of layer l the store must evict so that head g keeps its slots kept[g] (indices
// into its positions, which the tests think in).
Kept evicted_rows(const KvStore& store, int64_t l, const Kept& kept) {
    Kept rows(kept.size());
    for (size_t g = 0; g < kept.size() && int64_t(g) < store.n_head_kv(); ++g) {
        std::set<int32_t> keep;
        for (int64_t s : kept[g]) keep.insert(store.positions(l, int64_t(g))[size_t(s)]);
        const std::vector<int32_t>& row_pos = store.row_positions(l, int64_t(g));
        for (size_t r = 0; r < row_pos.size(); ++r)
            if (row_pos[r] >= 0 && !keep.count(row_pos[r])) rows[g].push_back(int64_t(r));
    }
    return rows;
}

// What the store should hold: per (layer, KV head) positions, keys, values (double) and state.
struct Shadow {
    struct Head {
        std::vector<int64_t> pos;
        std::vector<std::vector<double>> k, v, state;
        std::vector<double> comp_k = std::vector<double>(size_t(kDim), 0.0), comp_v = comp_k; // sums of the evicted
        int64_t comp_n = 0;
    };
    std::vector<Head> heads = std::vector<Head>(size_t(kLayers * kKvHeads));
    int64_t n_past = 0;
    int64_t n_state = 0;
    bool compensate = false;

    Head& at(int64_t l, int64_t g) { return heads[size_t(l * kKvHeads + g)]; }
    const Head& at(int64_t l, int64_t g) const { return heads[size_t(l * kKvHeads + g)]; }

    void append(int64_t l, const at::Tensor& k, const at::Tensor& v) {
        const int64_t T = k.size(1);
        auto ka = k.accessor<float, 3>();
        auto va = v.accessor<float, 3>();
        for (int64_t g = 0; g < kKvHeads; ++g)
            for (int64_t t = 0; t < T; ++t) {
                Head& h = at(l, g);
                h.pos.push_back(n_past + t);
                std::vector<double> kr(kDim), vr(kDim);
                for (int64_t i = 0; i < kDim; ++i) {
                    kr[size_t(i)] = ka[g][t][i];
                    vr[size_t(i)] = va[g][t][i];
                }
                h.k.push_back(kr);
                h.v.push_back(vr);
                h.state.push_back(std::vector<double>(size_t(n_state), 0.0));
            }
    }

    void keep(int64_t l, const Kept& kept) {
        for (int64_t g = 0; g < kKvHeads; ++g) {
            Head& h = at(l, g);
            Head n;
            for (int64_t s : kept[size_t(g)]) {
                n.pos.push_back(h.pos[size_t(s)]);
                n.k.push_back(h.k[size_t(s)]);
                n.v.push_back(h.v[size_t(s)]);
                n.state.push_back(h.state[size_t(s)]);
            }
            n.comp_k = h.comp_k, n.comp_v = h.comp_v, n.comp_n = h.comp_n;
            for (size_t s = 0; s < h.pos.size() && compensate; ++s) {
                if (std::find(kept[size_t(g)].begin(), kept[size_t(g)].end(), int64_t(s)) != kept[size_t(g)].end()) continue;
                for (int64_t i = 0; i < kDim; ++i) {
                    n.comp_k[size_t(i)] += h.k[s][size_t(i)];
                    n.comp_v[size_t(i)] += h.v[s][size_t(i)];
                }
                ++n.comp_n;
            }
            h = std::move(n);
        }
    }
};

// Plain softmax attention over the shadow's slots of layer l for the step's queries
// q [n_head, T, d] at positions n_past .. n_past+T-1 (the step's keys already appended).
// out [n_head, T, d]; mass [n_head, n_slots of h's KV head]: column sums over the last
// mass_queries queries, and sq and entropy the same of A^2 and -A ln A. A head that
// evicted with compensation on has one more key, the mean of what it evicted, with its
// logit raised by ln(count).
struct Columns {
    std::vector<std::vector<double>> mass, sq, entropy; // [head][slot]
};
void naive_attention(const Shadow& sh, int64_t l, const at::Tensor& q, int64_t n_past, int64_t window,
                     int64_t mass_queries, std::vector<std::vector<std::vector<double>>>& out, Columns& columns) {
    const int64_t T = q.size(1), group = kHeads / kKvHeads;
    auto qa = q.accessor<float, 3>();
    out.assign(size_t(kHeads), std::vector<std::vector<double>>(size_t(T), std::vector<double>(size_t(kDim), 0.0)));
    columns.mass.assign(size_t(kHeads), {});
    columns.sq.assign(size_t(kHeads), {});
    columns.entropy.assign(size_t(kHeads), {});
    for (int64_t h = 0; h < kHeads; ++h) {
        const Shadow::Head& head = sh.at(l, h / group);
        const size_t n = head.pos.size();
        for (auto* c : {&columns.mass, &columns.sq, &columns.entropy}) (*c)[size_t(h)].assign(n, 0.0);
        // Slot n: the compensation slot, when the head has one.
        std::vector<std::vector<double>> keys = head.k, values = head.v;
        std::vector<double> bias(n, 0.0);
        if (head.comp_n > 0) {
            std::vector<double> mk(static_cast<size_t>(kDim)), mv(static_cast<size_t>(kDim));
            for (int64_t i = 0; i < kDim; ++i) {
                mk[size_t(i)] = head.comp_k[size_t(i)] / double(head.comp_n);
                mv[size_t(i)] = head.comp_v[size_t(i)] / double(head.comp_n);
            }
            keys.push_back(mk);
            values.push_back(mv);
            bias.push_back(std::log(double(head.comp_n)));
        }
        const size_t m = keys.size();
        for (int64_t t = 0; t < T; ++t) {
            const int64_t p = n_past + t;
            std::vector<double> score(m, 0.0);
            std::vector<bool> visible(m, true);
            double best = -INFINITY;
            for (size_t s = 0; s < m; ++s) {
                if (s < n) visible[s] = head.pos[s] <= p && (window <= 0 || head.pos[s] > p - window);
                if (!visible[s]) continue;
                double dot = 0;
                for (int64_t i = 0; i < kDim; ++i) dot += double(qa[h][t][i]) * keys[s][size_t(i)];
                score[s] = dot / std::sqrt(double(kDim)) + bias[s];
                best = std::max(best, score[s]);
            }
            double z = 0;
            for (size_t s = 0; s < m; ++s)
                if (visible[s]) z += std::exp(score[s] - best);
            for (size_t s = 0; s < m; ++s) {
                if (!visible[s]) continue;
                const double prob = std::exp(score[s] - best) / z;
                for (int64_t i = 0; i < kDim; ++i) out[size_t(h)][size_t(t)][size_t(i)] += prob * values[s][size_t(i)];
                if (s < n && t >= T - mass_queries) {
                    columns.mass[size_t(h)][s] += prob;
                    columns.sq[size_t(h)][s] += prob * prob;
                    columns.entropy[size_t(h)][s] -= prob * std::log(prob);
                }
            }
        }
    }
}

// A store, its shadow and a random source; every step goes through every layer, then commits.
struct Harness {
    int64_t window;
    KvStore store;
    Shadow shadow;
    at::Generator gen = at::detail::createCPUGenerator(1234);
    double max_out_err = 0, max_mass_err = 0;

    explicit Harness(int64_t sliding_window = 0, int64_t n_state = 0, at::ScalarType dtype = at::kFloat,
                     bool compensate = false)
        : window(sliding_window), store(tiny_config(sliding_window), at::kCPU, dtype, kPage) {
        if (n_state > 0) store.set_state_channels(n_state);
        shadow.n_state = n_state;
        store.set_compensate(compensate);
        shadow.compensate = compensate;
    }

    at::Tensor randn(at::IntArrayRef shape) { return at::randn(shape, gen, at::kFloat); }

    // One step of T tokens; checks the output (and the mass, when the store records it)
    // of every layer against the naive reference.
    void step(int64_t T) {
        const int64_t w = store.mass_window();
        const int64_t mq = w < 0 ? T : std::min(w, T);
        std::vector<Columns> ref_columns(kLayers);
        for (int64_t l = 0; l < kLayers; ++l) {
            at::Tensor q = randn({kHeads, T, kDim}).mul_(1.5), k = randn({kKvHeads, T, kDim}), v = randn({kKvHeads, T, kDim});
            at::Tensor out = store.attend(l, q, k, v);
            shadow.append(l, k, v);
            std::vector<std::vector<std::vector<double>>> ref;
            naive_attention(shadow, l, q, shadow.n_past, window, mq, ref, ref_columns[size_t(l)]);

            ASSERT_EQ(out.sizes(), q.sizes());
            auto oa = out.accessor<float, 3>();
            for (int64_t h = 0; h < kHeads; ++h)
                for (int64_t t = 0; t < T; ++t)
                    for (int64_t i = 0; i < kDim; ++i) {
                        const double err = std::abs(double(oa[h][t][i]) - ref[size_t(h)][size_t(t)][size_t(i)]);
                        max_out_err = std::max(max_out_err, err);
                        ASSERT_LT(err, 1e-5) << "layer " << l << " head " << h << " query " << t << " dim " << i
                                             << " (n_past " << shadow.n_past << ", T " << T << ")";
                    }
        }
        check_columns(mq, store.mass(), ref_columns, &Columns::mass, "mass");
        auto [sq, entropy] = store.moments();
        if (sq.defined()) {
            check_columns(mq, sq, ref_columns, &Columns::sq, "sum A^2");
            check_columns(mq, entropy, ref_columns, &Columns::entropy, "sum -A ln A");
        }
        store.commit(T);
        shadow.n_past += T;
        check_contents();
    }

    // Every layer's mass (or moment) of the step, per slot in position order, against the
    // naive one's.
    void check_columns(int64_t mq, const at::Tensor& m, const std::vector<Columns>& ref_columns,
                       std::vector<std::vector<double>> Columns::*which, const char* what) {
        if (mq == 0) {
            EXPECT_FALSE(m.defined());
            return;
        }
        ASSERT_TRUE(m.defined());
        ASSERT_EQ(m.sizes(), (at::IntArrayRef{kLayers, kHeads, store.max_rows()}));
        auto ma = m.accessor<float, 3>();
        for (int64_t l = 0; l < kLayers; ++l)
            for (int64_t h = 0; h < kHeads; ++h) {
                const int64_t g = h / (kHeads / kKvHeads);
                const std::vector<int32_t>& row_pos = store.row_positions(l, g);
                const std::vector<double>& ref = (ref_columns[size_t(l)].*which)[size_t(h)];
                double row = 0;
                for (int64_t r = 0; r < m.size(2); ++r) {
                    row += ma[l][h][r];
                    if (r >= int64_t(row_pos.size()) || row_pos[size_t(r)] < 0) {
                        EXPECT_EQ(ma[l][h][r], 0.0f) << what << ": row " << r << " of layer " << l << " head " << h << " holds no token";
                        continue;
                    }
                    const double err = std::abs(double(ma[l][h][r]) - ref[size_t(slot_of(l, g, row_pos[size_t(r)]))]);
                    max_mass_err = std::max(max_mass_err, err);
                    ASSERT_LT(err, 1e-5) << what << ", layer " << l << " head " << h << " row " << r;
                }
                // Mass: each query's row sums to 1 over the slots, less the compensation slot's share.
                if (which == &Columns::mass && shadow.at(l, g).comp_n == 0) {
                    EXPECT_NEAR(row, double(mq), 1e-4) << "mass row of layer " << l << " head " << h;
                }
            }
    }

    void keep(int64_t l, const Kept& kept) {
        store.evict(l, evicted_rows(store, l, kept));
        shadow.keep(l, kept);
        check_contents();
    }

    // Index of `position` among the shadow's slots of (l, g).
    int64_t slot_of(int64_t l, int64_t g, int64_t position) const {
        const std::vector<int64_t>& pos = shadow.at(l, g).pos;
        return std::lower_bound(pos.begin(), pos.end(), position) - pos.begin();
    }

    // Positions, keys, values and state equal the shadow's, bit for bit, row by row.
    void check_contents() {
        ASSERT_EQ(store.n_past(), shadow.n_past);
        for (int64_t l = 0; l < kLayers; ++l) {
            // (float32 values stored in another dtype come back exactly as float32)
            at::Tensor K = store.keys(l).to(at::kFloat), V = store.values(l).to(at::kFloat), P = store.positions_tensor()[l];
            const int64_t R = store.max_rows();
            ASSERT_EQ(K.sizes(), (at::IntArrayRef{kKvHeads, R, kDim}));
            ASSERT_EQ(P.sizes(), (at::IntArrayRef{kKvHeads, R}));
            at::Tensor St = store.state_channels() > 0 ? store.state(l) : at::zeros({kKvHeads, R, 0});
            auto ka = K.accessor<float, 3>();
            auto va = V.accessor<float, 3>();
            auto pa = P.accessor<int32_t, 2>();
            auto sa = St.accessor<float, 3>();
            for (int64_t g = 0; g < kKvHeads; ++g) {
                const Shadow::Head& h = shadow.at(l, g);
                const int64_t n = int64_t(h.pos.size());
                ASSERT_EQ(store.n_slots(l, g), n) << "layer " << l << " head " << g;
                const std::vector<int32_t>& pos = store.positions(l, g);
                ASSERT_EQ(std::vector<int64_t>(pos.begin(), pos.end()), h.pos) << "layer " << l << " head " << g;
                const std::vector<int32_t>& row_pos = store.row_positions(l, g);
                int64_t held = 0;
                for (int64_t r = 0; r < R; ++r) {
                    ASSERT_EQ(pa[g][r], r < int64_t(row_pos.size()) ? row_pos[size_t(r)] : -1) << "layer " << l << " head " << g << " row " << r;
                    if (pa[g][r] < 0) continue;
                    ++held;
                    const size_t s = size_t(slot_of(l, g, pa[g][r]));
                    ASSERT_LT(s, h.pos.size());
                    ASSERT_EQ(h.pos[s], pa[g][r]);
                    for (int64_t i = 0; i < kDim; ++i) {
                        ASSERT_EQ(ka[g][r][i], float(h.k[s][size_t(i)])) << "key, layer " << l << " head " << g << " row " << r;
                        ASSERT_EQ(va[g][r][i], float(h.v[s][size_t(i)])) << "value, layer " << l << " head " << g << " row " << r;
                    }
                    for (int64_t c = 0; c < shadow.n_state; ++c)
                        ASSERT_EQ(sa[g][r][c], float(h.state[s][size_t(c)]))
                            << "state, layer " << l << " head " << g << " row " << r << " channel " << c;
                }
                ASSERT_EQ(held, n) << "layer " << l << " head " << g;
            }
        }
    }
};

// Sorted random subset of [0, n) of size m.
std::vector<int64_t> random_subset(std::mt19937& rng, int64_t n, int64_t m) {
    std::vector<int64_t> all(static_cast<size_t>(n));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(size_t(m));
    std::sort(all.begin(), all.end());
    return all;
}

std::vector<int64_t> range(int64_t begin, int64_t end) {
    std::vector<int64_t> r;
    for (int64_t i = begin; i < end; ++i) r.push_back(i);
    return r;
}

// ---- [a] attention ----------------------------------------------------------------------

TEST(KvStoreAttention, MatchesNaiveReferenceBeforeAndAfterPerHeadEvictions) {
    Harness h;
    h.step(13); // prefill, causal inside the step
    for (int i = 0; i < 3; ++i) h.step(1); // decode
    std::mt19937 rng(7);
    // Per-head evictions that differ between heads and layers.
    const int64_t n = h.store.n_slots(0, 0);
    std::vector<int64_t> evens;
    for (int64_t s = 0; s < n; s += 2) evens.push_back(s);
    std::vector<int64_t> sinks_recent = {0, 1, 2};
    for (int64_t s = n - 4; s < n; ++s) sinks_recent.push_back(s);
    h.keep(0, {evens, sinks_recent});
    h.keep(1, {random_subset(rng, n, 5), range(0, n)});
    EXPECT_NE(h.store.n_slots(0, 0), h.store.n_slots(0, 1));
    EXPECT_NE(h.store.n_slots(1, 0), h.store.n_slots(1, 1));
    EXPECT_EQ(h.store.n_slots(0, 0), int64_t(evens.size()));
    EXPECT_EQ(h.store.n_slots(0, 1), 7);
    EXPECT_EQ(h.store.n_slots(1, 0), 5);
    EXPECT_EQ(h.store.n_slots(1, 1), n);
    EXPECT_EQ(h.store.max_rows(), n);

    for (int i = 0; i < 3; ++i) h.step(1);
    h.step(6); // a chunk after eviction: causal by original positions, gaps in the past
    // A second round, all four heads different, one head emptied entirely.
    h.keep(0, {random_subset(rng, h.store.n_slots(0, 0), 3), {}});
    h.keep(1, {range(0, h.store.n_slots(1, 0)), random_subset(rng, h.store.n_slots(1, 1), 9)});
    EXPECT_EQ(h.store.n_slots(0, 1), 0);
    std::set<int64_t> counts;
    for (int64_t l = 0; l < kLayers; ++l)
        for (int64_t g = 0; g < kKvHeads; ++g) counts.insert(h.store.n_slots(l, g));
    EXPECT_EQ(counts.size(), 4u) << "every (layer, head) should hold a different number of slots";
    h.step(1);
    h.step(5);
    for (int i = 0; i < 4; ++i) h.step(1);
    RecordProperty("max_abs_error", std::to_string(h.max_out_err));
}

TEST(KvStoreAttention, SlidingWindowMatchesNaiveReference) {
    Harness h(/*sliding_window=*/5);
    h.step(12);
    h.step(1);
    h.step(1);
    std::mt19937 rng(11);
    h.keep(0, {random_subset(rng, 14, 8), range(4, 14)});
    h.keep(1, {range(0, 14), random_subset(rng, 14, 6)});
    h.step(1);
    h.step(4);
    h.step(1);
    // Everything inside the window evicted for one head: only the step's own key is visible.
    h.keep(0, {range(0, 2), range(0, h.store.n_slots(0, 1))});
    h.step(1);
    h.step(3);
}

// Other dtypes take the ATen path (attend_reference, the GPU fallback): the same checks
// with a double-precision store.
TEST(KvStoreAttention, AtenPathMatchesNaiveReference) {
    for (int64_t window : {0, 6}) {
        Harness h(window, 0, at::kDouble);
        h.store.set_mass_window(-1);
        h.step(11);
        h.step(1);
        std::mt19937 rng(17);
        h.keep(0, {random_subset(rng, 12, 5), range(0, 12)});
        h.keep(1, {range(6, 12), random_subset(rng, 12, 9)});
        h.store.set_mass_window(2);
        h.step(1);
        h.step(4);
        h.keep(0, {range(0, 3), random_subset(rng, h.store.n_slots(0, 1), 2)});
        h.step(1);
    }
}

// ---- [b] mass ---------------------------------------------------------------------------

TEST(KvStoreMass, RowsSumToMassQueriesAndEqualReferenceColumnSums) {
    Harness h;
    EXPECT_EQ(h.store.mass_window(), 0);
    h.step(9); // no statistics asked for: mass undefined (checked in step)
    h.store.set_mass_window(4);
    h.step(10); // the last 4 queries
    h.step(1);  // decode: min(4, 1) = 1
    h.store.set_mass_window(-1);
    h.step(7); // every query
    std::mt19937 rng(3);
    h.keep(0, {random_subset(rng, h.store.n_slots(0, 0), 11), range(0, 20)});
    h.keep(1, {range(3, 27), random_subset(rng, 27, 13)});
    h.store.set_mass_window(3);
    h.step(1);
    h.step(8);
    h.store.set_mass_window(100); // more than T: all of them
    h.step(5);
    h.store.set_mass_window(0);
    h.step(2);
}

// ---- [c] bytes --------------------------------------------------------------------------

void expect_bytes_are_pages(const KvStore& s) {
    const int64_t page_bytes = 2 * kPage * kDim * int64_t(sizeof(float));
    ASSERT_EQ(s.page_bytes(), page_bytes);
    int64_t total = 0;
    for (int64_t l = 0; l < kLayers; ++l) {
        int64_t layer = 0;
        for (int64_t g = 0; g < kKvHeads; ++g) {
            const int64_t pages = ceil_div(s.n_slots(l, g), kPage);
            EXPECT_EQ(s.bytes(l, g), pages * page_bytes) << "layer " << l << " head " << g << ", " << s.n_slots(l, g) << " slots";
            layer += s.bytes(l, g);
        }
        EXPECT_EQ(s.bytes(l), layer);
        total += layer;
    }
    EXPECT_EQ(s.bytes(), total);
}

TEST(KvStoreBytes, PagesTimesPageBytesFallingOnEvictionReusingFreePages) {
    Harness h;
    EXPECT_EQ(h.store.bytes(), 0);
    h.step(40); // 10 pages per head
    expect_bytes_are_pages(h.store);
    EXPECT_EQ(h.store.bytes(0, 0), 10 * h.store.page_bytes());
    const int64_t full = h.store.bytes(), reserved = h.store.reserved_bytes();
    EXPECT_GE(reserved, full);

    // Page counts at the edges: 0, 1, page_size, page_size + 1 slots.
    h.keep(0, {{}, {5}});
    h.keep(1, {range(0, kPage), range(10, 10 + kPage + 1)});
    expect_bytes_are_pages(h.store);
    EXPECT_EQ(h.store.bytes(0, 0), 0);
    EXPECT_EQ(h.store.bytes(0, 1), h.store.page_bytes());
    EXPECT_EQ(h.store.bytes(1, 0), h.store.page_bytes());
    EXPECT_EQ(h.store.bytes(1, 1), 2 * h.store.page_bytes());
    EXPECT_LT(h.store.bytes(), full);
    EXPECT_EQ(h.store.reserved_bytes(), reserved) << "keep() must not grow the pool";

    // Append back to 40 slots per head at most: the freed pages are reused.
    h.step(35); // heads hold 35, 36, 39, 40 slots: 34 new pages <= the 36 freed
    expect_bytes_are_pages(h.store);
    EXPECT_EQ(h.store.reserved_bytes(), reserved) << "appending after eviction must reuse the free pages";

    // Evict and append again, one token at a time (decode).
    for (int64_t l = 0; l < kLayers; ++l) h.keep(l, {range(0, 12), range(3, 20)});
    const int64_t before = h.store.bytes();
    EXPECT_LT(before, full);
    for (int i = 0; i < 20; ++i) {
        h.step(1);
        expect_bytes_are_pages(h.store);
    }
    EXPECT_EQ(h.store.reserved_bytes(), reserved);
    EXPECT_GT(h.store.bytes(), before);

    // Every single-slot eviction lowers bytes exactly when it empties a page.
    for (int64_t l = 0; l < kLayers; ++l)
        for (int64_t g = 0; g < kKvHeads; ++g) {
            while (h.store.n_slots(l, g) > 0) {
                const int64_t n = h.store.n_slots(l, g), b = h.store.bytes(l, g);
                Kept kept(static_cast<size_t>(kKvHeads));
                for (int64_t o = 0; o < kKvHeads; ++o) kept[size_t(o)] = range(0, h.store.n_slots(l, o));
                kept[size_t(g)] = range(1, n); // drop the oldest
                h.keep(l, kept);
                EXPECT_EQ(h.store.bytes(l, g), ((n - 1) % kPage == 0 ? b - h.store.page_bytes() : b));
            }
            expect_bytes_are_pages(h.store);
        }
    EXPECT_EQ(h.store.bytes(), 0);
    EXPECT_EQ(h.store.reserved_bytes(), reserved);
    h.step(3); // still usable when empty
}

TEST(KvStoreBytes, ShrinkToFitKeepsContentsAndLowersReservedBytes) {
    Harness h(0, /*n_state=*/2);
    h.store.set_mass_window(-1);
    h.step(50);
    std::mt19937 rng(5);
    // State values to follow through the shrink.
    for (int64_t l = 0; l < kLayers; ++l) {
        at::Tensor st = h.randn({kKvHeads, h.store.max_rows(), 2});
        h.store.write_state(st, l);
        for (int64_t g = 0; g < kKvHeads; ++g) // no evictions yet: row s holds slot s
            for (int64_t s = 0; s < h.store.n_slots(l, g); ++s)
                for (int64_t c = 0; c < 2; ++c) h.shadow.at(l, g).state[size_t(s)][size_t(c)] = st[g][s][c].item<float>();
    }
    // Keep late slots of the later heads, so their pages sit at the end of the pool.
    h.keep(0, {random_subset(rng, 50, 3), range(44, 50)});
    h.keep(1, {random_subset(rng, 50, 9), range(30, 35)});
    const int64_t bytes = h.store.bytes(), reserved = h.store.reserved_bytes();
    std::vector<at::Tensor> keys, values, positions, state;
    for (int64_t l = 0; l < kLayers; ++l) {
        keys.push_back(h.store.keys(l));
        values.push_back(h.store.values(l));
        positions.push_back(h.store.positions_tensor()[l]);
        state.push_back(h.store.state(l));
    }
    h.store.shrink_to_fit();
    EXPECT_LT(h.store.reserved_bytes(), reserved);
    EXPECT_EQ(h.store.bytes(), bytes);
    expect_bytes_are_pages(h.store);
    // Used pages (+ the padding page) and nothing more: rows of k, v, positions and state.
    const int64_t used_pages = 1 + bytes / h.store.page_bytes();
    EXPECT_EQ(h.store.reserved_bytes(), used_pages * kPage * (2 * kDim * 4 + 4 + 2 * 4));
    for (int64_t l = 0; l < kLayers; ++l) {
        EXPECT_TRUE(h.store.keys(l).equal(keys[size_t(l)]));
        EXPECT_TRUE(h.store.values(l).equal(values[size_t(l)]));
        EXPECT_TRUE(h.store.positions_tensor()[l].equal(positions[size_t(l)]));
        EXPECT_TRUE(h.store.state(l).equal(state[size_t(l)]));
    }
    h.check_contents();
    // And it keeps working: attention, growth, further evictions and shrinking.
    h.step(1);
    h.step(9);
    h.keep(0, {range(0, 2), random_subset(rng, h.store.n_slots(0, 1), 4)});
    h.store.shrink_to_fit();
    h.check_contents();
    expect_bytes_are_pages(h.store);
    h.step(1);
    h.store.shrink_to_fit(); // nothing to give back: a no-op
    h.check_contents();
    h.step(2);
}

// ---- [d] bad evict() --------------------------------------------------------------------

TEST(KvStoreEvict, RefusesBadRowListsAndLeavesTheStoreUsable) {
    Harness h;
    h.step(10);
    h.keep(1, {range(1, 10), range(0, 9)}); // layer 1: row 0 of head 0 and row 9 of head 1 are holes
    const int64_t bytes = h.store.bytes(), reserved = h.store.reserved_bytes();
    const std::vector<std::pair<int64_t, Kept>> bad = {
        {0, {range(0, 10)}},                   // one list for two heads
        {0, {{}, {}, {}}},                     // three lists
        {0, {{3, 3}, {}}},                     // a row twice
        {0, {{}, {1, 10}}},                    // past the end
        {0, {{-1}, {}}},                       // negative
        {1, {{0}, {}}},                        // a hole
        {1, {{2, 4}, {9}}},                    // head 0 fine, head 1 a hole
    };
    for (size_t i = 0; i < bad.size(); ++i) {
        EXPECT_THROW(h.store.evict(bad[i].first, bad[i].second), kvscope::Error) << "bad list " << i;
        // Nothing changed: contents, bytes and attention.
        h.check_contents();
        EXPECT_EQ(h.store.bytes(), bytes) << "bad list " << i;
        EXPECT_EQ(h.store.reserved_bytes(), reserved) << "bad list " << i;
    }
    try {
        h.store.evict(1, {{0}, {}});
    } catch (const kvscope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("layer 1 head 0: row 0 is not a distinct row holding a token"), std::string::npos)
            << e.what();
    }
    h.step(1);
    h.step(4);
    h.keep(0, {{0, 2, 4}, range(0, 15)});
    h.step(1);
}

// ---- [e] clone --------------------------------------------------------------------------

TEST(KvStoreClone, IsDeep) {
    Harness h(0, /*n_state=*/1);
    h.store.set_mass_window(-1);
    h.step(20);
    h.keep(0, {range(0, 20), range(5, 20)});
    h.step(1);

    KvStore copy = h.store.clone();
    Shadow copy_shadow = h.shadow;
    EXPECT_EQ(copy.bytes(), h.store.bytes());
    EXPECT_EQ(copy.n_past(), h.store.n_past());
    EXPECT_TRUE(copy.keys().equal(h.store.keys()));
    EXPECT_TRUE(copy.mass().equal(h.store.mass()));
    const at::Tensor mass = h.store.mass().clone();
    const int64_t bytes = h.store.bytes(), reserved = h.store.reserved_bytes();

    // Mutate the copy every way there is: attend (writes pools and mass), evict (moves rows
    // within pages the original also names), write_state, shrink_to_fit, commit.
    {
        Harness other; // for the random tensors
        for (int64_t l = 0; l < kLayers; ++l)
            copy.attend(l, other.randn({kHeads, 3, kDim}), other.randn({kKvHeads, 3, kDim}).mul_(9),
                        other.randn({kKvHeads, 3, kDim}).mul_(9));
        copy.commit(3);
        copy.evict(0, evicted_rows(copy, 0, {{1, 3, 5, 7, 20, 21}, {0, 2, 4, 6}}));
        copy.evict(1, evicted_rows(copy, 1, {range(10, 24), {0}}));
        for (int64_t l = 0; l < kLayers; ++l)
            copy.write_state(at::full({kKvHeads, copy.max_rows(), 1}, 42.0f), l);
        copy.shrink_to_fit();
        copy.clear();
        EXPECT_EQ(copy.bytes(), 0);
    }
    EXPECT_EQ(h.store.bytes(), bytes);
    EXPECT_EQ(h.store.reserved_bytes(), reserved);
    EXPECT_TRUE(h.store.mass().equal(mass));
    h.check_contents();
    h.step(1); // the original still attends over exactly its own contents
    h.step(4);

    // And the other way round: a fresh clone follows its own shadow after the original changes.
    KvStore copy2 = h.store.clone();
    Shadow shadow2 = h.shadow;
    h.keep(0, {{0}, {1}});
    h.keep(1, {{0}, {1}});
    h.step(2);
    Harness follow;
    follow.store = std::move(copy2);
    follow.shadow = shadow2;
    follow.check_contents();
    follow.step(1);
    follow.step(3);
}

// ---- [f] state --------------------------------------------------------------------------

TEST(KvStoreState, ChannelsMoveWithTheirSlots) {
    constexpr int64_t C = 3;
    Harness h(0, C);
    EXPECT_EQ(h.store.state_channels(), C);
    h.step(14);
    // New slots start at zero (check_contents compared them with the shadow's zeros).
    // state[g, row, c] = 1000 g + 10 position + c + 100000 l
    auto closed_form = [](int64_t l, int64_t g, int64_t position, int64_t c) {
        return float(1000.0 * double(g) + 10.0 * double(position) + double(c) + 100000.0 * double(l));
    };
    auto write = [&](int64_t l) {
        at::Tensor st = at::zeros({kKvHeads, h.store.max_rows(), C});
        for (int64_t g = 0; g < kKvHeads; ++g) {
            const std::vector<int32_t>& row_pos = h.store.row_positions(l, g);
            for (size_t r = 0; r < row_pos.size(); ++r)
                for (int64_t c = 0; c < C && row_pos[r] >= 0; ++c) {
                    st[g][int64_t(r)][c] = closed_form(l, g, row_pos[r], c);
                    h.shadow.at(l, g).state[size_t(h.slot_of(l, g, row_pos[r]))][size_t(c)] = closed_form(l, g, row_pos[r], c);
                }
        }
        h.store.write_state(st, l);
    };
    write(0);
    write(1);
    h.check_contents();
    std::mt19937 rng(9);
    h.keep(0, {random_subset(rng, 14, 6), {0, 13}});
    h.keep(1, {range(7, 14), random_subset(rng, 14, 10)});
    for (int64_t l = 0; l < kLayers; ++l) // the closed form, independent of the shadow
        for (int64_t g = 0; g < kKvHeads; ++g) {
            at::Tensor st = h.store.state(l);
            const std::vector<int32_t>& row_pos = h.store.row_positions(l, g);
            for (size_t r = 0; r < row_pos.size(); ++r)
                for (int64_t c = 0; c < C && row_pos[r] >= 0; ++c)
                    EXPECT_EQ(st[g][int64_t(r)][c].item<float>(), closed_form(l, g, row_pos[r], c));
        }
    h.step(2); // appended slots: zero state, old slots unchanged (check_contents)
    for (int64_t l = 0; l < kLayers; ++l)
        for (int64_t g = 0; g < kKvHeads; ++g) {
            at::Tensor st = h.store.state(l);
            const std::vector<int32_t>& row_pos = h.store.row_positions(l, g);
            for (size_t r = 0; r < row_pos.size(); ++r) {
                if (row_pos[r] >= h.store.n_past() - 2) {
                    EXPECT_EQ(st[g][int64_t(r)].abs().sum().item<float>(), 0.0f);
                }
            }
        }
    // Through a second eviction with compaction inside pages, and a shrink.
    write(0);
    h.keep(0, {{1, 4, 7}, {0, 1, 3}});
    h.store.shrink_to_fit();
    h.check_contents();
    EXPECT_THROW(h.store.set_state_channels(-1), kvscope::Error);
}


// ---- [g] moments --------------------------------------------------------------------------

TEST(KvStoreMoments, SumsOfSquaresAndEntropyEqualTheReferencesOnBothPaths) {
    for (at::ScalarType dtype : {at::kFloat, at::kDouble}) { // the kernel path, then the ATen path
        Harness h(0, 0, dtype);
        h.store.set_moments(true);
        h.store.set_mass_window(4);
        h.step(10); // checked in step(): the last 4 queries' moments
        h.step(1);
        std::mt19937 rng(5);
        h.keep(0, {random_subset(rng, 11, 6), range(2, 11)});
        h.step(1);
        h.store.set_moments(false);
        h.step(1);
        EXPECT_FALSE(h.store.moments().first.defined());
    }
}

// ---- [h] compensation -----------------------------------------------------------------------

TEST(KvStoreCompensation, AttentionAndMassMatchTheReferenceWithTheSlot) {
    for (at::ScalarType dtype : {at::kFloat, at::kDouble}) {
        Harness h(0, 0, dtype, /*compensate=*/true);
        h.store.set_mass_window(-1);
        h.step(12);
        std::mt19937 rng(11);
        h.keep(0, {random_subset(rng, 12, 5), range(0, 12)}); // head 1 of layer 0 drops nothing: no slot
        h.keep(1, {range(4, 12), random_subset(rng, 12, 7)});
        EXPECT_EQ(h.store.compensated(0, 0), 7);
        EXPECT_EQ(h.store.compensated(0, 1), 0);
        EXPECT_EQ(h.store.compensated(1, 0), 4);
        h.step(1); // checked in step(): output and mass against attention with the slot
        h.step(3);
        h.keep(0, {range(0, 2), random_subset(rng, h.store.n_slots(0, 1), 9)});
        EXPECT_GT(h.shadow.at(0, 0).comp_n, 7);
        EXPECT_EQ(h.store.compensated(0, 0), h.shadow.at(0, 0).comp_n);
        h.step(1);
        KvStore copy = h.store.clone(); // the slots travel with a clone
        EXPECT_TRUE(at::equal(copy.compensation_keys(), h.store.compensation_keys()));
        h.store.clear();
        EXPECT_EQ(h.store.compensated(0, 0), 0);
        EXPECT_EQ(copy.compensated(0, 0), h.shadow.at(0, 0).comp_n);
    }
}

// RazorAttention's identity (METHODS.md §2.2): when every dropped token has the same key and
// value, the compensation slot stands for them exactly.
TEST(KvStoreCompensation, DroppingIdenticalTokensChangesNothing) {
    KvStore full(tiny_config(), at::kCPU, at::kFloat, kPage), cut(tiny_config(), at::kCPU, at::kFloat, kPage);
    cut.set_compensate(true);
    at::Generator gen = at::detail::createCPUGenerator(7);
    const int64_t T = 16;
    std::vector<at::Tensor> q(kLayers), k(kLayers), v(kLayers);
    for (int64_t l = 0; l < kLayers; ++l) {
        q[l] = at::randn({kHeads, T, kDim}, gen, at::kFloat);
        k[l] = at::randn({kKvHeads, T, kDim}, gen, at::kFloat);
        v[l] = at::randn({kKvHeads, T, kDim}, gen, at::kFloat);
        // Tokens 4..11 of every head: one key and one value.
        k[l].narrow(1, 4, 8).copy_(k[l].narrow(1, 4, 1).expand({kKvHeads, 8, kDim}));
        v[l].narrow(1, 4, 8).copy_(v[l].narrow(1, 4, 1).expand({kKvHeads, 8, kDim}));
        full.attend(l, q[l], k[l], v[l]);
        cut.attend(l, q[l], k[l], v[l]);
    }
    full.commit(T);
    cut.commit(T);
    const std::vector<int64_t> kept = {0, 1, 2, 3, 12, 13, 14, 15};
    for (int64_t l = 0; l < kLayers; ++l) cut.evict(l, evicted_rows(cut, l, {kept, kept}));
    const int64_t slot_bytes = 2 * kDim * int64_t(sizeof(float));
    EXPECT_EQ(cut.bytes(0, 0), ceil_div(8, kPage) * cut.page_bytes() + slot_bytes);
    EXPECT_EQ(cut.bytes(), kLayers * kKvHeads * (ceil_div(8, kPage) * cut.page_bytes() + slot_bytes));
    EXPECT_LT(cut.bytes(), full.bytes());
    for (int step = 0; step < 3; ++step)
        for (int64_t l = 0; l < kLayers; ++l) {
            at::Tensor qd = at::randn({kHeads, 1, kDim}, gen, at::kFloat).mul_(2);
            at::Tensor kd = at::randn({kKvHeads, 1, kDim}, gen, at::kFloat), vd = at::randn({kKvHeads, 1, kDim}, gen, at::kFloat);
            at::Tensor a = full.attend(l, qd, kd, vd), b = cut.attend(l, qd, kd, vd);
            EXPECT_LT((a - b).abs().max().item<double>(), 1e-6) << "step " << step << " layer " << l;
            if (l == kLayers - 1) full.commit(1), cut.commit(1);
        }
}

TEST(KvStoreCompensation, RefusedWithASlidingWindow) {
    KvStore store(tiny_config(8), at::kCPU, at::kFloat, kPage);
    EXPECT_THROW(store.set_compensate(true), kvscope::Error);
}

} // namespace
