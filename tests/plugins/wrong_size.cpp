// Test plugin: the right ABI version but a kvs_step_view 8 bytes smaller, as if compiled
// against an edited copy of the SDK header.
#include "plugins/sdk/kvscope_plugin.h"

extern "C" KVS_EXPORT const kvs_plugin* kvscope_plugin(void) {
    static const kvs_plugin plugin = {
        KVS_ABI_VERSION,
        {uint32_t(sizeof(kvs_method)), uint32_t(sizeof(kvs_step_view) - 8), uint32_t(sizeof(kvs_budget_view)),
         uint32_t(sizeof(kvs_instance_info))},
        "wrong_size", nullptr, nullptr, 0};
    return &plugin;
}
