// The built-in methods (plugins/): each formula against an independent computation in plain
// loops, through the C descriptors the host calls, on hand-built one-layer step views.
#include "plugins/builtin.h"
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace {

const kvs_method* find(const std::string& name) {
    const kvs_plugin* p = kvscope_builtin_plugin();
    for (int32_t i = 0; i < p->n_methods; ++i)
        if (name == p->methods[i]->name) return p->methods[i];
    ADD_FAILURE() << "no built-in method " << name;
    return nullptr;
}

// One instance, created with the schema's defaults and the given overrides.
struct Instance {
    const kvs_method* m = nullptr;
    void* self = nullptr;
    kvs_instance_info info{};
    int rc = 0;
    std::string err;

    explicit Instance(const std::string& name, const std::map<std::string, double>& set = {}) : m(find(name)) {
        std::vector<double> p;
        for (int32_t i = 0; i < m->n_params; ++i) {
            auto it = set.find(m->params[i].name);
            p.push_back(it != set.end() ? it->second : m->params[i].default_value);
        }
        info.struct_size = sizeof(info);
        char buf[256] = "";
        rc = m->create(p.data(), &info, &self, buf, sizeof(buf));
        err = buf;
    }
    ~Instance() {
        if (rc == 0) m->destroy(self);
    }
};

DLTensor dl(const at::Tensor& t) {
    DLTensor d{};
    if (!t.defined()) return d;
    d.data = t.data_ptr();
    d.device = {kDLCPU, 0};
    d.ndim = int32_t(t.dim());
    switch (t.scalar_type()) {
    case at::kFloat: d.dtype = {kDLFloat, 32, 1}; break;
    case at::kHalf: d.dtype = {kDLFloat, 16, 1}; break;
    case at::kBFloat16: d.dtype = {kDLBfloat, 16, 1}; break;
    case at::kInt: d.dtype = {kDLInt, 32, 1}; break;
    default: ADD_FAILURE() << "dtype not handled in the test";
    }
    d.shape = const_cast<int64_t*>(t.sizes().data());
    d.strides = const_cast<int64_t*>(t.strides().data());
    return d;
}

// A layer view over tensors the test owns. Head g holds n_slots[g] tokens at positions
// first[g], first[g]+1, ... (or whatever the test writes into `positions`).
struct View {
    int64_t n_head, n_kv, S, head_dim = 4;
    std::vector<int64_t> n_slots, budget;
    int64_t n_prompt = 0, n_past = 0, step = 0;
    uint64_t seed = 1;
    at::Tensor positions, mass, keys, values, future, state;

    View(int64_t h, int64_t hk, int64_t s, std::vector<int64_t> slots = {})
        : n_head(h), n_kv(hk), S(s), n_slots(slots.empty() ? std::vector<int64_t>(size_t(hk), s) : slots),
          budget(size_t(hk), s) {
        positions = at::full({n_kv, S}, -1, at::kInt);
        for (int64_t g = 0; g < n_kv; ++g)
            for (int64_t j = 0; j < n_slots[size_t(g)]; ++j) positions[g][j] = int32_t(j);
        n_prompt = n_past = S;
    }
    int64_t group() const { return n_head / n_kv; }
    bool valid(int64_t g, int64_t j) const { return j < n_slots[size_t(g)]; }

};

// A View as the one-layer step view the hooks take: every tensor gets a leading layer
// dimension of 1. The tensors are held here, since the view points into their sizes.
struct StepView {
    at::Tensor positions, mass, keys, values, future, state;
    std::vector<int64_t> budget;
    kvs_step_view v{};

    StepView(const View& in, int64_t layer_budget = -1) : budget(in.budget) {
        auto one = [](const at::Tensor& t) { return t.defined() ? t.unsqueeze(0) : t; };
        positions = one(in.positions), mass = one(in.mass), keys = one(in.keys), values = one(in.values);
        future = one(in.future), state = one(in.state);
        if (layer_budget >= 0) budget.assign(budget.size(), layer_budget);
        v.struct_size = sizeof(v);
        v.n_layer = 1;
        v.n_head = int32_t(in.n_head);
        v.n_head_kv = int32_t(in.n_kv);
        v.head_dim = int32_t(in.head_dim);
        v.n_prompt = in.n_prompt;
        v.n_past = in.n_past;
        v.step = in.step;
        v.n_max = in.S;
        v.n_slots = in.n_slots.data();
        v.budget = budget.data();
        v.seed = in.seed;
        v.positions = dl(positions);
        v.mass = dl(mass);
        v.keys = dl(keys);
        v.values = dl(values);
        v.future_mass = dl(future);
        v.state = dl(state);
    }
};

// score() -> float [n_kv, S] as a CPU tensor; an empty tensor (and the message) on error.
at::Tensor score(Instance& in, const View& v, std::string* error = nullptr) {
    at::Tensor out = at::full({1, v.n_kv, v.S}, NAN, at::kFloat);
    DLTensor o = dl(out);
    StepView sv(v);
    char err[256] = "";
    EXPECT_NE(in.m->score, nullptr);
    int rc = in.m->score(in.self, &sv.v, &o, err, sizeof(err));
    if (error) *error = err;
    if (rc != 0) {
        if (!error) ADD_FAILURE() << in.m->name << ".score: " << err;
        return {};
    }
    return out[0];
}

void observe(Instance& in, const View& v) {
    StepView sv(v);
    char err[256] = "";
    ASSERT_NE(in.m->observe, nullptr);
    ASSERT_EQ(in.m->observe(in.self, &sv.v, err, sizeof(err)), 0) << err;
}

float at2(const at::Tensor& t, int64_t a, int64_t b) { return t[a][b].item<float>(); }

// ---- schema -------------------------------------------------------------------------------

TEST(Builtin, DescriptorAndSchemasAreSane) {
    const kvs_plugin* p = kvscope_builtin_plugin();
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->abi_version, uint32_t(KVS_ABI_VERSION));
    const uint32_t sizes[4] = KVS_STRUCT_SIZES;
    for (int i = 0; i < 4; ++i) EXPECT_EQ(p->sizes[i], sizes[i]);
    EXPECT_STREQ(p->name, "builtin");
    EXPECT_STREQ(p->build_tag, KVS_BUILD_TAG);
    const std::regex identifier("[a-z_][a-z0-9_]*");
    const std::set<std::string> allocators = {"pyramid", "adakv"};
    std::set<std::string> names;
    for (int32_t i = 0; i < p->n_methods; ++i) {
        const kvs_method& m = *p->methods[i];
        SCOPED_TRACE(m.name);
        EXPECT_EQ(m.struct_size, sizeof(kvs_method));
        EXPECT_TRUE(std::regex_match(m.name, identifier));
        EXPECT_TRUE(names.insert(m.name).second) << "name taken twice";
        EXPECT_TRUE(m.help && *m.help);
        EXPECT_STREQ(m.family, allocators.count(m.name) ? "allocator" : "scorer");
        EXPECT_TRUE(m.create && m.destroy);
        EXPECT_FALSE(m.score && m.select);
        EXPECT_TRUE(m.n_params == 0 || m.params);
        std::set<std::string> pnames;
        for (int32_t k = 0; k < m.n_params; ++k) {
            const kvs_param_def& d = m.params[k];
            EXPECT_TRUE(std::regex_match(d.name, identifier)) << d.name;
            EXPECT_TRUE(pnames.insert(d.name).second) << d.name;
            EXPECT_LE(d.min_value, d.default_value) << d.name;
            EXPECT_LE(d.default_value, d.max_value) << d.name;
            EXPECT_TRUE(d.help && *d.help) << d.name;
            if (d.type != KVS_PARAM_FLOAT) {
                EXPECT_EQ(d.default_value, std::floor(d.default_value)) << d.name;
            }
            if (d.type == KVS_PARAM_BOOL) {
                EXPECT_TRUE(d.min_value == 0 && d.max_value == 1) << d.name;
            }
        }
        Instance in(m.name);
        EXPECT_EQ(in.rc, 0) << in.err;
        EXPECT_TRUE(in.info.every >= 0 && in.info.sinks >= 0 && in.info.recent >= 0 && in.info.n_state >= 0);
        EXPECT_TRUE(in.info.recent_fraction >= 0 && in.info.recent_fraction <= 1);
    }
    EXPECT_EQ(names, (std::set<std::string>{"full", "window", "streaming_llm", "h2o", "snapkv", "tova", "key_norm",
                                            "random", "oracle", "pyramid", "adakv"}));
}

TEST(Full, HasNoHookSoTheHostNeverActs) {
    const kvs_method* m = find("full");
    EXPECT_FALSE(m->score || m->select || m->observe || m->layer_budgets || m->head_budgets);
    EXPECT_EQ(m->n_params, 0);
}

TEST(Builtin, ErrorsComeBackAsOneLineMessages) {
    View v(4, 2, 6); // no mass: snapkv's pooling fails inside libtorch
    Instance s("snapkv");
    std::string err;
    EXPECT_FALSE(score(s, v, &err).defined());
    EXPECT_FALSE(err.empty());
    EXPECT_EQ(err.find("frame #"), std::string::npos) << err; // no C++ backtrace
}

// ---- position scorers -----------------------------------------------------------------------

TEST(Window, ScoreIsThePositionEveryStep) {
    View v(4, 2, 7, {7, 5});
    v.positions[0] = at::tensor({0, 3, 4, 8, 9, 10, 11}, at::kInt);
    Instance w("window");
    EXPECT_EQ(w.info.every, 1);
    EXPECT_EQ(w.info.sinks, 0);
    at::Tensor s = score(w, v);
    for (int64_t g = 0; g < 2; ++g)
        for (int64_t j = 0; j < v.n_slots[size_t(g)]; ++j) EXPECT_EQ(at2(s, g, j), v.positions[g][j].item<int>());
    EXPECT_EQ(Instance("window", {{"every", 0}}).info.every, 0);
}

TEST(StreamingLLM, ProtectsSinksAndScoresPositions) {
    View v(2, 2, 6);
    Instance a("streaming_llm"), zero("streaming_llm", {{"sinks", 0}}), w("window");
    EXPECT_EQ(a.info.sinks, 4);
    EXPECT_EQ(a.info.every, 1);
    EXPECT_EQ(zero.info.sinks, 0); // s = 0: the same instance info and scores as window
    EXPECT_EQ(zero.info.every, w.info.every);
    EXPECT_TRUE(score(zero, v).equal(score(w, v)));
    EXPECT_TRUE(score(a, v).equal(v.positions.to(at::kFloat)));
}

// ---- H2O ---------------------------------------------------------------------------------

TEST(H2O, ObserveAccumulatesGroupSumsAndIgnoresPadding) {
    View v(4, 2, 6, {6, 4});
    Instance h("h2o");
    EXPECT_EQ(h.info.mass_window, KVS_MASS_ALL);
    EXPECT_EQ(h.info.n_state, 1);
    EXPECT_EQ(h.info.recent_fraction, 0.5);
    EXPECT_EQ(h.info.every, 1);
    EXPECT_EQ(Instance("h2o", {{"recent", 0.25}}).info.recent_fraction, 0.25);
    at::manual_seed(3);
    v.state = at::rand({2, 6, 1});
    const at::Tensor start = v.state.clone();
    std::vector<at::Tensor> steps = {at::rand({4, 6}), at::rand({4, 6})}; // padding holds garbage
    for (const at::Tensor& m : steps) {
        v.mass = m;
        observe(h, v);
    }
    for (int64_t g = 0; g < 2; ++g)
        for (int64_t j = 0; j < 6; ++j) {
            double expect = start[g][j][0].item<float>();
            if (v.valid(g, j))
                for (const at::Tensor& m : steps)
                    for (int64_t q = 0; q < 2; ++q) expect += at2(m, g * 2 + q, j);
            EXPECT_NEAR(v.state[g][j][0].item<float>(), expect, 1e-5) << g << "," << j;
        }
    at::Tensor s = score(h, v);
    for (int64_t g = 0; g < 2; ++g)
        for (int64_t j = 0; j < 4; ++j) EXPECT_EQ(at2(s, g, j), v.state[g][j][0].item<float>());
}

TEST(H2O, UniformCausalPrefillFavoursTheEarliestTokens) {
    // Uniform causal rows: column j receives sum_{t >= j} 1/(t+1), decreasing in j.
    const int64_t n = 16;
    View v(2, 1, n);
    v.mass = at::zeros({2, n});
    for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j <= t; ++j) v.mass[0][j] += 1.0 / double(t + 1), v.mass[1][j] += 1.0 / double(t + 1);
    v.state = at::zeros({1, n, 1});
    Instance h("h2o");
    observe(h, v);
    at::Tensor s = score(h, v);
    for (int64_t j = 1; j < n; ++j) EXPECT_GT(at2(s, 0, j - 1), at2(s, 0, j));
}

// ---- SnapKV -------------------------------------------------------------------------------

// The expected SnapKV score in plain loops: window columns zeroed, then pooled with zero
// padding (avg counts the padding) or max, then the group mean.
std::vector<float> snapkv_reference(const View& v, int64_t w, int64_t k, bool max_pool) {
    const int64_t G = v.group(), S = v.S;
    std::vector<float> out(size_t(v.n_kv * S), 0.f);
    auto m = [&](int64_t h, int64_t j) -> double {
        if (j < 0 || j >= S) return 0;
        const int pos = v.positions[h / G][j].item<int>();
        return pos >= v.n_past - w ? 0 : at2(v.mass, h, j);
    };
    for (int64_t h = 0; h < v.n_head; ++h)
        for (int64_t j = 0; j < S; ++j) {
            double acc = max_pool ? -1e30 : 0;
            for (int64_t d = -k / 2; d <= k / 2; ++d) {
                if (max_pool && (j + d < 0 || j + d >= S)) continue;
                acc = max_pool ? std::max(acc, m(h, j + d)) : acc + m(h, j + d) / double(k);
            }
            out[size_t((h / G) * S + j)] += float(acc / double(G));
        }
    return out;
}

TEST(SnapKV, InstanceInfo) {
    Instance s("snapkv");
    EXPECT_EQ(s.info.mass_window, 32);
    EXPECT_EQ(s.info.recent, 32);
    EXPECT_EQ(s.info.every, 0);
    Instance w8("snapkv", {{"window", 8}});
    EXPECT_EQ(w8.info.mass_window, 8);
    EXPECT_EQ(w8.info.recent, 8);
    Instance even("snapkv", {{"kernel", 4}});
    EXPECT_LT(even.rc, 0);
    EXPECT_NE(even.err.find("odd"), std::string::npos) << even.err;
}

TEST(SnapKV, KernelOneIsTheRawWindowSumsMeanG) {
    View v(6, 2, 20);
    at::manual_seed(5);
    v.mass = at::rand({6, 20});
    Instance s("snapkv", {{"window", 4}, {"kernel", 1}});
    at::Tensor got = score(s, v);
    for (int64_t g = 0; g < 2; ++g)
        for (int64_t j = 0; j < 20; ++j) {
            double expect = 0;
            if (j < 16)
                for (int64_t q = 0; q < 3; ++q) expect += at2(v.mass, g * 3 + q, j) / 3.0;
            EXPECT_NEAR(at2(got, g, j), expect, 1e-6) << g << "," << j;
        }
}

TEST(SnapKV, PoolingMatchesHandRolledLoops) {
    View v(4, 2, 23, {23, 17}); // head 1 padded after 17 slots
    at::manual_seed(7);
    v.mass = at::rand({4, 23});
    v.mass.narrow(1, 17, 6).narrow(0, 2, 2).zero_(); // padding has zero mass
    v.n_past = 23;
    for (bool max_pool : {false, true})
        for (int64_t k : {3, 5, 7}) {
            Instance s("snapkv", {{"window", 5}, {"kernel", double(k)}, {"max_pool", max_pool ? 1.0 : 0.0}});
            ASSERT_EQ(s.rc, 0) << s.err;
            at::Tensor got = score(s, v);
            std::vector<float> expect = snapkv_reference(v, 5, k, max_pool);
            for (int64_t g = 0; g < 2; ++g)
                for (int64_t j = 0; j < v.n_slots[size_t(g)]; ++j)
                    EXPECT_NEAR(at2(got, g, j), expect[size_t(g * 23 + j)], 1e-6)
                        << (max_pool ? "max" : "avg") << " k=" << k << " " << g << "," << j;
        }
}

// ---- TOVA ---------------------------------------------------------------------------------

TEST(Tova, EveryHeadGetsTheLayersHeadMean) {
    View v(6, 3, 9);
    at::manual_seed(11);
    v.mass = at::rand({6, 9});
    Instance t("tova");
    EXPECT_EQ(t.info.mass_window, 1);
    EXPECT_EQ(t.info.every, 1);
    at::Tensor got = score(t, v);
    for (int64_t j = 0; j < 9; ++j) {
        double mean = 0;
        for (int64_t h = 0; h < 6; ++h) mean += at2(v.mass, h, j) / 6.0;
        for (int64_t g = 0; g < 3; ++g) EXPECT_NEAR(at2(got, g, j), mean, 1e-6);
    }
}

TEST(Tova, RefusesHeadsHoldingDifferentNumbersOfTokens) {
    View v(4, 2, 6, {6, 5});
    v.mass = at::rand({4, 6});
    Instance t("tova");
    std::string err;
    EXPECT_FALSE(score(t, v, &err).defined());
    EXPECT_NE(err.find("layer 0 hold different numbers of tokens"), std::string::npos) << err;
    View same(4, 2, 6, {5, 5});
    same.mass = v.mass;
    same.positions[0][2] = 9, same.positions[1][2] = 9; // same positions, not 0..n-1: fine
    EXPECT_TRUE(score(t, same).defined());
}

// ---- key norm, random, oracle -------------------------------------------------------------

TEST(KeyNorm, ScoreIsMinusTheL2NormSmallestNormFirst) {
    View v(2, 2, 8);
    at::manual_seed(13);
    for (at::ScalarType type : {at::kFloat, at::kHalf, at::kBFloat16}) {
        v.keys = at::randn({2, 8, 4}).to(type);
        v.keys[1][5].mul_(0.01); // the smallest key of head 1
        Instance k("key_norm");
        EXPECT_EQ(k.info.needs, KVS_NEEDS_KEYS);
        EXPECT_EQ(k.info.every, 0);
        at::Tensor got = score(k, v);
        for (int64_t g = 0; g < 2; ++g)
            for (int64_t j = 0; j < 8; ++j) {
                double n2 = 0;
                for (int64_t c = 0; c < 4; ++c) n2 += std::pow(v.keys[g][j][c].item<float>(), 2);
                EXPECT_NEAR(at2(got, g, j), -std::sqrt(n2), 1e-5);
            }
        EXPECT_EQ(got[1].argmax().item<int64_t>(), 5);
    }
    Instance p("key_norm", {{"sinks", 2}, {"recent", 3}, {"every", 4}});
    EXPECT_EQ(p.info.sinks, 2);
    EXPECT_EQ(p.info.recent, 3);
    EXPECT_EQ(p.info.every, 4);
}

TEST(Random, DeterministicPerSeedDifferentAcrossSeeds) {
    View v(4, 2, 64);
    Instance a("random"), b("random");
    v.seed = 42;
    at::Tensor s1 = score(a, v), s2 = score(b, v);
    v.seed = 43;
    at::Tensor s3 = score(a, v);
    EXPECT_TRUE(s1.equal(s2));
    EXPECT_FALSE(s1.equal(s3));
    EXPECT_FALSE(s1[0].equal(s1[1])); // heads differ
    EXPECT_GE(s1.min().item<float>(), 0.f);
    EXPECT_LT(s1.max().item<float>(), 1.f);
    EXPECT_GT(std::get<0>(at::_unique(s1)).numel(), 120); // not constant, few collisions
    EXPECT_NEAR(s1.mean().item<float>(), 0.5, 0.1);
}

TEST(Oracle, ScoreIsMeanGOfFutureMass) {
    View v(6, 2, 10);
    at::manual_seed(17);
    v.future = at::rand({6, 10});
    Instance o("oracle");
    EXPECT_EQ(o.info.needs, KVS_NEEDS_FUTURE);
    EXPECT_EQ(o.info.every, 0);
    EXPECT_EQ(o.info.sinks, 0);
    EXPECT_EQ(o.info.recent, 0);
    at::Tensor got = score(o, v);
    for (int64_t g = 0; g < 2; ++g)
        for (int64_t j = 0; j < 10; ++j)
            EXPECT_NEAR(at2(got, g, j), (at2(v.future, g * 3, j) + at2(v.future, g * 3 + 1, j) + at2(v.future, g * 3 + 2, j)) / 3, 1e-6);
}

// ---- PyramidKV -----------------------------------------------------------------------------

std::vector<int64_t> layer_budgets(Instance& in, int32_t L, int64_t B, int64_t w, int64_t n) {
    kvs_budget_view bv{sizeof(kvs_budget_view), L, 2, n, n, B, w};
    std::vector<int64_t> out(size_t(L), -7);
    char err[256] = "";
    EXPECT_EQ(in.m->layer_budgets(in.self, &bv, out.data(), err, sizeof(err)), 0) << err;
    return out;
}

// The card's formula before the rounding fix: B_l = kmax - l*step + w.
std::vector<int64_t> pyramid_formula(int64_t L, int64_t B, int64_t w, int64_t n, double beta, int64_t* step) {
    const int64_t avg = B - w;
    int64_t kmin = int64_t(std::floor(double(avg) / beta)), kmax = 2 * avg - kmin;
    if (kmax >= n - w) kmax = n - w, kmin = 2 * avg - kmax;
    *step = (kmax - kmin) / (L - 1);
    std::vector<int64_t> b;
    for (int64_t l = 0; l < L; ++l) b.push_back(kmax - l * *step + w);
    return b;
}

TEST(Pyramid, WorkedExample) {
    // L=30, B=128, w=32, np=1000: B̄=96, kmin=4, kmax=188, step=floor(184/29)=6, so the
    // formula gives 220 - 6l (sum 3990 = L*B + 150); the fix takes 5 from every layer.
    Instance p("pyramid");
    int64_t step = 0;
    std::vector<int64_t> raw = pyramid_formula(30, 128, 32, 1000, 20, &step);
    EXPECT_EQ(step, 6);
    EXPECT_EQ(raw.front(), 220);
    EXPECT_EQ(raw.back(), 46);
    EXPECT_EQ(std::accumulate(raw.begin(), raw.end(), int64_t(0)), 3990);
    std::vector<int64_t> got = layer_budgets(p, 30, 128, 32, 1000);
    for (int64_t l = 0; l < 30; ++l) EXPECT_EQ(got[size_t(l)], 215 - 6 * l) << l;
    EXPECT_EQ(std::accumulate(got.begin(), got.end(), int64_t(0)), 30 * 128);
}

TEST(Pyramid, ClampedAtThePromptLength) {
    // L=4, B=64, w=8, n=80: kmax=110 >= 72, so kmax=72, kmin=40, step=10: 80 70 60 50 (sum
    // 260 = 256 + 4): one slot back from each layer.
    Instance p("pyramid");
    EXPECT_EQ(layer_budgets(p, 4, 64, 8, 80), (std::vector<int64_t>{79, 69, 59, 49}));
}

TEST(Pyramid, InvariantsOverAGrid) {
    for (double beta : {2.0, 20.0})
        for (int32_t L : {1, 2, 5, 30})
            for (int64_t w : {0, 4, 32})
                for (int64_t B : {1, 4, 16, 33, 64, 128, 300})
                    for (int64_t n : {B / 2, B, B + 1, 2 * B, int64_t(1000)}) {
                        Instance p("pyramid", {{"beta", beta}});
                        std::vector<int64_t> got = layer_budgets(p, L, B, w, n);
                        SCOPED_TRACE(::testing::Message() << "beta=" << beta << " L=" << L << " w=" << w << " B=" << B << " n=" << n);
                        const int64_t sum = std::accumulate(got.begin(), got.end(), int64_t(0));
                        EXPECT_LE(sum, L * B);
                        for (int64_t l = 0; l < L; ++l) {
                            EXPECT_GE(got[size_t(l)], std::min(B, w));
                            if (l > 0) {
                                EXPECT_LE(got[size_t(l)], got[size_t(l - 1)]);
                            }
                        }
                        if (L == 1 || B <= w || n <= B) {
                            EXPECT_EQ(got, std::vector<int64_t>(size_t(L), B)); // nothing to shape
                            continue;
                        }
                        int64_t step = 0;
                        std::vector<int64_t> raw = pyramid_formula(L, B, w, n, beta, &step);
                        const int64_t raw_sum = std::accumulate(raw.begin(), raw.end(), int64_t(0));
                        // The formula's excess is (L/2)((kmax - kmin) mod (L - 1)) (kmax + kmin = 2B̄):
                        // below L(L-1)/2, and not always within the card's L*step (step 0, or a
                        // large remainder: L=30, B=64, w=4 gives 405 > 90).
                        const int64_t kmax = raw.front() - w, kmin = 2 * (B - w) - kmax;
                        EXPECT_EQ(raw_sum - L * B, L * ((kmax - kmin) % (L - 1)) / 2);
                        EXPECT_EQ(sum, L * B); // so |sum - L*B| = 0 <= L*step
                        // While no layer reaches the floor and step >= 1, the fix takes whole
                        // passes over the layers, shallowest first.
                        const int64_t excess = raw_sum - L * B;
                        if (step >= 1 && raw.back() - (excess + L - 1) / L >= w) {
                            for (int64_t l = 0; l < L; ++l)
                                EXPECT_EQ(got[size_t(l)], raw[size_t(l)] - excess / L - (l < excess % L ? 1 : 0)) << l;
                        }
                    }
}

// ---- AdaKV ---------------------------------------------------------------------------------

std::vector<int64_t> head_budgets(Instance& in, const View& v, int64_t layer_budget, const at::Tensor& scores) {
    std::vector<int64_t> out(size_t(v.n_kv), -7);
    StepView sv(v, layer_budget);
    at::Tensor step_scores = scores.unsqueeze(0);
    DLTensor sc = dl(step_scores);
    char err[256] = "";
    EXPECT_EQ(in.m->head_budgets(in.self, &sv.v, &sc, out.data(), err, sizeof(err)), 0) << err;
    return out;
}

int64_t total(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t(0)); }

TEST(AdaKV, FloorThenGlobalTop) {
    // Distinct scores: the expected counts by a threshold on the scores left after each head's floor.
    const int64_t Hk = 4, S = 50, Bl = 12;
    View v(8, Hk, S, {50, 50, 30, 45});
    at::manual_seed(19);
    at::Tensor scores = at::rand({Hk, S}).pow(3); // skewed, so heads end up unequal
    scores[0].narrow(0, 0, 4).fill_(INFINITY);    // protected slots of head 0
    scores[0].narrow(0, 40, 10).fill_(INFINITY);
    scores[2].narrow(0, 30, 20).fill_(123.f);    // padding of head 2: must not count
    for (double alpha : {0.0, 0.2, 0.5, 1.0}) {
        Instance a("adakv", {{"floor", alpha}});
        std::vector<int64_t> got = head_budgets(a, v, Bl, scores);
        const int64_t floor = int64_t(std::floor(alpha * Bl));
        std::vector<float> rest;
        std::vector<std::vector<float>> per(Hk);
        for (int64_t g = 0; g < Hk; ++g) {
            for (int64_t j = 0; j < v.n_slots[size_t(g)]; ++j) per[size_t(g)].push_back(at2(scores, g, j));
            std::sort(per[size_t(g)].rbegin(), per[size_t(g)].rend());
            rest.insert(rest.end(), per[size_t(g)].begin() + floor, per[size_t(g)].end());
        }
        std::sort(rest.rbegin(), rest.rend());
        const int64_t R = Hk * Bl - Hk * floor;
        SCOPED_TRACE(alpha);
        const float threshold = R > 0 ? rest[size_t(R - 1)] : INFINITY;
        if (R > 0) {
            ASSERT_GT(threshold, rest[size_t(R)]) << "ties in the test data"; // only +inf ones tie, above it
        }
        EXPECT_EQ(total(got), Hk * Bl);
        for (int64_t g = 0; g < Hk; ++g) {
            int64_t expect = floor;
            for (size_t k = size_t(floor); k < per[size_t(g)].size(); ++k) expect += R > 0 && per[size_t(g)][k] >= threshold;
            EXPECT_EQ(got[size_t(g)], expect) << g;
            EXPECT_GE(got[size_t(g)], floor);
        }
        if (alpha < 1) {
            EXPECT_GE(got[0], 14); // every protected slot fits (alpha = 1 is uniform B_l = 12)
        }
    }
}

TEST(AdaKV, IdenticalHeadsGetEqualBudgets) {
    const int64_t Hk = 4, S = 40;
    View v(4, Hk, S);
    at::manual_seed(23);
    at::Tensor scores = at::rand({1, S}).expand({Hk, S}).contiguous();
    for (int64_t Bl : {1, 7, 10, 13, 39}) {
        Instance a("adakv");
        EXPECT_EQ(head_budgets(a, v, Bl, scores), std::vector<int64_t>(size_t(Hk), Bl)) << Bl;
    }
    scores.fill_(0.5f); // all tied
    Instance a("adakv");
    EXPECT_EQ(head_budgets(a, v, 9, scores), std::vector<int64_t>(size_t(Hk), 9));
}

TEST(AdaKV, HeadsWithFewSlotsAreCappedAndTheRestRedistributed) {
    View v(6, 3, 40, {3, 40, 40});
    at::Tensor scores = at::ones({3, 40}); // head 0 would win every tie-free comparison...
    scores[0].fill_(100.f);                // ...but holds 3 slots
    Instance a("adakv");
    std::vector<int64_t> got = head_budgets(a, v, 10, scores);
    EXPECT_EQ(got[0], 3);
    EXPECT_EQ(total(got), 30);
    EXPECT_GE(got[1], 2);
    EXPECT_GE(got[2], 2);
    EXPECT_LE(std::abs(got[1] - got[2]), 1); // equal scores: shared evenly up to the tie order
    // Fewer slots in all than the layer's budget: every head keeps all it holds.
    View small(6, 3, 40, {3, 5, 8});
    EXPECT_EQ(head_budgets(a, small, 10, scores), (std::vector<int64_t>{3, 5, 8}));
}

} // namespace
