// Plugins (DESIGN.md §4) against the test plugins of tests/plugins/:
// - the loader refuses a broken library with an Error naming the file and the fault;
// - a method that misbehaves during a run fails that run (status "failed", the error
//   naming the plugin, the method, the hook and the fault), its instances are destroyed,
//   and the next run in the same process works; one that crashes (a signal) does the same,
//   and its plugin is refused until it is reloaded;
// - loading the same path again replaces the plugin, while a Policy made before the
//   reload keeps running the old library's code;
// - the out-of-tree example (plugins/examples/recency_decay, compiled in-tree here) scores
//   as its comment says and refuses CUDA views.
// The run tests use the default model: a ~40-token prompt, budget 16, 3 steps.
#include "core/engine.h"
#include "core/error.h"
#include "core/kv_store.h"
#include "core/model.h"
#include "core/plugin_registry.h"
#include "core/policy.h"
#include "plugins/builtin.h"
#include "test_util.h"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

namespace kvscope {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<PluginRegistry> builtin_registry() {
    auto registry = std::make_unique<PluginRegistry>();
    registry->add_builtin(kvscope_builtin_plugin());
    return registry;
}

void expect_has(const std::string& text, const std::vector<std::string>& words) {
    for (const std::string& w : words) EXPECT_NE(text.find(w), std::string::npos) << "expected \"" << w << "\" in\n  " << text;
}

// The message of the Error that loading `path` throws ("" when it loads).
std::string load_error(PluginRegistry& registry, const std::string& path) {
    try {
        registry.load(path);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// ---- load faults ---------------------------------------------------------------------

TEST(PluginLoad, RefusesALibraryWithoutTheEntrySymbol) {
    auto registry = builtin_registry();
    const size_t n = registry->methods().size();
    const std::string e = load_error(*registry, TEST_PLUGIN_NO_ENTRY);
    expect_has(e, {TEST_PLUGIN_NO_ENTRY, "kvscope_plugin()", "entry point"});
    EXPECT_EQ(registry->methods().size(), n);
}

TEST(PluginLoad, RefusesAnotherAbiVersion) {
    auto registry = builtin_registry();
    const std::string e = load_error(*registry, TEST_PLUGIN_WRONG_ABI);
    expect_has(e, {TEST_PLUGIN_WRONG_ABI, "ABI " + std::to_string(KVS_ABI_VERSION + 1),
                   "ABI " + std::to_string(KVS_ABI_VERSION), "rebuild"});
}

TEST(PluginLoad, RefusesAnotherStructSize) {
    auto registry = builtin_registry();
    const std::string e = load_error(*registry, TEST_PLUGIN_WRONG_SIZE);
    expect_has(e, {TEST_PLUGIN_WRONG_SIZE, "sizeof(kvs_step_view)", std::to_string(sizeof(kvs_step_view) - 8),
                   std::to_string(sizeof(kvs_step_view))});
}

TEST(PluginLoad, RefusesAMissingFileAndATakenMethodName) {
    auto registry = builtin_registry();
    expect_has(load_error(*registry, "/nonexistent/libnothing.so"), {"/nonexistent/libnothing.so", "no such file"});
    // The same library under a second path: its method name is taken.
    ASSERT_EQ(load_error(*registry, TEST_PLUGIN_RECENCY_DECAY), "");
    const std::string copy = test::scratch_dir("plugins_taken") + "/librecency_copy.so";
    fs::copy_file(TEST_PLUGIN_RECENCY_DECAY, copy);
    expect_has(load_error(*registry, copy), {copy, "decayed_attention", "already defined", TEST_PLUGIN_RECENCY_DECAY});
    EXPECT_TRUE(registry->find("decayed_attention").method != nullptr);
}

TEST(PluginLoad, LoadsAfterRefusals) {
    auto registry = builtin_registry();
    load_error(*registry, TEST_PLUGIN_NO_ENTRY);
    load_error(*registry, TEST_PLUGIN_WRONG_ABI);
    ASSERT_EQ(load_error(*registry, TEST_PLUGIN_FAULTY), "");
    const MethodRef ref = registry->find("score_nan");
    ASSERT_TRUE(ref.method);
    EXPECT_EQ(ref.plugin->name, "faulty");
    EXPECT_EQ(ref.plugin->origin, fs::path(TEST_PLUGIN_FAULTY).lexically_normal().string());
}

// ---- the example plugin, hook by hook --------------------------------------------------

TEST(PluginExample, ScoresDecayedAttentionAndRefusesCuda) {
    PluginRegistry registry;
    registry.load(TEST_PLUGIN_RECENCY_DECAY);
    const MethodRef ref = registry.find("decayed_attention");
    ASSERT_TRUE(ref.method);
    const kvs_method& m = *ref.method;
    std::vector<double> params;
    for (int32_t p = 0; p < m.n_params; ++p) params.push_back(m.params[p].default_value);
    params[0] = 0.5; // lambda
    kvs_instance_info info{};
    info.struct_size = sizeof info;
    void* self = nullptr;
    char err[256] = "";
    ASSERT_EQ(m.create(params.data(), &info, &self, err, sizeof err), 0) << err;
    EXPECT_EQ(info.mass_window, 32);
    EXPECT_EQ(info.sinks, 4);

    // 2 query heads over 1 KV head, 3 valid slots padded to 4, positions 0, 5, 9 of 10.
    int32_t positions[4] = {0, 5, 9, -1};
    float mass[2][4] = {{0.2f, 0.3f, 0.5f, 0}, {0.6f, 0.1f, 0.3f, 0}};
    float out[4] = {-1, -1, -1, -1};
    int64_t kv_shape[3] = {1, 1, 4}, kv_strides[3] = {4, 4, 1}, head_shape[3] = {1, 2, 4};
    const int64_t n_slots[1] = {3}, budget[1] = {2};
    kvs_step_view v{};
    v.struct_size = sizeof v;
    v.n_layer = 1;
    v.n_head = 2;
    v.n_head_kv = 1;
    v.head_dim = 8;
    v.n_prompt = v.n_past = 10;
    v.n_max = 4;
    v.n_slots = n_slots;
    v.budget = budget;
    v.positions = {positions, {kDLCPU, 0}, 3, {kDLInt, 32, 1}, kv_shape, kv_strides, 0};
    v.mass = {mass, {kDLCPU, 0}, 3, {kDLFloat, 32, 1}, head_shape, nullptr, 0};
    DLTensor out_dl = {out, {kDLCPU, 0}, 3, {kDLFloat, 32, 1}, kv_shape, nullptr, 0};
    ASSERT_EQ(m.score(self, &v, &out_dl, err, sizeof err), 0) << err;
    for (int s = 0; s < 3; ++s) {
        const double expected = (mass[0][s] + mass[1][s]) / 2 * std::exp(-0.5 * (9 - positions[s]));
        EXPECT_NEAR(out[s], expected, 1e-6) << "slot " << s;
    }

    v.mass.device = {kDLCUDA, 0};
    EXPECT_LT(m.score(self, &v, &out_dl, err, sizeof err), 0);
    expect_has(err, {"mass", "CUDA", "CPU memory only", "--device cpu"});
    m.destroy(self);
}

// ---- runs on the default model -------------------------------------------------------

const char* const kPrompt =
    "The key-value cache of a transformer keeps the keys and values of every token it has read, so "
    "that each new token can attend to them without computing the past again. Long prompts make it large.";

// Loaded once for every test here (and left to the end of the process).
struct Shared {
    std::unique_ptr<Model> model;
    std::vector<int32_t> prompt;
    std::string error;
};
Shared& shared() {
    static Shared* s = [] {
        auto* s = new Shared;
        try {
            s->model = std::make_unique<Model>(Model::load(test::require_default_model()));
            const Tokenizer& tok = s->model->tokenizer();
            s->prompt = tok.encode(kPrompt, true, tok.add_bos_default());
        } catch (const std::exception& e) {
            s->error = e.what();
        }
        return s;
    }();
    return *s;
}

class PluginRuns : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (!shared().model) return;
        registry_ = builtin_registry().release();
        registry_->load(TEST_PLUGIN_FAULTY);
        registry_->load(TEST_PLUGIN_RECENCY_DECAY);
    }
    static void TearDownTestSuite() {
        delete registry_;
        registry_ = nullptr;
    }
    void SetUp() override {
        ASSERT_TRUE(shared().model) << "cannot load the default model: " << shared().error;
        const size_t n = shared().prompt.size();
        ASSERT_TRUE(n > 30 && n < 60) << n << " prompt tokens";
    }

    static const Model& model() { return *shared().model; }
    static const std::vector<int32_t>& prompt() { return shared().prompt; }
    static RunOptions options(const std::string& method) {
        RunOptions o;
        o.method = method;
        o.budget = Budget{16, false};
        o.n_predict = 3;
        o.stop_at_end_of_generation = false;
        return o;
    }
    static RunSummary run(const PluginRegistry& registry, const std::string& method, RunObserver* observer = nullptr) {
        return run_method(model(), registry, prompt(), options(method), nullptr, observer);
    }
    // Instances of the faulty plugin's methods not yet destroyed.
    static int live_instances() {
        for (auto& p : registry_->plugins())
            if (p->name == "faulty") {
                auto count = reinterpret_cast<int (*)()>(dlsym(p->handle, "kvs_test_live_instances"));
                return count ? count() : -1;
            }
        return -1;
    }

    static PluginRegistry* registry_;
};
PluginRegistry* PluginRuns::registry_ = nullptr;

// A run fault: the run spec, the method and hook at fault, words the error must hold.
struct Fault {
    std::string spec, method, hook;
    std::vector<std::string> words;
};

void PrintTo(const Fault& f, std::ostream* os) { *os << f.spec; }

class PluginFaults : public PluginRuns, public ::testing::WithParamInterface<Fault> {};

TEST_P(PluginFaults, FailTheRunAndTheNextRunWorks) {
    const Fault& f = GetParam();
    const RunSummary bad = run(*registry_, f.spec);
    EXPECT_EQ(bad.status, "failed");
    std::vector<std::string> words = {"plugin 'faulty'", TEST_PLUGIN_FAULTY, f.method + "." + f.hook};
    words.insert(words.end(), f.words.begin(), f.words.end());
    expect_has(bad.error, words);
    EXPECT_EQ(live_instances(), 0) << "the host must destroy every instance of a failed run";

    const RunSummary good = run(*registry_, "snapkv");
    EXPECT_EQ(good.status, "ok") << good.error;
    EXPECT_EQ(good.n_steps, 3);
}

INSTANTIATE_TEST_SUITE_P(
    Hooks, PluginFaults,
    ::testing::Values(Fault{"score_throws", "score_throws", "score", {"threw", "score exploded on purpose"}},
                      Fault{"score_nan", "score_nan", "score", {"layer 0", "NaN", "head 0 slot 0"}},
                      Fault{"select_out_of_range", "select_out_of_range", "select", {"holds no token"}},
                      Fault{"select_duplicate", "select_duplicate", "select", {"returned twice"}},
                      Fault{"select_over_budget", "select_over_budget", "select", {"over its budget of 16"}},
                      Fault{"select_evicts_sink", "select_evicts_sink", "select", {"evicted protected slot 0"}},
                      Fault{"create_fails", "create_fails", "create", {"no calibration file given"}},
                      // the scorer is created first, then the allocator fails: both must go
                      Fault{"score_zero+create_fails", "create_fails", "create", {"no calibration file given"}},
                      Fault{"snapkv+alloc_over_total", "alloc_over_total", "layer_budgets", {"over the total budget"}},
                      Fault{"snapkv+heads_over_total", "heads_over_total", "head_budgets", {"slots in all, over the total budget"}},
                      Fault{"snapkv+heads_negative", "heads_negative", "head_budgets", {"layer 1", "head 1 a negative budget"}}),
    [](const ::testing::TestParamInfo<Fault>& info) {
        std::string name = info.param.spec;
        for (char& c : name)
            if (c == '+') c = '_';
        return name;
    });

// A hook that crashes fails the run, naming the hook and the signal, and the process
// lives on. The plugin is off from then on (its state is whatever the crash left): its
// other methods are refused, naming the crash, until a reload brings a fresh copy; the
// built-in methods run as before. Each case loads its own copy of the plugin.
class PluginCrashes : public PluginRuns, public ::testing::WithParamInterface<Fault> {};

TEST_P(PluginCrashes, FailTheRunAndTurnThePluginOffUntilItIsReloaded) {
    const Fault& f = GetParam();
    auto registry = builtin_registry();
    registry->load(TEST_PLUGIN_FAULTY);
    const RunSummary crashed = run(*registry, f.spec);
    EXPECT_EQ(crashed.status, "failed");
    std::vector<std::string> words = {"plugin 'faulty'", f.method + "." + f.hook, "crashed: "};
    words.insert(words.end(), f.words.begin(), f.words.end());
    expect_has(crashed.error, words);

    const RunSummary refused = run(*registry, "score_zero");
    EXPECT_EQ(refused.status, "failed");
    expect_has(refused.error, {"score_zero.create", "crashed earlier", f.method + "." + f.hook, "reload"});
    EXPECT_EQ(run(*registry, "snapkv").status, "ok");

    registry->load(TEST_PLUGIN_FAULTY);
    const RunSummary reloaded = run(*registry, "score_zero");
    EXPECT_EQ(reloaded.status, "ok") << reloaded.error;
}

INSTANTIATE_TEST_SUITE_P(
    Hooks, PluginCrashes,
    ::testing::Values(Fault{"score_segfaults", "score_segfaults", "score", {"SIGSEGV", "at address 0x"}},
                      Fault{"score_divides_by_zero", "score_divides_by_zero", "score", {"SIGFPE"}},
                      Fault{"score_overflows_stack", "score_overflows_stack", "score", {"SIGSEGV"}}),
    [](const ::testing::TestParamInfo<Fault>& info) { return info.param.spec; });

TEST_F(PluginRuns, TwoScorersAreRefusedAndBothInstancesDestroyed) {
    const RunSummary s = run(*registry_, "score_zero+select_duplicate");
    EXPECT_EQ(s.status, "failed");
    expect_has(s.error, {"one scorer", "score_zero"});
    EXPECT_EQ(live_instances(), 0);
}

// Decisions of the prefill, per (layer, KV head).
struct Recorder : RunObserver {
    std::vector<Decision> prefill;
    void on_decisions(int64_t step, const std::vector<Decision>& d) override {
        if (step == 0) prefill = d;
    }
};

TEST_F(PluginRuns, ExampleRunsKeepingSinksAndRecentTokens) {
    Recorder recorder;
    const RunSummary s = run(*registry_, "decayed_attention(lambda=0.05,sinks=4,recent=8)", &recorder);
    ASSERT_EQ(s.status, "ok") << s.error;
    EXPECT_EQ(s.n_steps, 3);
    const int32_t n = int32_t(prompt().size());
    ASSERT_EQ(recorder.prefill.size(), size_t(model().config().n_layer * model().config().n_head_kv));
    for (const Decision& d : recorder.prefill) {
        ASSERT_EQ(d.kept.size(), 16u);
        EXPECT_EQ(d.kept.size() + d.evicted.size(), size_t(n));
        for (int32_t p : {0, 1, 2, 3, n - 8, n - 1})
            EXPECT_TRUE(std::binary_search(d.kept.begin(), d.kept.end(), p)) << "layer " << d.layer << " position " << p;
    }
}

// What a policy keeps of the prompt in layer 0, KV head 0, after the prefill (budget 16).
std::vector<int32_t> kept_after_prefill(const Model& model, const std::vector<int32_t>& prompt, Policy& policy) {
    KvStore store(model.config(), model.device(), model.dtype());
    policy.configure(store);
    model.forward(prompt, store);
    policy.after_step(store, 0, int64_t(prompt.size()), nullptr, nullptr);
    return store.positions(0, 0);
}

std::vector<int32_t> range(int32_t first, int32_t n) {
    std::vector<int32_t> r(size_t(n), 0);
    std::iota(r.begin(), r.end(), first);
    return r;
}

TEST_F(PluginRuns, ReloadReplacesThePluginWhileOldPoliciesKeepTheirLibrary) {
    const std::string path = test::scratch_dir("plugins_reload") + "/libreloadable.so";
    const Budget budget{16, false};
    auto registry = builtin_registry();
    fs::copy_file(TEST_PLUGIN_RELOAD_V1, path);
    registry->load(path);
    const size_t n_plugins = registry->plugins().size();
    ASSERT_TRUE(registry->find("reloadable").method);
    EXPECT_STREQ(registry->find("reloadable").method->help, "version 1");
    Policy old(resolve_method_spec(*registry, "reloadable"), budget, 0);
    EXPECT_EQ(old.text(), "reloadable(version=1)");

    // A rebuild in place: the same path, the file overwritten.
    fs::copy_file(TEST_PLUGIN_RELOAD_V2, path, fs::copy_options::overwrite_existing);
    registry->load(path);
    EXPECT_EQ(registry->plugins().size(), n_plugins) << "a reload replaces, it does not add";
    EXPECT_STREQ(registry->find("reloadable").method->help, "version 2");
    Policy fresh(resolve_method_spec(*registry, "reloadable"), budget, 0);
    EXPECT_EQ(fresh.text(), "reloadable(version=2)");

    const int32_t n = int32_t(prompt().size());
    EXPECT_EQ(kept_after_prefill(model(), prompt(), fresh), range(n - 16, 16)) << "version 2 keeps the newest";
    EXPECT_EQ(kept_after_prefill(model(), prompt(), old), range(0, 16)) << "the old policy runs version 1";
    const RunSummary s = run(*registry, "reloadable");
    EXPECT_EQ(s.status, "ok") << s.error;
    EXPECT_EQ(s.method, "reloadable(version=2)");

    // A broken rebuild is refused and leaves the loaded version in place.
    fs::copy_file(TEST_PLUGIN_WRONG_ABI, path, fs::copy_options::overwrite_existing);
    expect_has(load_error(*registry, path), {path, "ABI"});
    EXPECT_STREQ(registry->find("reloadable").method->help, "version 2");
}

} // namespace
} // namespace kvscope
