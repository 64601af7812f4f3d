// The built-in plugin's descriptor: each method file exposes kvs_method_<name>().
#include "plugins/builtin.h"
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <iterator>

const kvs_method* kvs_method_full();
const kvs_method* kvs_method_window();
const kvs_method* kvs_method_streaming_llm();
const kvs_method* kvs_method_h2o();
const kvs_method* kvs_method_snapkv();
const kvs_method* kvs_method_tova();
const kvs_method* kvs_method_key_norm();
const kvs_method* kvs_method_random();
const kvs_method* kvs_method_oracle();
const kvs_method* kvs_method_pyramid();
const kvs_method* kvs_method_adakv();
const kvs_method* kvs_method_headkv();
const kvs_method* kvs_method_cake();
const kvs_method* kvs_method_razor();
const kvs_method* kvs_method_duo();

extern "C" const kvs_plugin* kvscope_builtin_plugin(void) {
    static const kvs_method* const methods[] = {
        kvs_method_full(),   kvs_method_window(), kvs_method_streaming_llm(), kvs_method_h2o(),
        kvs_method_snapkv(), kvs_method_tova(),   kvs_method_key_norm(),      kvs_method_random(),
        kvs_method_oracle(), kvs_method_pyramid(), kvs_method_adakv(),      kvs_method_headkv(),
        kvs_method_cake(),   kvs_method_razor(),  kvs_method_duo(),
    };
    static const kvs_plugin plugin = {
        KVS_ABI_VERSION, KVS_STRUCT_SIZES, "builtin", KVS_BUILD_TAG, methods, int32_t(std::size(methods)),
    };
    return &plugin;
}
