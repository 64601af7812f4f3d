// h2o: Heavy-Hitter Oracle (METHODS.md §2.1 H2O). State = attention each slot has received
// from every query so far (decode rows over surviving keys only), summed over the query
// heads of its KV head [assume]; keep the newest recent·B tokens and the top of the rest.
#include "plugins/sdk/kvscope_plugin_aten.h"

namespace {

struct H2O {
    static constexpr const char* name = "h2o";
    static constexpr const char* help =
        "H2O: accumulated attention of every query (GQA: summed over the group [assume]) + the newest recent*B tokens";
    static constexpr kvs_param_def params[] = {
        {"recent", KVS_PARAM_FLOAT, 0.5, 0, 1, "fraction of the budget kept as the newest tokens"},
    };

    H2O(const double* p, kvs_instance_info& info) {
        info.mass_window = KVS_MASS_ALL;
        info.n_state = 1;
        info.recent_fraction = p[0];
        info.every = 1;
    }

    void observe(const kvs::Step& s) const {
        s.state.select(3, 0).add_(s.group_sum(s.mass).masked_fill(s.valid().logical_not(), 0));
    }

    at::Tensor score(const kvs::Step& s) const { return s.state.select(3, 0); }
};

} // namespace

const kvs_method* kvs_method_h2o() { return kvs::method<H2O>(); }
