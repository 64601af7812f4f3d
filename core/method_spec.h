// Run specs: the text a researcher writes to pick methods, e.g.
//
//   snapkv(window=32,kernel=7)+pyramid(beta=20)
//
// one call per method, joined by '+', each with optional name=value parameters. Resolving
// a spec checks every name and value against the methods' schemas.
#pragma once

#include "core/plugin_registry.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kvscope {

struct MethodCall {
    std::string name;
    std::vector<std::pair<std::string, std::string>> args; // in the order written
};

// Throws Error("method spec", ...) naming the column of a syntax error.
std::vector<MethodCall> parse_method_spec(const std::string& spec);

struct ResolvedMethod {
    MethodRef ref;
    std::vector<double> params; // one per schema entry, defaults filled in
    std::string text;           // canonical form with every parameter: "snapkv(window=32,kernel=5,max_pool=0)"
};

// Throws Error naming the unknown method, unknown parameter, ill-typed or out-of-range value.
std::vector<ResolvedMethod> resolve_method_spec(const PluginRegistry& registry, const std::string& spec);

// A budget: slots kept per (layer, KV head), absolute ("128") or a fraction of the
// context at the time the method acts ("0.25" or "25%").
struct Budget {
    double value = 0;
    bool fraction = false;

    static Budget parse(const std::string& text); // throws Error
    int64_t tokens(int64_t n_context) const;
    std::string text() const;
};

} // namespace kvscope
