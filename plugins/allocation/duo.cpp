// duo: DuoAttention's two classes of heads without its training (METHODS.md §3's
// retrieval score stands in for the learned gates) [assume]: the top `share` of KV heads
// by retrieval score (the best of its query heads; a head that never retrieved is never
// one) keep the whole cache, the others ("streaming heads") `sinks` sinks and the newest
// tokens. At a budget B the retrieval heads are made full best first while every other
// head can still keep its sinks and one recent token; the others share the rest of
// L*Hk*B equally. Acts after the prefill and every decode step.
#include "plugins/allocation/budget_split.h"
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

struct Duo {
    static constexpr const char* name = "duo";
    static constexpr const char* help =
        "DuoAttention-style split from the head profile: the top share of KV heads by retrieval score keep "
        "everything, the others sinks + the newest tokens";
    static constexpr kvs_param_def params[] = {
        {"share", KVS_PARAM_FLOAT, 0.25, 0, 1, "most KV heads that are retrieval heads, as a share of all"},
        {"sinks", KVS_PARAM_INT, 4, 0, 1 << 20, "first tokens a streaming head never evicts"},
    };

    double share;
    int64_t sinks;

    Duo(const double* p, kvs_instance_info& info) : share(p[0]), sinks(int64_t(p[1])) {
        info.sinks = sinks;
        info.every = 1;
        info.needs = KVS_NEEDS_HEAD_ROLES;
    }

    at::Tensor score(const kvs::Step& s) const { return s.positions.to(at::kFloat); } // newest first

    void head_budgets(const kvs::Step& s, const at::Tensor&, int64_t* out) const {
        const int64_t heads = int64_t(s.v.n_layer) * s.v.n_head_kv;
        std::vector<int64_t> candidates = kvs::ranked_above(s.role(KVS_ROLE_RETRIEVAL).reshape({heads, -1}).amax(1), 0);
        candidates.resize(std::min(candidates.size(), size_t(std::ceil(share * double(heads)))));
        kvs::two_class_budgets(heads, s.v.n_slots, s.v.budget, candidates, sinks + 1, out);
    }
};

} // namespace

const kvs_method* kvs_method_duo() { return kvs::method<Duo>(); }
