// tova: Token Omission Via Attention (METHODS.md §2.1 TOVA). The current query's attention,
// averaged over all query heads of the layer: one set per layer, shared by every KV head.
// Once the cache is full, each decode step evicts the one token with the lowest score.
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <stdexcept>
#include <string>

namespace {

struct Tova {
    static constexpr const char* name = "tova";
    static constexpr const char* help =
        "TOVA: the last query's attention averaged over all heads of the layer; one kept set per layer "
        "(prefill: applied once with the last prompt query [assume])";
    static constexpr kvs_param_def params[] = {
        {"every", KVS_PARAM_INT, 1, 0, 1 << 20, "act every N decode steps (0 = after the prefill only)"},
    };

    Tova(const double* p, kvs_instance_info& info) {
        info.mass_window = 1;
        info.every = int64_t(p[0]);
    }

    at::Tensor score(const kvs::Layer& l) const {
        if (!l.positions.eq(l.positions[0]).all().item<bool>())
            throw std::runtime_error("tova keeps one token set per layer, but the KV heads of layer " +
                                     std::to_string(l.v.layer) +
                                     " hold different positions (is it combined with a head allocator?)");
        return l.mass.mean(0, true).expand({l.v.n_head_kv, l.v.n_max});
    }
};

} // namespace

const kvs_method* kvs_method_tova() { return kvs::method<Tova>(); }
