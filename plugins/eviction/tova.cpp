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

    at::Tensor score(const kvs::Step& s) const {
        // Checked on the host's counts, not the device's positions, so the step never waits:
        // heads of a layer drift apart only under a head allocator, which gives them
        // different budgets, hence different counts from the next step on.
        const int64_t n_kv = s.v.n_head_kv;
        for (int64_t l = 0; l < s.v.n_layer; ++l)
            for (int64_t g = 1; g < n_kv; ++g)
                if (s.v.n_slots[l * n_kv + g] != s.v.n_slots[l * n_kv])
                    throw std::runtime_error("tova keeps one token set per layer, but the KV heads of layer " +
                                             std::to_string(l) + " hold different numbers of tokens (is it combined "
                                             "with a head allocator?)");
        return s.mass.mean(1, true).expand({s.v.n_layer, n_kv, s.v.n_max});
    }
};

} // namespace

const kvs_method* kvs_method_tova() { return kvs::method<Tova>(); }
