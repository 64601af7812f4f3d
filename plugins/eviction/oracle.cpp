// oracle: keep what the reference run's later queries will attend to (METHODS.md §5,
// importance recall vs oracle): score = mean-G of the future attention each key receives.
// An upper bound for scorers, not a method a real run could use.
#include "plugins/sdk/kvscope_plugin_aten.h"

namespace {

struct Oracle {
    static constexpr const char* name = "oracle";
    static constexpr const char* help = "keep the tokens the full-cache run's later queries attend to most (mean-G)";
    static constexpr kvs_param_def params[] = {
        {"sinks", KVS_PARAM_INT, 0, 0, 1 << 20, "first tokens never evicted"},
        {"recent", KVS_PARAM_INT, 0, 0, 1 << 20, "newest tokens never evicted"},
        {"every", KVS_PARAM_INT, 0, 0, 1 << 20, "act every N decode steps (0 = after the prefill only)"},
    };

    Oracle(const double* p, kvs_instance_info& info) {
        info.needs = KVS_NEEDS_FUTURE;
        info.sinks = int64_t(p[0]);
        info.recent = int64_t(p[1]);
        info.every = int64_t(p[2]);
    }

    at::Tensor score(const kvs::Step& s) const { return s.group_mean(s.future_mass); }
};

} // namespace

const kvs_method* kvs_method_oracle() { return kvs::method<Oracle>(); }
