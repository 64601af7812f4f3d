// key_norm: keep the keys with the smallest L2 norm, which tend to get the most attention
// (Devoto et al. 2024). score = -||k||, no attention statistics needed.
#include "plugins/sdk/kvscope_plugin_aten.h"

namespace {

struct KeyNorm {
    static constexpr const char* name = "key_norm";
    static constexpr const char* help = "keep the keys with the smallest L2 norm (Devoto et al. 2024)";
    static constexpr kvs_param_def params[] = {
        {"sinks", KVS_PARAM_INT, 0, 0, 1 << 20, "first tokens never evicted"},
        {"recent", KVS_PARAM_INT, 0, 0, 1 << 20, "newest tokens never evicted"},
        {"every", KVS_PARAM_INT, 0, 0, 1 << 20, "act every N decode steps (0 = after the prefill only)"},
    };

    KeyNorm(const double* p, kvs_instance_info& info) {
        info.needs = KVS_NEEDS_KEYS;
        info.sinks = int64_t(p[0]);
        info.recent = int64_t(p[1]);
        info.every = int64_t(p[2]);
    }

    at::Tensor score(const kvs::Step& s) const { return s.keys.to(at::kFloat).pow(2).sum(-1).sqrt().neg(); }
};

} // namespace

const kvs_method* kvs_method_key_norm() { return kvs::method<KeyNorm>(); }
