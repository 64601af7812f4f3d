// kvscope methods: every method the registry knows, with its parameters.
#include "app/cli_common.h"

#include "core/plugin_registry.h"

#include <cstdio>

namespace kvscope {

namespace {

const char* type_name(kvs_param_type type) {
    switch (type) {
    case KVS_PARAM_INT: return "int";
    case KVS_PARAM_FLOAT: return "float";
    case KVS_PARAM_BOOL: return "bool";
    }
    return "?";
}

void print_methods(const PluginRegistry& registry) {
    for (const MethodRef& ref : registry.methods()) {
        const kvs_method& m = *ref.method;
        std::printf("%-14s %-9s %s\n", m.name, m.family, m.help);
        if (ref.plugin->origin != "built-in") std::printf("%-14s           from %s\n", "", ref.plugin->origin.c_str());
        for (int32_t p = 0; p < m.n_params; ++p) {
            const kvs_param_def& d = m.params[p];
            std::printf("    %-12s %-5s %-8g [%g, %g]  %s\n", d.name, type_name(d.type), d.default_value, d.min_value,
                        d.max_value, d.help);
        }
    }
    std::printf("\nCompose them in a run spec: a scorer, optionally + a layer allocator and/or a head allocator,\n"
                "e.g. --method 'snapkv(window=32,kernel=7)+pyramid(beta=20)'.\n");
}

} // namespace

void add_methods_command(CLI::App& app) {
    auto plugins = std::make_shared<std::vector<std::string>>();
    CLI::App* cmd = app.add_subcommand("methods", "List every KV-cache method (built-in and from --plugin) with its parameters");
    add_plugin_option(*cmd, *plugins);
    cmd->callback([plugins] { print_methods(*make_registry(*plugins)); });
}

} // namespace kvscope
