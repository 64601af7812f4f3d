// Test plugin: claims a plugin ABI from the future.
#include "plugins/sdk/kvscope_plugin.h"

extern "C" KVS_EXPORT const kvs_plugin* kvscope_plugin(void) {
    static const kvs_plugin plugin = {KVS_ABI_VERSION + 1, KVS_STRUCT_SIZES, "wrong_abi", nullptr, nullptr, 0};
    return &plugin;
}
