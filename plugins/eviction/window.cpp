// window: keep the newest B tokens (METHODS.md §2.1 Window-only). score = position.
#include "plugins/sdk/kvscope_plugin_aten.h"

namespace {

struct Window {
    static constexpr const char* name = "window";
    static constexpr const char* help = "keep the newest B tokens (score = position)";
    static constexpr kvs_param_def params[] = {
        {"every", KVS_PARAM_INT, 1, 0, 1 << 20, "act every N decode steps (0 = after the prefill only)"},
    };

    Window(const double* p, kvs_instance_info& info) { info.every = int64_t(p[0]); }

    at::Tensor score(const kvs::Step& s) const { return s.positions.to(at::kFloat); }
};

} // namespace

const kvs_method* kvs_method_window() { return kvs::method<Window>(); }
