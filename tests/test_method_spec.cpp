// Run specs (core/method_spec.h) and the combinations the policy host accepts
// (core/policy.h): parsing with column-precise errors, resolving against the built-in
// registry (names, parameters, types, ranges, canonical text), budgets, and the refusal of
// two scorers or an allocator without a scorer.
#include "core/error.h"
#include "core/method_spec.h"
#include "core/plugin_registry.h"
#include "core/policy.h"
#include "plugins/builtin.h"

#include <gtest/gtest.h>

#include <cstdio>

#include <string>
#include <utility>
#include <vector>

namespace {

using kvscope::Budget;
using kvscope::MethodCall;
using kvscope::parse_method_spec;
using kvscope::resolve_method_spec;

const kvscope::PluginRegistry& registry() {
    static const kvscope::PluginRegistry r = [] {
        kvscope::PluginRegistry reg;
        reg.add_builtin(kvscope_builtin_plugin());
        return reg;
    }();
    return r;
}

// The message of the kvscope::Error that f throws ("" and a test failure if none).
template <class F> std::string error_of(F&& f) {
    try {
        f();
    } catch (const kvscope::Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        ADD_FAILURE() << "threw something other than kvscope::Error: " << e.what();
        return e.what();
    }
    ADD_FAILURE() << "did not throw";
    return "";
}

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << "in: " << (text)

// ---- parse_method_spec -------------------------------------------------------------------

TEST(ParseMethodSpec, GoodSpecs) {
    auto one = parse_method_spec("snapkv");
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(one[0].name, "snapkv");
    EXPECT_TRUE(one[0].args.empty());

    auto two = parse_method_spec("snapkv(window=32,kernel=7)+pyramid(beta=20)");
    ASSERT_EQ(two.size(), 2u);
    EXPECT_EQ(two[0].name, "snapkv");
    using Args = std::vector<std::pair<std::string, std::string>>;
    EXPECT_EQ(two[0].args, (Args{{"window", "32"}, {"kernel", "7"}}));
    EXPECT_EQ(two[1].name, "pyramid");
    EXPECT_EQ(two[1].args, (Args{{"beta", "20"}}));

    // Spaces anywhere between tokens; empty parentheses; values kept as written, in order.
    auto spaced = parse_method_spec("  h2o ( recent = 0.25 ) + adakv( floor=0.1 , floor=0.3)  ");
    ASSERT_EQ(spaced.size(), 2u);
    EXPECT_EQ(spaced[0].name, "h2o");
    EXPECT_EQ(spaced[0].args, (Args{{"recent", "0.25"}}));
    EXPECT_EQ(spaced[1].args, (Args{{"floor", "0.1"}, {"floor", "0.3"}}));
    auto empty_parens = parse_method_spec("full()");
    ASSERT_EQ(empty_parens.size(), 1u);
    EXPECT_EQ(empty_parens[0].name, "full");
    EXPECT_TRUE(empty_parens[0].args.empty());
    EXPECT_EQ(parse_method_spec("a+b+c").size(), 3u);
    // The parser does not know the methods: unknown names parse (resolving refuses them).
    EXPECT_EQ(parse_method_spec("nosuch(x=y)")[0].args, (Args{{"x", "y"}}));
}

TEST(ParseMethodSpec, BadSpecsNameTheColumn) {
    struct Case {
        const char* spec;
        int column;
        const char* what;
    };
    const Case cases[] = {
        {"", 1, "expected a method name"},
        {"   ", 4, "expected a method name"},
        {"snapkv+", 8, "expected a method name"},
        {"+snapkv", 1, "expected a method name"},
        {"snapkv(", 8, "expected a parameter name"},
        {"snapkv(window)", 14, "expected '=' after window"},
        {"snapkv(window=)", 15, "expected a value"},
        {"snapkv(window=32", 17, "expected ',' or ')'"},
        {"snapkv(window=32,)", 18, "expected a parameter name"},
        {"snapkv(window=32 kernel=5)", 18, "expected ',' or ')'"},
        {"snapkv)", 7, "unexpected ')'"},
        {"snapkv pyramid", 8, "unexpected 'p'"},
        {"snapkv(window=32))", 18, "unexpected ')'"},
        {"snapkv(=3)", 8, "expected a parameter name"},
    };
    for (const Case& c : cases) {
        const std::string msg = error_of([&] { parse_method_spec(c.spec); });
        EXPECT_CONTAINS(msg, "method spec: column " + std::to_string(c.column) + ": ") << " for \"" << c.spec << "\"";
        EXPECT_CONTAINS(msg, c.what) << " for \"" << c.spec << "\"";
        EXPECT_CONTAINS(msg, std::string("\"") + c.spec + "\"") << " (the message quotes the spec)";
    }
}

// ---- resolve_method_spec ------------------------------------------------------------------

TEST(ResolveMethodSpec, FillsDefaultsAndWritesCanonicalText) {
    auto full = resolve_method_spec(registry(), "full");
    ASSERT_EQ(full.size(), 1u);
    EXPECT_EQ(full[0].text, "full");
    EXPECT_TRUE(full[0].params.empty());
    ASSERT_NE(full[0].ref.method, nullptr);
    EXPECT_STREQ(full[0].ref.method->name, "full");
    EXPECT_EQ(full[0].ref.plugin->origin, "built-in");

    auto snap = resolve_method_spec(registry(), "snapkv");
    ASSERT_EQ(snap.size(), 1u);
    EXPECT_EQ(snap[0].params, (std::vector<double>{32, 5, 0}));
    EXPECT_EQ(snap[0].text, "snapkv(window=32,kernel=5,max_pool=0)");

    // Written in any order, with spaces: the canonical text has every parameter in schema order.
    auto both = resolve_method_spec(registry(), " snapkv( kernel = 7 , window=16 ) + pyramid ");
    ASSERT_EQ(both.size(), 2u);
    EXPECT_EQ(both[0].params, (std::vector<double>{16, 7, 0}));
    EXPECT_EQ(both[0].text, "snapkv(window=16,kernel=7,max_pool=0)");
    EXPECT_EQ(both[1].text, "pyramid(beta=20)");
    // The canonical text resolves to itself.
    EXPECT_EQ(resolve_method_spec(registry(), both[0].text)[0].text, both[0].text);

    EXPECT_EQ(resolve_method_spec(registry(), "h2o(recent=0.25)")[0].text, "h2o(recent=0.25)");
    EXPECT_EQ(resolve_method_spec(registry(), "h2o")[0].text, "h2o(recent=0.5)");
    EXPECT_EQ(resolve_method_spec(registry(), "adakv(floor=0.125)")[0].params, std::vector<double>{0.125});
    EXPECT_EQ(resolve_method_spec(registry(), "streaming_llm(sinks=0)")[0].text, "streaming_llm(sinks=0,every=1)");
    // Float parameters take integers and exponents; a later value of the same name wins.
    EXPECT_EQ(resolve_method_spec(registry(), "pyramid(beta=1e2)")[0].params, std::vector<double>{100});
    // Large and small floats print with an exponent but no '+', which joins methods (found by
    // fuzz_method_spec: "pyramid(beta=1e+06)" did not parse back).
    for (const char* spec : {"pyramid(beta=1e6)", "h2o(recent=1e-07)"}) {
        const std::string text = resolve_method_spec(registry(), spec)[0].text;
        EXPECT_EQ(text.find('+'), std::string::npos) << text;
        EXPECT_EQ(resolve_method_spec(registry(), text)[0].params, resolve_method_spec(registry(), spec)[0].params);
    }
    EXPECT_EQ(resolve_method_spec(registry(), "pyramid(beta=1e6)")[0].text, "pyramid(beta=1e6)");
    EXPECT_EQ(resolve_method_spec(registry(), "h2o(recent=1e-07)")[0].text, "h2o(recent=1e-7)");
    EXPECT_EQ(resolve_method_spec(registry(), "h2o(recent=0.1,recent=0.3)")[0].params, std::vector<double>{0.3});
    // Integer parameters accept an integral number however written.
    EXPECT_EQ(resolve_method_spec(registry(), "snapkv(window=8.0)")[0].params[0], 8);

    // Every built-in method resolves with its defaults, and its text resolves back to itself.
    for (const char* name : {"full", "window", "streaming_llm", "h2o", "snapkv", "tova", "key_norm", "random", "oracle",
                             "pyramid", "adakv"}) {
        auto r = resolve_method_spec(registry(), name);
        ASSERT_EQ(r.size(), 1u) << name;
        EXPECT_EQ(resolve_method_spec(registry(), r[0].text)[0].text, r[0].text) << name;
        EXPECT_EQ(int64_t(r[0].params.size()), int64_t(r[0].ref.method->n_params)) << name;
    }
}

TEST(ResolveMethodSpec, BoolParameters) {
    EXPECT_EQ(resolve_method_spec(registry(), "snapkv(max_pool=true)")[0].params[2], 1);
    EXPECT_EQ(resolve_method_spec(registry(), "snapkv(max_pool=false)")[0].params[2], 0);
    EXPECT_EQ(resolve_method_spec(registry(), "snapkv(max_pool=1)")[0].params[2], 1);
    EXPECT_EQ(resolve_method_spec(registry(), "snapkv(max_pool=0)")[0].params[2], 0);
    EXPECT_EQ(resolve_method_spec(registry(), "snapkv(max_pool=true)")[0].text, "snapkv(window=32,kernel=5,max_pool=1)");
    EXPECT_CONTAINS(error_of([] { resolve_method_spec(registry(), "snapkv(max_pool=2)"); }), "outside [0, 1]");
    EXPECT_CONTAINS(error_of([] { resolve_method_spec(registry(), "snapkv(max_pool=0.5)"); }), "not an integer");
    EXPECT_CONTAINS(error_of([] { resolve_method_spec(registry(), "snapkv(max_pool=yes)"); }), "not a number");
    EXPECT_CONTAINS(error_of([] { resolve_method_spec(registry(), "snapkv(max_pool=True)"); }), "not a number");
    // true/false are for bools only.
    EXPECT_CONTAINS(error_of([] { resolve_method_spec(registry(), "snapkv(window=true)"); }), "not a number");
}

TEST(ResolveMethodSpec, RefusesWhatTheSchemaDoesNotAllow) {
    struct Case {
        const char* spec;
        std::vector<const char*> parts; // all in the message
    };
    const Case cases[] = {
        {"nosuch", {"method spec: nosuch: ", "no such method"}},
        {"snapkv+nosuch(x=1)", {"nosuch", "no such method"}},
        {"snapkv(windows=3)", {"snapkv(windows)", "no such parameter"}},
        {"full(x=1)", {"full(x)", "no such parameter"}},
        {"snapkv(window=0)", {"snapkv(window)", "0 is outside [1, 1048576]"}},
        {"snapkv(window=-4)", {"snapkv(window)", "outside"}},
        {"snapkv(kernel=1024)", {"snapkv(kernel)", "outside [1, 1023]"}},
        {"h2o(recent=1.5)", {"h2o(recent)", "outside [0, 1]"}},
        {"h2o(recent=-0.1)", {"h2o(recent)", "outside"}},
        {"snapkv(window=3.5)", {"snapkv(window)", "'3.5' is not an integer"}},
        {"snapkv(window=1e-1)", {"snapkv(window)", "not an integer"}},
        {"snapkv(window=abc)", {"snapkv(window)", "'abc' is not a number"}},
        {"snapkv(window=32x)", {"snapkv(window)", "not a number"}},
        {"snapkv(window=nan)", {"snapkv(window)", "not a number"}},
        {"snapkv(window=inf)", {"snapkv(window)", "not a number"}},
        {"h2o(recent=0x)", {"h2o(recent)", "not a number"}},
        {"snapkv(window=32", {"column 17"}}, // parse errors come through unchanged
    };
    for (const Case& c : cases) {
        const std::string msg = error_of([&] { resolve_method_spec(registry(), c.spec); });
        for (const char* part : c.parts) EXPECT_CONTAINS(msg, part) << " for \"" << c.spec << "\"";
    }
}

// ---- Budget --------------------------------------------------------------------------------

TEST(Budget, ParsesCountsFractionsAndPercentages) {
    Budget b = Budget::parse("128");
    EXPECT_FALSE(b.fraction);
    EXPECT_EQ(b.value, 128);
    EXPECT_EQ(b.tokens(1000), 128);
    EXPECT_EQ(b.tokens(10), 128); // a count is a count, whatever the context
    EXPECT_EQ(b.text(), "128");

    Budget f = Budget::parse("0.25");
    EXPECT_TRUE(f.fraction);
    EXPECT_DOUBLE_EQ(f.value, 0.25);
    EXPECT_EQ(f.tokens(100), 25);
    EXPECT_EQ(f.tokens(10), 3); // ceil(2.5)
    EXPECT_EQ(f.tokens(1), 1);
    EXPECT_EQ(f.tokens(0), 1); // never zero
    EXPECT_EQ(f.text(), "25%");

    Budget p = Budget::parse("25%");
    EXPECT_TRUE(p.fraction);
    EXPECT_DOUBLE_EQ(p.value, 0.25);
    EXPECT_EQ(p.tokens(100), 25);
    EXPECT_EQ(p.tokens(161), 41); // ceil(40.25)
    EXPECT_EQ(p.text(), "25%");

    Budget all = Budget::parse("100%");
    EXPECT_TRUE(all.fraction);
    EXPECT_EQ(all.tokens(168), 168);
    EXPECT_EQ(all.text(), "100%");
    Budget one = Budget::parse("1");
    EXPECT_FALSE(one.fraction);
    EXPECT_EQ(one.tokens(500), 1);
    Budget half = Budget::parse("50%");
    EXPECT_EQ(half.tokens(7), 4);
    const Budget run_default{1, true}; // RunOptions's default
    EXPECT_EQ(run_default.tokens(77), 77);
    EXPECT_EQ(run_default.text(), "100%");
}

TEST(Budget, RefusesBadText) {
    for (const char* bad : {"0", "-3", "abc", "150%", "", "%", "0%", "-25%", "1.5", "128x", "12 8", "nan", "inf",
                            "101%"}) {
        const std::string msg = error_of([&] { Budget::parse(bad); });
        EXPECT_CONTAINS(msg, std::string("budget: ") + bad + ": ") << " for \"" << bad << "\"";
    }
    EXPECT_CONTAINS(error_of([] { Budget::parse("150%"); }), "at most 100%");
    EXPECT_CONTAINS(error_of([] { Budget::parse("1.5"); }), "whole number");
    EXPECT_CONTAINS(error_of([] { Budget::parse("-3"); }), "positive");
    // A count past int32 was cast to int64 unchecked (undefined for 1e28; found by fuzz_method_spec).
    EXPECT_CONTAINS(error_of([] { Budget::parse("1e28"); }), "at most 2147483647");
    EXPECT_CONTAINS(error_of([] { Budget::parse("2147483648"); }), "at most 2147483647");
    EXPECT_EQ(Budget::parse("2147483647").tokens(10), 2147483647);
}

// ---- Policy: which combinations a run accepts ----------------------------------------------

std::string policy_error(const std::string& spec) {
    return error_of([&] { kvscope::Policy policy(resolve_method_spec(registry(), spec), Budget{64, false}, 0); });
}

TEST(Policy, AcceptsOneScorerWithAtMostOneAllocatorOfEachKind) {
    for (const char* spec : {"full", "window", "snapkv", "h2o", "snapkv+pyramid", "snapkv+adakv", "snapkv+pyramid+adakv",
                             "pyramid+snapkv", "adakv+snapkv(window=8)"}) {
        try {
            kvscope::Policy policy(resolve_method_spec(registry(), spec), Budget{64, false}, 0);
            EXPECT_EQ(policy.budget().tokens(1000), 64) << spec;
        } catch (const std::exception& e) {
            ADD_FAILURE() << spec << ": " << e.what();
        }
    }
    kvscope::Policy p(resolve_method_spec(registry(), "snapkv+pyramid"), Budget{64, false}, 0);
    EXPECT_EQ(p.text(), "snapkv(window=32,kernel=5,max_pool=0)+pyramid(beta=20)");
    EXPECT_TRUE(p.compresses());
    EXPECT_EQ(p.mass_window(), 32);
    kvscope::Policy full(resolve_method_spec(registry(), "full"), Budget{1, true}, 0);
    EXPECT_FALSE(full.compresses());
}

TEST(Policy, RefusesTwoScorers) {
    for (const char* spec : {"snapkv+h2o", "window+window", "h2o+snapkv+pyramid", "full+snapkv"}) {
        const std::string msg = policy_error(spec);
        EXPECT_CONTAINS(msg, "a run has one scorer") << " for " << spec;
    }
    EXPECT_CONTAINS(policy_error("snapkv+h2o"), "snapkv is already it");
}

TEST(Policy, RefusesAnAllocatorWithoutAScorer) {
    for (const char* spec : {"pyramid", "adakv", "pyramid+adakv"}) {
        const std::string msg = policy_error(spec);
        EXPECT_CONTAINS(msg, "an allocator needs a scorer") << " for " << spec;
    }
}

TEST(Policy, RefusesTwoAllocatorsOfOneKind) {
    EXPECT_CONTAINS(policy_error("snapkv+pyramid+pyramid(beta=4)"), "a run has one layer allocator");
    EXPECT_CONTAINS(policy_error("snapkv+adakv+adakv"), "a run has one head allocator");
}

TEST(Policy, AMethodWhoseCreateFailsIsNamed) {
    // In the schema's range but refused by the method itself (an even pooling kernel).
    const std::string msg = policy_error("snapkv(kernel=4)");
    EXPECT_CONTAINS(msg, "plugin 'builtin' (built-in): snapkv.create");
    EXPECT_CONTAINS(msg, "kernel must be odd");
}

// A refused combination, or a method whose create() fails, must destroy every instance
// the policy already created: counted here through a plugin of hand-written C hooks.
int g_live_instances = 0;

int counted_create(const double*, kvs_instance_info*, void** self, char*, size_t) {
    *self = new int(0);
    ++g_live_instances;
    return 0;
}
int failing_create(const double*, kvs_instance_info*, void**, char* err, size_t n) {
    std::snprintf(err, n, "refuses to start");
    return -1;
}
void counted_destroy(void* self) {
    delete static_cast<int*>(self);
    --g_live_instances;
}
int zero_score(void*, const kvs_step_view*, DLTensor*, char*, size_t) { return 0; }
int same_budgets(void*, const kvs_budget_view* v, int64_t* out, char*, size_t) {
    for (int32_t l = 0; l < v->n_layer; ++l) out[l] = v->budget;
    return 0;
}

const kvscope::PluginRegistry& counting_registry() {
    static kvs_method scorer{}, allocator{}, failing{};
    static const kvs_method* methods[] = {&scorer, &allocator, &failing};
    static const kvs_plugin plugin = {KVS_ABI_VERSION, KVS_STRUCT_SIZES, "counted", nullptr, methods, 3};
    static const kvscope::PluginRegistry r = [] {
        for (kvs_method* m : {&scorer, &allocator, &failing}) {
            m->struct_size = sizeof(kvs_method);
            m->help = "";
            m->create = counted_create;
            m->destroy = counted_destroy;
        }
        scorer.name = "counted_scorer";
        scorer.family = "scorer";
        scorer.score = zero_score;
        allocator.name = "counted_alloc";
        allocator.family = "allocator";
        allocator.layer_budgets = same_budgets;
        failing.name = "failing";
        failing.family = "scorer";
        failing.score = zero_score;
        failing.create = failing_create;
        kvscope::PluginRegistry reg;
        reg.add_builtin(&plugin);
        return reg;
    }();
    return r;
}

TEST(Policy, DestroysWhatItCreatedWhenItRefuses) {
    const auto& reg = counting_registry();
    {
        kvscope::Policy ok(resolve_method_spec(reg, "counted_scorer+counted_alloc"), Budget{8, false}, 0);
        EXPECT_EQ(g_live_instances, 2);
    }
    EXPECT_EQ(g_live_instances, 0);
    for (const char* spec : {"counted_alloc", "counted_scorer+counted_scorer", "counted_scorer+counted_alloc+counted_alloc",
                             "counted_scorer+failing", "counted_alloc+counted_scorer+failing"}) {
        EXPECT_THROW(kvscope::Policy(resolve_method_spec(reg, spec), Budget{8, false}, 0), kvscope::Error) << spec;
        EXPECT_EQ(g_live_instances, 0) << spec << ": instances leaked";
        g_live_instances = 0;
    }
    EXPECT_CONTAINS(error_of([&] { kvscope::Policy p(resolve_method_spec(reg, "failing"), Budget{8, false}, 0); }),
                    "plugin 'counted' (built-in): failing.create: failed (-1): refuses to start");
}

} // namespace
