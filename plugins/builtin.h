// The built-in plugin: every method in plugins/eviction and plugins/allocation, described
// through the same ABI as a loaded plugin (for PluginRegistry::add_builtin).
#pragma once

#include "plugins/sdk/kvscope_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

const kvs_plugin* kvscope_builtin_plugin(void);

#ifdef __cplusplus
}
#endif
