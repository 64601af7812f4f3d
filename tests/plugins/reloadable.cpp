// Test plugin built twice, RELOADABLE_VERSION 1 and 2, for the reload test: version 1
// keeps the oldest tokens, version 2 the newest; the help and a default say which it is.
#include "plugins/sdk/kvscope_plugin.h"

#define STR2(x) #x
#define STR(x) STR2(x)

namespace {

int instance;

const kvs_param_def params[] = {{"version", KVS_PARAM_INT, RELOADABLE_VERSION, 0, 9, "which build this is"}};

int create(const double*, kvs_instance_info*, void** self, char*, size_t) {
    *self = &instance;
    return 0;
}
void destroy(void*) {}

int score(void*, const kvs_step_view* v, DLTensor* out, char*, size_t) {
    const DLTensor& p = v->positions; // int32 [n_layer, n_head_kv, S], CPU, like out
    for (int64_t i = 0; i < p.shape[0] * p.shape[1] * p.shape[2]; ++i) {
        const int64_t l = i / (p.shape[1] * p.shape[2]), g = i / p.shape[2] % p.shape[1], s = i % p.shape[2];
        const int32_t pos = static_cast<const int32_t*>(p.data)[l * p.strides[0] + g * p.strides[1] + s * p.strides[2]];
        static_cast<float*>(out->data)[l * out->strides[0] + g * out->strides[1] + s * out->strides[2]] =
            RELOADABLE_VERSION == 1 ? float(-pos) : float(pos);
    }
    return 0;
}

} // namespace

extern "C" KVS_EXPORT const kvs_plugin* kvscope_plugin(void) {
    static const kvs_method method = [] {
        kvs_method m{};
        m.struct_size = sizeof m;
        m.name = "reloadable";
        m.family = "scorer";
        m.help = "version " STR(RELOADABLE_VERSION);
        m.params = params;
        m.n_params = 1;
        m.create = create;
        m.destroy = destroy;
        m.score = score;
        return m;
    }();
    static const kvs_method* const methods[] = {&method};
    static const kvs_plugin plugin = {KVS_ABI_VERSION, KVS_STRUCT_SIZES, "reloadable", nullptr, methods, 1};
    return &plugin;
}
