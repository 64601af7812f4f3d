#include "core/plugin_registry.h"

#include "core/crash_guard.h"
#include "core/error.h"
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <regex>

namespace kvscope {

namespace fs = std::filesystem;

const char* host_build_tag() { return KVS_BUILD_TAG; }

Plugin::~Plugin() {
    if (handle && crash_.empty()) dlclose(handle); // a crashed library stays mapped: dlclose runs its destructors
    if (!loaded_copy.empty()) {
        std::error_code ignored;
        fs::remove(loaded_copy, ignored);
    }
}

void Plugin::mark_crashed(const std::string& what) const {
    std::lock_guard lock(crash_mutex_);
    if (crash_.empty()) crash_ = what;
}

std::string Plugin::crash() const {
    std::lock_guard lock(crash_mutex_);
    return crash_;
}

namespace {

// Everything the host reads from a descriptor, checked before first use.
void check_descriptor(const kvs_plugin* d, const std::string& where) {
    auto fail = [&](const std::string& msg) { throw Error(where, "plugin", msg); };
    if (d == nullptr) fail(std::string(KVS_ENTRY_SYMBOL) + "() returned NULL");
    if (d->abi_version != KVS_ABI_VERSION)
        fail("built for plugin ABI " + std::to_string(d->abi_version) + ", this kvscope speaks ABI " +
             std::to_string(KVS_ABI_VERSION) + ": rebuild the plugin against this SDK");
    const uint32_t host_sizes[4] = KVS_STRUCT_SIZES;
    const char* struct_names[4] = {"kvs_method", "kvs_step_view", "kvs_budget_view", "kvs_instance_info"};
    for (int i = 0; i < 4; ++i)
        if (d->sizes[i] != host_sizes[i])
            fail(std::string("sizeof(") + struct_names[i] + ") is " + std::to_string(d->sizes[i]) +
                 " in the plugin but " + std::to_string(host_sizes[i]) + " here: its SDK header differs");
    if (d->build_tag && std::strcmp(d->build_tag, host_build_tag()) != 0)
        fail(std::string("links libtorch built as \"") + d->build_tag + "\" but kvscope is \"" + host_build_tag() +
             "\": rebuild it against this libtorch");
    if (d->name == nullptr || d->name[0] == 0) fail("has no name");
    if (d->n_methods < 0 || (d->n_methods > 0 && d->methods == nullptr)) fail("has a bad method list");
    static const std::regex identifier("[a-z_][a-z0-9_]*");
    for (int32_t i = 0; i < d->n_methods; ++i) {
        const kvs_method* m = d->methods[i];
        if (m == nullptr || m->struct_size != sizeof(kvs_method)) fail("method " + std::to_string(i) + " is malformed");
        const std::string name = m->name ? m->name : "";
        if (!std::regex_match(name, identifier)) fail("method " + std::to_string(i) + " has no valid name");
        auto bad = [&](const std::string& msg) { fail("method '" + name + "' " + msg); };
        if (m->create == nullptr || m->destroy == nullptr) bad("lacks create/destroy");
        const std::string family = m->family ? m->family : "";
        if (family != "scorer" && family != "allocator") bad("has family '" + family + "' (scorer or allocator)");
        if (m->score && m->select) bad("defines both score and select");
        if (family == "allocator" && !m->layer_budgets && !m->head_budgets) bad("is an allocator with no hook");
        if (m->n_params < 0 || (m->n_params > 0 && m->params == nullptr)) bad("has a bad parameter list");
        for (int32_t p = 0; p < m->n_params; ++p) {
            const kvs_param_def& def = m->params[p];
            const std::string pname = def.name ? def.name : "";
            if (!std::regex_match(pname, identifier)) bad("parameter " + std::to_string(p) + " has no valid name");
            if (!(def.min_value <= def.default_value && def.default_value <= def.max_value))
                bad("parameter '" + pname + "' has its default outside its range");
        }
    }
}

} // namespace

void PluginRegistry::add(std::shared_ptr<const Plugin> plugin) {
    // A reload replaces the plugin of the same origin; any other name clash is refused.
    std::vector<std::shared_ptr<const Plugin>> kept;
    for (auto& p : plugins_)
        if (p->origin != plugin->origin) kept.push_back(p);
    for (int32_t i = 0; i < plugin->descriptor->n_methods; ++i) {
        const std::string name = plugin->descriptor->methods[i]->name;
        for (auto& p : kept)
            for (int32_t j = 0; j < p->descriptor->n_methods; ++j)
                if (name == p->descriptor->methods[j]->name)
                    throw Error(plugin->origin, "plugin", "method '" + name + "' is already defined by " + p->origin);
    }
    kept.push_back(std::move(plugin));
    plugins_ = std::move(kept);
}

void PluginRegistry::add_builtin(const kvs_plugin* descriptor) {
    check_descriptor(descriptor, "built-in plugin");
    auto plugin = std::make_shared<Plugin>();
    plugin->name = descriptor->name;
    plugin->origin = "built-in";
    plugin->descriptor = descriptor;
    add(std::move(plugin));
}

const Plugin& PluginRegistry::load(const std::string& path) {
    std::error_code ec;
    const std::string origin = fs::absolute(path, ec).lexically_normal().string();
    if (!fs::is_regular_file(origin, ec)) throw Error(path, "plugin", "no such file");
    // dlopen caches libraries by path: a rebuilt plugin at the same path would come back
    // as the old one. Each load reads a private copy instead.
    auto plugin = std::make_shared<Plugin>();
    plugin->origin = origin;
    char tmpl[] = "/tmp/kvscope-plugin-XXXXXX.so";
    int fd = mkstemps(tmpl, 3);
    if (fd < 0) throw Error(path, "plugin", std::string("cannot make a private copy: ") + std::strerror(errno));
    close(fd);
    plugin->loaded_copy = tmpl;
    fs::copy_file(origin, plugin->loaded_copy, fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error(path, "plugin", "cannot copy to " + plugin->loaded_copy + ": " + ec.message());

    plugin->handle = dlopen(plugin->loaded_copy.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!plugin->handle) throw Error(path, "plugin", std::string("dlopen failed: ") + dlerror());
    auto entry = reinterpret_cast<kvs_entry_fn>(dlsym(plugin->handle, KVS_ENTRY_SYMBOL));
    if (!entry)
        throw Error(path, "plugin", std::string("exports no ") + KVS_ENTRY_SYMBOL +
                                        "() entry point (declare it extern \"C\" KVS_EXPORT)");
    std::string thrown;
    auto call_entry = [&] {
        try {
            plugin->descriptor = entry();
        } catch (const std::exception& e) {
            thrown = e.what();
        } catch (...) {
            thrown = "an unknown exception";
        }
    };
    if (const std::optional<Crash> crash = guarded(call_entry)) {
        plugin->handle = nullptr; // left mapped: dlclose would run more of its code
        throw Error(path, "plugin", std::string(KVS_ENTRY_SYMBOL) + "() crashed: " + describe(*crash));
    }
    if (!thrown.empty()) throw Error(path, "plugin", std::string(KVS_ENTRY_SYMBOL) + "() threw: " + thrown);
    check_descriptor(plugin->descriptor, path);
    plugin->name = plugin->descriptor->name;
    add(plugin);
    return *plugin;
}

MethodRef PluginRegistry::find(const std::string& method) const {
    for (auto& p : plugins_)
        for (int32_t i = 0; i < p->descriptor->n_methods; ++i)
            if (method == p->descriptor->methods[i]->name) return {p, p->descriptor->methods[i]};
    return {};
}

std::vector<MethodRef> PluginRegistry::methods() const {
    std::vector<MethodRef> all;
    for (auto& p : plugins_)
        for (int32_t i = 0; i < p->descriptor->n_methods; ++i) all.push_back({p, p->descriptor->methods[i]});
    return all;
}

} // namespace kvscope
