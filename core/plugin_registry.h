// Where methods come from: the built-in plugin and shared libraries loaded at run time,
// each checked against the plugin ABI before any of its methods can run.
#pragma once

#include "plugins/sdk/kvscope_plugin.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kvscope {

// One loaded plugin. Instances of its methods hold a shared_ptr, so a reloaded plugin's
// old library stays mapped until the last run that used it ends.
struct Plugin {
    std::string name;      // the descriptor's name
    std::string origin;    // "built-in" or the path it was loaded from
    const kvs_plugin* descriptor = nullptr;
    void* handle = nullptr; // dlopen handle, null for the built-in plugin
    std::string loaded_copy; // the private copy dlopen read (so the file can change under it)
    ~Plugin();

    // A plugin whose code crashed (core/crash_guard.h) may have left its memory and locks in
    // any state: the host calls none of its code again, and refuses its methods, until it
    // is reloaded. crash() is empty while it has not crashed.
    void mark_crashed(const std::string& what) const;
    std::string crash() const;

private:
    mutable std::mutex crash_mutex_;
    mutable std::string crash_;
};

struct MethodRef {
    std::shared_ptr<const Plugin> plugin;
    const kvs_method* method = nullptr;
};

class PluginRegistry {
public:
    // Registers a plugin compiled into the program (the built-in methods).
    void add_builtin(const kvs_plugin* descriptor);
    // Loads a plugin library; throws Error naming the file and the fault (no entry symbol,
    // ABI or struct-size mismatch, build-tag mismatch, a method name already taken).
    // Loading a path already loaded replaces that plugin (reload after a rebuild).
    const Plugin& load(const std::string& path);

    MethodRef find(const std::string& method) const; // empty when unknown
    std::vector<MethodRef> methods() const;          // every method, in registration order
    const std::vector<std::shared_ptr<const Plugin>>& plugins() const { return plugins_; }

private:
    void add(std::shared_ptr<const Plugin> plugin);
    std::vector<std::shared_ptr<const Plugin>> plugins_;
};

// The build tag this program was compiled with (the one a libtorch-linking plugin must match).
const char* host_build_tag();

} // namespace kvscope
