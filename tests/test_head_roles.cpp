// Head roles (core/head_roles.h, issue 8): the scores on attention whose answer is known.
//
// Hand-built attention (METHODS.md §3's known-answer check): a head that looks only at
// position 0, one only at t - 1, one at t - N + 1 on the repeat probe, one at the needle's
// source tokens, one uniformly: each scores 1 on exactly its role, and the uniform head has
// entropy 1.
//
// A model whose heads are known (tests/reference/make_role_model.py): a 2-layer Llama with
// hand-set weights where layer 0's head 0 is an exact previous-token head and layer 1's
// head 0 an exact induction head, the other heads diffuse. The analysis of the whole model
// must find exactly those heads.
#include "core/head_roles.h"
#include "core/model.h"
#include "core/probes.h"
#include "test_util.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>
#include <random>

namespace kvscope {
namespace {

// [n_head, T, T] attention where head h's query t puts all its mass on key target(h, t).
template <class Target>
at::Tensor one_hot_attention(int64_t n_head, int64_t T, Target target) {
    at::Tensor a = at::zeros({n_head, T, T});
    auto acc = a.accessor<float, 3>();
    for (int64_t h = 0; h < n_head; ++h)
        for (int64_t t = 0; t < T; ++t) {
            const int64_t j = target(h, t);
            if (j < 0) { // uniform over the keys 0..t
                for (int64_t k = 0; k <= t; ++k) acc[h][t][k] = 1.0f / float(t + 1);
            } else {
                acc[h][t][j] = 1;
            }
        }
    return a;
}

double score(const HeadRoles& r, const std::string& role, int64_t layer, int64_t head) {
    return r.role(role)[size_t(layer * r.n_head + head)];
}

constexpr int64_t kSink = 0, kPrevious = 1, kUniform = 2, kInduction = 3, kEcho = 4, kRetrieval = 5, kHeads = 6;

TEST(HeadRoles, HandBuiltAttentionScoresOneOnExactlyItsRole) {
    const int64_t T = 300, N = 100;
    Probe text;
    text.kind = Probe::Kind::text;
    text.tokens.assign(T, 1);
    Probe repeat;
    repeat.kind = Probe::Kind::repeat;
    repeat.tokens.assign(1 + 2 * N, 1);
    repeat.period = N;
    repeat.second_copy = 1 + N;
    Probe needle;
    needle.kind = Probe::Kind::needle;
    needle.tokens.assign(T, 1);
    needle.copies = {{T - 4, 50}, {T - 3, 51}, {T - 2, 52}};

    // Head roles by construction; on the other probes each keeps its habit, and the
    // induction, echo and retrieval heads look at themselves where their role does not apply.
    const auto target = [&](const Probe& probe) {
        return [&probe, N](int64_t h, int64_t t) -> int64_t {
            const bool second_copy = probe.kind == Probe::Kind::repeat && t >= probe.second_copy;
            switch (h) {
            case kSink: return 0;
            case kPrevious: return std::max<int64_t>(0, t - 1);
            case kUniform: return -1;
            case kInduction: return second_copy ? t - N + 1 : t;
            case kEcho: return second_copy ? t - N : t;
            default:
                for (const auto& [q, s] : probe.copies)
                    if (q == t) return s;
                return t;
            }
        };
    };
    RoleScorer scorer(2, kHeads, kHeads);
    for (const Probe* p : {&text, &repeat, &needle})
        for (int64_t layer = 0; layer < 2; ++layer)
            scorer.add(*p, layer, one_hot_attention(kHeads, int64_t(p->tokens.size()), target(*p)));
    const HeadRoles r = scorer.result();

    const std::vector<std::pair<std::string, int64_t>> expected = {
        {"sink", kSink}, {"previous_token", kPrevious}, {"induction", kInduction}, {"echo", kEcho}, {"retrieval", kRetrieval}};
    for (int64_t layer = 0; layer < 2; ++layer) {
        for (const auto& [role, head] : expected)
            for (int64_t h = 0; h < kHeads; ++h) {
                SCOPED_TRACE(role + " of head " + std::to_string(h));
                // Others: 0, but for the uniform head's share (1 / (t + 1)) and the sink
                // head's first query, where position 0 is also t - 1.
                if (h == head) EXPECT_NEAR(score(r, role, layer, h), 1.0, 1e-6);
                else EXPECT_LT(score(r, role, layer, h), 0.05);
            }
        EXPECT_NEAR(score(r, "entropy", layer, kUniform), 1.0, 1e-5);
        for (int64_t h : {kSink, kPrevious, kInduction}) EXPECT_NEAR(score(r, "entropy", layer, h), 0.0, 1e-6);
        // Locality (mass on the last 64 keys): 1 for the heads that look close, 0 for the sink.
        EXPECT_NEAR(score(r, "locality", layer, kPrevious), 1.0, 1e-6);
        EXPECT_NEAR(score(r, "locality", layer, kInduction), 1.0, 1e-6);
        EXPECT_NEAR(score(r, "locality", layer, kSink), 0.0, 1e-6);
        double uniform_locality = 0; // 64 of its t + 1 keys, for t >= 64
        for (int64_t t = 64; t < T; ++t) uniform_locality += 64.0 / double(t + 1) / double(T - 64);
        EXPECT_NEAR(score(r, "locality", layer, kUniform), uniform_locality, 1e-5);
    }
    // Per KV head (here one per query head): the same numbers.
    EXPECT_EQ(r.per_kv_head("induction"), r.role("induction"));
    // Layer preference: uniform attention disperses, one-hot attention does not; one-hot
    // rows that do not move with t have no temporal variance.
    EXPECT_GT(r.layer_preference[0], 0);
    EXPECT_EQ(r.layer_preference[0], r.layer_preference[1]);
}

// With grouped queries, a KV head's score is the mean of its query heads'.
TEST(HeadRoles, PerKvHeadIsTheMeanOfItsQueryHeads) {
    HeadRoles r;
    r.n_layer = 2;
    r.n_head = 4;
    r.n_head_kv = 2;
    r.roles = {"induction"};
    r.scores = {{1, 0, 0.5, 0.25, 0, 0, 1, 1}};
    EXPECT_EQ(r.per_kv_head("induction"), (std::vector<double>{0.5, 0.375, 0, 1}));
    test::expect_error([&] { r.role("copying"); }, {"copying", "is not a role"});
}

// The known-answer model's probes: its 16 identity tokens, after a token without one
// (position 0 has no previous token to copy).
std::vector<Probe> role_model_probes(uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> order(16);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    Probe repeat;
    repeat.kind = Probe::Kind::repeat;
    repeat.name = "repeat";
    repeat.tokens = {20};
    for (int copy = 0; copy < 2; ++copy) repeat.tokens.insert(repeat.tokens.end(), order.begin(), order.end());
    repeat.period = 16;
    repeat.second_copy = 17;
    Probe text;
    text.kind = Probe::Kind::text;
    text.name = "text";
    text.tokens = {20};
    for (int i = 0; i < 200; ++i) text.tokens.push_back(int32_t(rng() % 16));
    return {repeat, text};
}

TEST(HeadRoles, FindsThePreviousTokenAndInductionHeadsOfAModelBuiltWithThem) {
    const std::string dir = test::scratch_dir("head_roles_model");
    ASSERT_EQ(test::run(test::python() + " " KVSCOPE_SOURCE_DIR "/tests/reference/make_role_model.py " + dir), 0);
    const Model model = Model::load(dir);
    const HeadRoles r = analyze_heads(model, role_model_probes(7));
    ASSERT_EQ(r.n_layer, 2);
    ASSERT_EQ(r.n_head, 2);
    const auto only = [&](const std::string& role, int64_t layer, int64_t head) {
        for (int64_t l = 0; l < 2; ++l)
            for (int64_t h = 0; h < 2; ++h) {
                SCOPED_TRACE(role + " of L" + std::to_string(l) + ".H" + std::to_string(h));
                if (l == layer && h == head) EXPECT_GT(score(r, role, l, h), 0.95);
                else EXPECT_LT(score(r, role, l, h), 0.3);
            }
    };
    only("previous_token", 0, 0);
    only("induction", 1, 0);
    // The diffuse heads attend uniformly.
    EXPECT_GT(score(r, "entropy", 0, 1), 0.999);
    EXPECT_GT(score(r, "entropy", 1, 1), 0.999);
    EXPECT_LT(score(r, "entropy", 0, 0), 0.1);
}

} // namespace
} // namespace kvscope
