// snapkv: prefill-only (METHODS.md §2.1 SnapKV). Each slot's attention from the last w
// prompt queries, pooled along the slots per query head, then mean-G; the w window tokens
// are protected. As in the official code the window's own columns are left out before
// pooling (it pools attn[..., :-w]), so they do not leak into their neighbours' scores.
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <stdexcept>
#include <string>

namespace {

struct SnapKV {
    static constexpr const char* name = "snapkv";
    static constexpr const char* help =
        "SnapKV: attention from the last `window` prompt queries (window columns left out), pooled along the slots "
        "(avg as the official code, or max), mean-G; prefill only";
    static constexpr kvs_param_def params[] = {
        {"window", KVS_PARAM_INT, 32, 1, 1 << 20, "observation window: the last w prompt queries, always kept"},
        {"kernel", KVS_PARAM_INT, 5, 1, 1023, "pooling kernel along the slots (odd; 1 = no pooling)"},
        {"max_pool", KVS_PARAM_BOOL, 0, 0, 1, "max pooling instead of the official code's average pooling"},
    };

    int64_t window, kernel;
    bool max_pool;

    SnapKV(const double* p, kvs_instance_info& info) : window(int64_t(p[0])), kernel(int64_t(p[1])), max_pool(p[2] != 0) {
        if (kernel % 2 == 0) throw std::invalid_argument("snapkv: kernel must be odd, got " + std::to_string(kernel));
        info.mass_window = window;
        info.recent = window;
        info.every = 0;
    }

    // After the prefill a head's slots are still in position order (no evictions yet), so
    // pooling along the slots pools neighbouring tokens.
    at::Tensor score(const kvs::Step& s) const {
        at::Tensor in_window = s.positions.ge(s.v.n_past - window).repeat_interleave(s.group(), 1);
        return s.group_mean(kvs::pool_slots(s.mass.masked_fill(in_window, 0), kernel, max_pool));
    }
};

} // namespace

const kvs_method* kvs_method_snapkv() { return kvs::method<SnapKV>(); }
