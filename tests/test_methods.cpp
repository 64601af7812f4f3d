// The built-in methods (plugins/): each formula against an independent computation in plain
// loops, through the C descriptors the host calls, on hand-built one-layer step views.
#include "plugins/allocation/budget_split.h"
#include "plugins/builtin.h"
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
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
    at::Tensor positions, mass, keys, values, future, state, mass_sq, mass_entropy;
    at::Tensor head_roles; // [n_head, KVS_N_ROLES]

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
    at::Tensor positions, mass, keys, values, future, state, mass_sq, mass_entropy, head_roles;
    std::vector<int64_t> budget;
    kvs_step_view v{};

    StepView(const View& in, int64_t layer_budget = -1) : budget(in.budget) {
        auto one = [](const at::Tensor& t) { return t.defined() ? t.unsqueeze(0) : t; };
        positions = one(in.positions), mass = one(in.mass), keys = one(in.keys), values = one(in.values);
        future = one(in.future), state = one(in.state);
        mass_sq = one(in.mass_sq), mass_entropy = one(in.mass_entropy), head_roles = one(in.head_roles);
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
        v.mass_sq = dl(mass_sq);
        v.mass_entropy = dl(mass_entropy);
        v.head_roles = dl(head_roles);
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
    const std::set<std::string> allocators = {"pyramid", "adakv", "headkv"}; // cake, razor, duo also score
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
                                            "random", "oracle", "pyramid", "adakv", "headkv", "cake", "razor", "duo"}));
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


// ---- budget splits (plugins/allocation/budget_split.h) --------------------------------------

TEST(BudgetSplit, ProportionalSpendsTheTotalWithinCapsAndRoundsByRemainders) {
    using kvs::split_proportional;
    EXPECT_EQ(split_proportional(10, {1, 1, 1, 1}, {9, 9, 9, 9}), (std::vector<int64_t>{3, 3, 2, 2})); // ties: lower index
    EXPECT_EQ(split_proportional(10, {0, 0}, {9, 9}), (std::vector<int64_t>{5, 5}));                    // no weight: equal
    EXPECT_EQ(split_proportional(12, {3, 1}, {20, 20}), (std::vector<int64_t>{9, 3}));
    EXPECT_EQ(split_proportional(12, {3, 1}, {4, 20}), (std::vector<int64_t>{4, 8})); // capped, the rest to the other
    EXPECT_EQ(split_proportional(50, {1, 2}, {4, 5}), (std::vector<int64_t>{4, 5}));  // more than the caps hold
    std::mt19937 rng(3);
    for (int trial = 0; trial < 200; ++trial) {
        const size_t n = 1 + rng() % 9;
        std::vector<double> w(n);
        std::vector<int64_t> cap(n);
        int64_t caps = 0;
        for (size_t i = 0; i < n; ++i) {
            w[i] = rng() % 4 == 0 ? 0.0 : double(rng() % 1000) / 100;
            caps += cap[i] = int64_t(rng() % 60);
        }
        const int64_t spend = int64_t(rng() % 300);
        const std::vector<int64_t> out = split_proportional(spend, w, cap);
        EXPECT_EQ(total(out), std::min(spend, caps)) << trial;
        for (size_t i = 0; i < n; ++i) EXPECT_TRUE(out[i] >= 0 && out[i] <= cap[i]) << trial << " " << i;
    }
}

TEST(BudgetSplit, TwoClassMakesCandidatesFullWhileTheOthersKeepTheirMinimum) {
    const int64_t n_slots[4] = {100, 100, 100, 100}, budget[4] = {40, 40, 40, 40};
    int64_t out[4];
    // 160 slots: one full head (100) leaves 60 for three heads (>= 10 each); a second would not fit.
    std::vector<bool> full = kvs::two_class_budgets(4, n_slots, budget, {2, 0}, 10, out);
    EXPECT_EQ(full, (std::vector<bool>{false, false, true, false}));
    EXPECT_EQ(std::vector<int64_t>(out, out + 4), (std::vector<int64_t>{20, 20, 100, 20}));
    full = kvs::two_class_budgets(4, n_slots, budget, {}, 10, out); // no candidates: B each
    EXPECT_EQ(std::vector<int64_t>(out, out + 4), (std::vector<int64_t>{40, 40, 40, 40}));
}

// ---- head-aware methods ---------------------------------------------------------------------

// A one-layer view of Hk KV heads (G query heads each) holding n tokens, with role scores.
View profiled(int64_t Hk, int64_t G, int64_t n, int64_t B, const std::map<int, std::vector<float>>& roles) {
    View v(Hk * G, Hk, n);
    v.budget.assign(size_t(Hk), B);
    v.head_roles = at::zeros({Hk * G, KVS_N_ROLES}, at::kFloat);
    for (const auto& [role, per_head] : roles)
        v.head_roles.select(1, role).copy_(at::tensor(per_head, at::kFloat));
    return v;
}

std::vector<int64_t> all_head_budgets(Instance& in, const View& v) {
    std::vector<int64_t> out(size_t(v.n_kv), -7);
    StepView sv(v);
    at::Tensor scores = at::zeros({1, v.n_kv, v.S});
    DLTensor sc = dl(scores);
    char err[256] = "";
    EXPECT_EQ(in.m->head_budgets(in.self, &sv.v, &sc, out.data(), err, sizeof(err)), 0) << err;
    return out;
}

TEST(HeadKV, BaseThenShareByRetrievalScoreSpendingTheTotal) {
    // KV heads' retrieval (mean of 2 query heads): 0.5, 0, 0.25, 0.25.
    View v = profiled(4, 2, 200, 40, {{KVS_ROLE_RETRIEVAL, {1.0f, 0.0f, 0, 0, 0.5f, 0, 0.25f, 0.25f}}});
    Instance h("headkv");
    EXPECT_EQ(h.info.needs, KVS_NEEDS_HEAD_ROLES);
    // base 10 each; the pool of 120 split 2:0:1:1.
    EXPECT_EQ(all_head_budgets(h, v), (std::vector<int64_t>{70, 10, 40, 40}));
    Instance flat("headkv", {{"base", 1.0}});
    EXPECT_EQ(all_head_budgets(flat, v), (std::vector<int64_t>{40, 40, 40, 40}));
    View none = profiled(4, 2, 200, 40, {});
    EXPECT_EQ(all_head_budgets(h, none), (std::vector<int64_t>{40, 40, 40, 40})); // no scores: equal
    View few = profiled(4, 2, 200, 40, {{KVS_ROLE_RETRIEVAL, {1.0f, 1.0f, 0, 0, 0, 0, 0, 0}}});
    few.n_slots = {50, 200, 200, 200}; // head 0 holds 50: the rest of its share goes to the others
    const std::vector<int64_t> got = all_head_budgets(h, few);
    EXPECT_EQ(got[0], 50);
    EXPECT_EQ(total(got), 160);
}

TEST(Duo, TopRetrievalHeadsKeepEverythingTheOthersShareTheRest) {
    // KV heads' best retrieval score: 0.9, 0, 0.5, 0.1; 4 heads of 100 tokens, B = 60 (240 in all).
    View v = profiled(4, 1, 100, 60, {{KVS_ROLE_RETRIEVAL, {0.9f, 0.0f, 0.5f, 0.1f}}});
    Instance d("duo", {{"share", 0.5}});
    EXPECT_EQ(d.info.sinks, 4);
    EXPECT_EQ(d.info.every, 1);
    // Both candidates fit (100 + 100 + 2 x 5 <= 240): 40 left for the other two.
    EXPECT_EQ(all_head_budgets(d, v), (std::vector<int64_t>{100, 20, 100, 20}));
    Instance one("duo", {{"share", 0.25}});
    EXPECT_EQ(all_head_budgets(one, v), (std::vector<int64_t>{100, 47, 47, 46})); // the top one: 140 left for three
    Instance wide("duo", {{"share", 1.0}, {"sinks", 0}});
    View roomy = profiled(4, 1, 100, 80, {{KVS_ROLE_RETRIEVAL, {0.9f, 0.0f, 0.5f, 0.1f}}});
    EXPECT_EQ(all_head_budgets(wide, roomy), (std::vector<int64_t>{100, 20, 100, 100})); // never heads scoring 0
    Instance none("duo", {{"share", 0.0}});
    EXPECT_EQ(all_head_budgets(none, v), (std::vector<int64_t>{60, 60, 60, 60}));
}

TEST(Razor, InductionOrEchoHeadsKeepEverythingTheOthersPayTheCompensationSlot) {
    // 4 KV heads x 2 query heads; induction picks query head 5 (KV head 2), echo query head 0 (KV head 0).
    View v = profiled(4, 2, 100, 70, {{KVS_ROLE_INDUCTION, {0, 0.1f, 0, 0, 0, 0.8f, 0, 0}},
                                      {KVS_ROLE_ECHO, {0.6f, 0, 0, 0, 0, 0, 0, 0}}});
    Instance r("razor", {{"induction", 0.125}, {"echo", 0.125}});
    EXPECT_EQ(r.info.needs, KVS_NEEDS_HEAD_ROLES | KVS_COMPENSATE);
    // 280 slots: KV head 2 (0.8) full, then KV head 0 (0.6) full leaves 80 for two: 40 each, 39 tokens + the slot.
    EXPECT_EQ(all_head_budgets(r, v), (std::vector<int64_t>{100, 39, 100, 39}));
    Instance plain("razor", {{"induction", 0.125}, {"echo", 0.125}, {"compensate", 0}}); // no slot to pay for
    EXPECT_EQ(plain.info.needs, KVS_NEEDS_HEAD_ROLES);
    EXPECT_EQ(all_head_budgets(plain, v), (std::vector<int64_t>{100, 40, 100, 40}));
    Instance all("razor", {{"induction", 1.0}});
    View roomy = profiled(4, 2, 100, 100, {{KVS_ROLE_INDUCTION, {1, 1, 1, 1, 1, 1, 1, 1}}});
    EXPECT_EQ(all_head_budgets(all, roomy), (std::vector<int64_t>{100, 100, 100, 100})); // all retrieval: full
    View scores(8, 4, 10);
    EXPECT_TRUE(at::equal(score(r, scores), scores.positions.to(at::kFloat))); // newest first; the host keeps sinks
}

// CAKE on two layers: its indicator from hand loops, and its layer split.
struct CakeView {
    static constexpr int64_t L = 2, H = 4, Hk = 2, S = 12, w = 4;
    at::Tensor positions = at::arange(S, at::kInt).expand({L, Hk, S}).contiguous();
    at::Tensor mass, mass_sq, mass_entropy;
    std::vector<int64_t> n_slots = std::vector<int64_t>(size_t(L * Hk), S), budget = std::vector<int64_t>(size_t(L * Hk), 6);
    kvs_step_view v{};

    explicit CakeView(at::Tensor attention) { // [L, H, w, S]: the window's rows
        mass = attention.sum(2);
        mass_sq = attention.square().sum(2);
        mass_entropy = at::xlogy(attention, attention).neg().sum(2);
        v.struct_size = sizeof(v);
        v.n_layer = L, v.n_head = H, v.n_head_kv = Hk, v.head_dim = 4;
        v.n_prompt = v.n_past = S, v.n_max = S;
        v.n_slots = n_slots.data(), v.budget = budget.data();
        v.positions = dl(positions), v.mass = dl(mass), v.mass_sq = dl(mass_sq), v.mass_entropy = dl(mass_entropy);
    }
};

TEST(Cake, IndicatorIsPooledMeanPlusGammaVarianceOutsideTheWindow) {
    at::manual_seed(31);
    at::Tensor attention = at::softmax(at::randn({CakeView::L, CakeView::H, CakeView::w, CakeView::S}) * 2, -1);
    CakeView cv(attention);
    const double gamma = 200;
    Instance c("cake", {{"window", double(CakeView::w)}, {"kernel", 3}});
    EXPECT_EQ(c.info.needs, KVS_NEEDS_MOMENTS);
    EXPECT_EQ(c.info.mass_window, CakeView::w);
    EXPECT_EQ(c.info.recent, CakeView::w);
    at::Tensor out = at::full({CakeView::L, CakeView::Hk, CakeView::S}, NAN);
    DLTensor o = dl(out);
    char err[256] = "";
    ASSERT_EQ(c.m->score(c.self, &cv.v, &o, err, sizeof(err)), 0) << err;
    auto a = attention.accessor<float, 4>();
    for (int64_t l = 0; l < CakeView::L; ++l)
        for (int64_t g = 0; g < CakeView::Hk; ++g)
            for (int64_t j = 0; j < CakeView::S; ++j) {
                double want = 0;
                for (int64_t h = g * 2; h < g * 2 + 2; ++h) {
                    double pooled = 0; // average over j-1..j+1, zero outside and in the window
                    for (int64_t i = j - 1; i <= j + 1; ++i) {
                        if (i < 0 || i >= CakeView::S - CakeView::w) continue;
                        double mean = 0, sq = 0;
                        for (int64_t t = 0; t < CakeView::w; ++t) mean += a[l][h][t][i], sq += double(a[l][h][t][i]) * a[l][h][t][i];
                        mean /= CakeView::w;
                        pooled += mean + gamma * (sq / CakeView::w - mean * mean);
                    }
                    want += pooled / 3 / 2;
                }
                EXPECT_NEAR(out[l][g][j].item<double>(), want, 1e-4 * (1 + std::abs(want))) << l << " " << g << " " << j;
            }
}

TEST(Cake, LayerBudgetsFollowThePreferenceAndSpendTheTotal) {
    at::manual_seed(37);
    // Layer 0 peaked and shifting between queries, layer 1 near uniform and steady.
    at::Tensor attention = at::cat({at::softmax(at::randn({1, CakeView::H, CakeView::w, CakeView::S}) * 3, -1),
                                    at::softmax(at::randn({1, CakeView::H, CakeView::w, CakeView::S}) * 0.3, -1)});
    CakeView cv(attention);
    cv.budget.assign(cv.budget.size(), 5); // 20 slots: 10 per KV head across the two layers
    // P_l = H_l^(1/1.6) V_l^(1/0.6) from the definitions, in double.
    at::Tensor A = attention.to(at::kDouble);
    at::Tensor H = at::xlogy(A, A).neg().sum({1, 2, 3}), V = A.var(2, /*unbiased=*/false).sum({1, 2});
    at::Tensor P = H.pow(1 / 1.6) * V.pow(1 / 0.6);
    const double share0 = 10 * (P[0] / P.sum()).item<double>();
    std::vector<int64_t> out(size_t(CakeView::L * CakeView::Hk), -1);
    at::Tensor scores = at::zeros({CakeView::L, CakeView::Hk, CakeView::S});
    DLTensor sc = dl(scores);
    char err[256] = "";
    Instance c("cake", {{"window", double(CakeView::w)}});
    ASSERT_EQ(c.m->head_budgets(c.self, &cv.v, &sc, out.data(), err, sizeof(err)), 0) << err;
    EXPECT_EQ(total(out), 20);
    EXPECT_EQ(out[0], out[1]); // one budget per layer
    EXPECT_EQ(out[2], out[3]);
    EXPECT_LE(std::abs(double(out[0]) - share0), 1.0) << "layer 0's share " << share0;
    EXPECT_GT(out[0], out[2]); // the shifting layer gets more
    Instance flat("cake", {{"window", double(CakeView::w)}, {"tau1", 1e9}, {"tau2", 1e9}});
    ASSERT_EQ(flat.m->head_budgets(flat.self, &cv.v, &sc, out.data(), err, sizeof(err)), 0) << err;
    EXPECT_EQ(out, (std::vector<int64_t>{5, 5, 5, 5})); // tau -> inf: uniform
}

} // namespace
