// libFuzzer target: a run spec and a budget as `kvscope run --method ... --budget ...`
// reads them: parse_method_spec, resolve_method_spec against the built-in methods, the
// Policy the engine builds from them, and Budget::parse. The input is the spec, or
// "<spec>\n<budget>".
//
// Properties: a resolved spec's canonical text resolves again to the same parameters;
// every parameter lies in its schema's range; a parsed budget gives a positive token count.
#include "fuzz_util.h"

#include "core/method_spec.h"
#include "core/policy.h"
#include "plugins/builtin.h"

#include <string_view>

using namespace kvscope;

namespace {

const PluginRegistry& registry() {
    static PluginRegistry* r = [] {
        auto* out = new PluginRegistry;
        out->add_builtin(kvscope_builtin_plugin());
        return out;
    }();
    return *r;
}

std::string canonical(const std::vector<ResolvedMethod>& methods) {
    std::string text;
    for (const ResolvedMethod& m : methods) text += (text.empty() ? "" : "+") + m.text;
    return text;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string input(reinterpret_cast<const char*>(data), size);
    const size_t newline = input.find('\n');
    const std::string spec = input.substr(0, newline);
    const std::string budget_text = newline == std::string::npos ? "128" : input.substr(newline + 1);

    fuzz::expect_clean_errors([&] { (void)parse_method_spec(spec); });
    std::vector<ResolvedMethod> methods;
    fuzz::expect_clean_errors([&] { methods = resolve_method_spec(registry(), spec); });
    if (!methods.empty()) {
        for (const ResolvedMethod& m : methods)
            for (int32_t p = 0; p < m.ref.method->n_params; ++p) {
                const kvs_param_def& def = m.ref.method->params[p];
                if (!(m.params[p] >= def.min_value && m.params[p] <= def.max_value))
                    fuzz::fail(m.text + ": parameter " + def.name + " outside its range");
            }
        std::vector<ResolvedMethod> again;
        fuzz::expect_clean_errors([&] { again = resolve_method_spec(registry(), canonical(methods)); });
        if (again.size() != methods.size()) fuzz::fail("the canonical text " + canonical(methods) + " does not resolve");
        for (size_t i = 0; i < again.size(); ++i)
            if (again[i].text != methods[i].text)
                fuzz::fail("canonical text changes on a second resolve: " + methods[i].text + " vs " + again[i].text);
    }
    fuzz::expect_clean_errors([&] {
        const Budget budget = Budget::parse(budget_text);
        for (int64_t context : {int64_t(1), int64_t(4096), int64_t(1) << 40})
            if (budget.tokens(context) < 1) fuzz::fail("budget " + budget_text + " gives no tokens");
        (void)budget.text();
        if (!methods.empty()) (void)Policy(methods, budget, 0).compresses();
    });
    return 0;
}
