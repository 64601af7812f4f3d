// The views' data logic, without a window: folding long axes (the heatmaps' pooling keeps
// the max or the total), the attention trace's equal bins, memory cap and thinning and its
// copy to the UI, the kept sets two runs diff, and the selection's query head.
#include "views/snapshot.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

namespace kvscope {
namespace {

std::vector<float> RandomMatrix(int64_t rows, int64_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(0, 1);
    std::vector<float> m(size_t(rows * cols));
    for (float& v : m) v = u(rng);
    return m;
}

TEST(Fold, EveryItemLiesInItsCell) {
    for (int64_t n : {1, 7, 512, 1000, 1537})
        for (int64_t cells : {1, 3, 256, 512}) {
            if (cells > n) continue;
            for (int64_t i = 0; i < n; ++i) {
                const int64_t c = FoldCell(i, n, cells);
                ASSERT_LT(c, cells);
                EXPECT_LE(FoldStart(c, n, cells), i);
                EXPECT_LT(i, FoldStart(c + 1, n, cells));
            }
            EXPECT_EQ(FoldStart(cells, n, cells), n);
        }
}

TEST(PoolMatrix, MaxKeepsEachBlocksLargest) {
    const int64_t rows = 1000, cols = 777, out_r = 512, out_c = 300;
    const std::vector<float> m = RandomMatrix(rows, cols, 1);
    const std::vector<float> pooled = PoolMatrix(m.data(), rows, cols, out_r, out_c, Pool::Max);
    ASSERT_EQ(pooled.size(), size_t(out_r * out_c));
    EXPECT_EQ(*std::max_element(pooled.begin(), pooled.end()), *std::max_element(m.begin(), m.end()));
    for (int64_t r : {int64_t(0), int64_t(17), out_r - 1})
        for (int64_t c : {int64_t(0), int64_t(5), out_c - 1}) {
            float best = 0;
            for (int64_t i = FoldStart(r, rows, out_r); i < FoldStart(r + 1, rows, out_r); ++i)
                for (int64_t j = FoldStart(c, cols, out_c); j < FoldStart(c + 1, cols, out_c); ++j)
                    best = std::max(best, m[size_t(i * cols + j)]);
            EXPECT_EQ(pooled[size_t(r * out_c + c)], best) << r << "," << c;
        }
}

TEST(PoolMatrix, SumKeepsTheTotalMass) {
    const int64_t rows = 3, cols = 1000;
    const std::vector<float> m = RandomMatrix(rows, cols, 2);
    const std::vector<float> pooled = PoolMatrix(m.data(), rows, cols, 3, 256, Pool::Sum);
    for (int64_t r = 0; r < rows; ++r) {
        const double in = std::accumulate(m.begin() + r * cols, m.begin() + (r + 1) * cols, 0.0);
        const double out = std::accumulate(pooled.begin() + r * 256, pooled.begin() + (r + 1) * 256, 0.0);
        EXPECT_NEAR(in, out, 1e-3);
    }
}

TEST(PoolMatrix, NeverGrowsAndTakesEmptyInput) {
    const std::vector<float> m = RandomMatrix(4, 5, 3);
    EXPECT_EQ(PoolMatrix(m.data(), 4, 5, 512, 512, Pool::Max), m); // smaller than the cap: unchanged
    EXPECT_TRUE(PoolMatrix(nullptr, 0, 0, 512, 512, Pool::Max).empty());
    EXPECT_EQ(PoolMatrix(m.data(), 4, 5, 0, -3, Pool::Sum).size(), 1u); // at least one cell
}

AttentionTrace Trace() {
    AttentionTrace t;
    t.n_layer = 2, t.n_head = 3, t.bins = 4, t.n_positions = 40;
    return t;
}

// Bins of equal width, ceil(context / 256) positions each, that FoldCell over n_positions
// agrees with (the heatmap folds by it): the session database stores their width.
TEST(AttentionTrace, BinsAreEqualAndAsFewAsTheirWidthNeeds) {
    struct Case { int64_t context, stride, bins; };
    for (const Case c : {Case{40, 1, 40}, Case{256, 1, 256}, Case{257, 2, 129}, Case{300, 2, 150}, Case{513, 3, 171}}) {
        const AttentionTrace t = AttentionTrace::Shaped(2, 3, c.context, 256);
        EXPECT_EQ(t.key_stride(), c.stride) << c.context;
        EXPECT_EQ(t.bins, c.bins) << c.context;
        EXPECT_EQ(t.n_positions, c.bins * c.stride) << c.context;
        for (int64_t p = 0; p < c.context; ++p) ASSERT_EQ(FoldCell(p, t.n_positions, t.bins), p / c.stride) << p;
    }
}

TEST(AttentionTrace, ThinsOldStepsUnderItsCap) {
    AttentionTrace t = Trace();
    const size_t row_bytes = t.row_size() * sizeof(float), cap = 10 * row_bytes;
    std::vector<float> rows(t.row_size());
    for (int32_t step = 1; step <= 100; ++step) {
        std::fill(rows.begin(), rows.end(), float(step));
        t.Append(step, rows.data(), cap);
        ASSERT_LE(t.mass.size() * sizeof(float), cap);
    }
    EXPECT_EQ(t.stride, 16); // 100 steps in 10 rows: every 16th
    EXPECT_GT(t.generation, 0u);
    EXPECT_EQ(t.steps, (std::vector<int32_t>{16, 32, 48, 64, 80, 96}));
    for (size_t i = 0; i < t.steps.size(); ++i) // each row still holds its own step's values
        EXPECT_EQ(*t.Row(i, 1, 2), float(t.steps[i]));
}

TEST(AttentionTrace, RowRefusesBadIndices) {
    AttentionTrace t = Trace();
    std::vector<float> rows(t.row_size(), 0.5f);
    t.Append(1, rows.data(), 1 << 20);
    EXPECT_NE(t.Row(0, 1, 2), nullptr);
    EXPECT_EQ(t.Row(1, 0, 0), nullptr);
    EXPECT_EQ(t.Row(0, 2, 0), nullptr);
    EXPECT_EQ(t.Row(0, 0, -1), nullptr);
}

TEST(AttentionTrace, UiCopyStartsOverWhenThinned) {
    Snapshot shared, ui;
    shared.runs.resize(1);
    shared.runs[0].attention = Trace();
    AttentionTrace& t = shared.runs[0].attention;
    std::vector<float> rows(t.row_size());
    for (int32_t step = 1; step <= 20; ++step) {
        std::fill(rows.begin(), rows.end(), float(step));
        t.Append(step, rows.data(), 6 * t.row_size() * sizeof(float));
        ++shared.version;
        SyncSnapshot(ui, shared);
        ASSERT_EQ(ui.runs[0].attention.steps, t.steps) << "step " << step;
        ASSERT_EQ(ui.runs[0].attention.mass, t.mass) << "step " << step;
    }
}

// A run of `n_prompt` prompt tokens and `steps` steps, evicting `evictions` from (0, 0).
RunView MakeRun(int64_t n_prompt, int steps, std::vector<Eviction> evictions) {
    RunView r;
    r.n_prompt = n_prompt;
    r.steps.resize(size_t(steps));
    r.evictions = std::move(evictions);
    return r;
}

TEST(KeptDiff, SortsPositionsIntoAOnlyBOnlyBoth) {
    // 6 prompt positions; after step 2 positions 0..7 exist.
    const RunView a = MakeRun(6, 4, {{0, 0, 0, 1}, {1, 0, 0, 2}, {3, 0, 0, 3}, {0, 0, 1, 4}});
    const RunView b = MakeRun(6, 4, {{0, 0, 0, 2}, {2, 0, 0, 5}});
    EvictionIndex ia, ib;
    ia.Update(0, a, 0, 0);
    ib.Update(1, b, 0, 0);
    const KeptDiff d = DiffKept(a, ia, b, ib, 2);
    using W = KeptDiff::Where;
    // a lost 1 and 2 (3 only at step 3; layer 1's eviction of 4 is another head); b lost 2 and 5.
    const std::vector<uint8_t> want = {W::Both, W::BOnly, W::Neither, W::Both, W::Both, W::AOnly, W::Both, W::Both};
    EXPECT_EQ(d.where, want);
    EXPECT_EQ(d.a_only, 1);
    EXPECT_EQ(d.b_only, 1);
    EXPECT_EQ(d.both, 5);
}

TEST(KeptDiff, ShorterRunHoldsNothingPastItsEnd) {
    const RunView a = MakeRun(4, 2, {}), b = MakeRun(4, 6, {});
    EvictionIndex ia, ib;
    ia.Update(0, a, 0, 0);
    ib.Update(1, b, 0, 0);
    const KeptDiff d = DiffKept(a, ia, b, ib, 5); // a has positions 0..5, b 0..8
    EXPECT_EQ(d.where.size(), 9u);
    EXPECT_EQ(d.both, 6);
    EXPECT_EQ(d.b_only, 3);
    EXPECT_EQ(d.a_only, 0);
}

TEST(Selection, QueryHeadFollowsTheKvHead) {
    Selection s;
    s.head = 2;
    EXPECT_EQ(SelectedQueryHead(s, 3), 6); // none chosen: the group's first
    s.query_head = 7;
    EXPECT_EQ(SelectedQueryHead(s, 3), 7);
    s.head = 0; // another KV head selected since: its first query head
    EXPECT_EQ(SelectedQueryHead(s, 3), 0);
    EXPECT_EQ(SelectedQueryHead(s, 0), 0); // a bad group size is taken as 1
}

} // namespace
} // namespace kvscope
