// Test plugin: exports its descriptor under a misspelled name, so it has no kvscope_plugin().
#include "plugins/sdk/kvscope_plugin.h"

extern "C" KVS_EXPORT const kvs_plugin* kvscope_plugins(void) {
    static const kvs_plugin plugin = {KVS_ABI_VERSION, KVS_STRUCT_SIZES, "no_entry", nullptr, nullptr, 0};
    return &plugin;
}
