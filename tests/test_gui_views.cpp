// The views' data logic, without a window: folding long axes (the heatmaps' pooling keeps
// the max or the total), the attention trace's equal bins, memory cap and thinning and its
// copy to the UI, the kept sets two runs diff, the selection's query head, and the image
// builder (newest request wins, the UI thread uploads).
#include "views/image_builder.h"
#include "views/snapshot.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <numeric>
#include <random>
#include <thread>

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

// ---- the image builder: uploads counted by a fake texture API on this (the UI) thread.
struct Uploads {
    static inline int count = 0, width = 0, height = 0;
    static inline uint32_t first = 0;
    static inline std::thread::id thread;
    static ImTextureID Upload(ImTextureID reuse, int w, int h, const uint32_t* rgba) {
        ++count, width = w, height = h, first = rgba[0], thread = std::this_thread::get_id();
        return reuse ? reuse : reinterpret_cast<ImTextureID>(uintptr_t(7));
    }
};

// Polls the builder as the UI would each frame, until it shows `key` (or 10 s pass).
bool ShowsWithin(ImageBuilder& b, const ImageKey& key) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < end) {
        b.Texture(Uploads::Upload);
        if (b.ShownKey() == key) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
}

Image Filled(int w, int h, uint32_t c) { return {w, h, std::vector<uint32_t>(size_t(w) * size_t(h), c)}; }

struct ImGuiContextForTest {
    ImGuiContextForTest() { ImGui::CreateContext(); }
    ~ImGuiContextForTest() { ImGui::DestroyContext(); }
};

TEST(ImageBuilder, BuildsOffThisThreadAndUploadsOnIt) {
    ImGuiContextForTest context;
    Uploads::count = 0;
    ImageBuilder b;
    EXPECT_EQ(b.Texture(Uploads::Upload), nullptr) << "nothing built yet";
    std::atomic<bool> built_here{true};
    const auto ui = std::this_thread::get_id();
    ASSERT_TRUE(b.Wants({1, 2}));
    b.Request({1, 2}, [&] {
        built_here = std::this_thread::get_id() == ui;
        return Filled(3, 2, 0xff00ff00u);
    });
    EXPECT_FALSE(b.Wants({1, 2})) << "the key asked for is not wanted again";
    ASSERT_TRUE(ShowsWithin(b, {1, 2}));
    EXPECT_FALSE(built_here);
    EXPECT_EQ(Uploads::count, 1);
    EXPECT_EQ(Uploads::thread, ui);
    EXPECT_EQ(Uploads::width, 3);
    EXPECT_EQ(Uploads::height, 2);
    EXPECT_EQ(Uploads::first, 0xff00ff00u);
    EXPECT_TRUE(b.Settled());
    EXPECT_TRUE(ImagesSettled());
    b.Texture(Uploads::Upload);
    EXPECT_EQ(Uploads::count, 1) << "an image is uploaded once";
}

// While one image is being built, later requests replace each other: only the newest is
// built next, and until it is done the last finished image is the one shown.
TEST(ImageBuilder, TheNewestRequestWinsAndTheLastImageStaysMeanwhile) {
    ImGuiContextForTest context;
    ImageBuilder b;
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::atomic<int> built_second{0}, built_third{0};
    std::atomic<bool> first_started{false};
    b.Request({1}, [released, &first_started] {
        first_started = true;
        released.wait();
        return Filled(1, 1, 1);
    });
    while (!first_started) std::this_thread::yield();
    b.Request({2}, [&] { return ++built_second, Filled(1, 1, 2); });
    b.Request({3}, [&] { return ++built_third, Filled(1, 1, 3); });
    EXPECT_FALSE(b.Settled());
    EXPECT_EQ(b.Texture(Uploads::Upload), nullptr) << "the first is still being built";
    release.set_value();
    ASSERT_TRUE(ShowsWithin(b, {3}));
    EXPECT_EQ(built_second, 0) << "a request replaced while waiting is never built";
    EXPECT_EQ(built_third, 1);
    EXPECT_EQ(Uploads::first, 3u);
    EXPECT_TRUE(b.Settled());
}

} // namespace
} // namespace kvscope
