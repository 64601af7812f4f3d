// headkv: HeadKV's head budgets (Fu et al., "Not All Heads Matter") from the head profile
// [assume: the retrieval score stands in for its retrieval-reasoning score]. Every KV head
// first gets floor(base * B) slots; the rest of L*Hk*B is split across all heads of all
// layers in proportion to each KV head's retrieval score (the mean of its query heads;
// equally when every score is 0), a head never getting more than it holds (the excess goes
// to the others). Pair it with a scorer that picks the tokens (snapkv+headkv).
#include "plugins/allocation/budget_split.h"
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

struct HeadKV {
    static constexpr const char* name = "headkv";
    static constexpr const char* help =
        "HeadKV: each KV head gets base*B, the rest of the model's budget goes to heads in proportion to their "
        "retrieval score from the head profile";
    static constexpr kvs_param_def params[] = {
        {"base", KVS_PARAM_FLOAT, 0.25, 0, 1, "share of B every KV head gets before the split by score"},
    };

    double base;

    HeadKV(const double* p, kvs_instance_info& info) : base(p[0]) { info.needs = KVS_NEEDS_HEAD_ROLES; }

    void head_budgets(const kvs::Step& s, const at::Tensor&, int64_t* out) const {
        const int64_t heads = int64_t(s.v.n_layer) * s.v.n_head_kv;
        const at::Tensor retrieval = s.group_mean(s.role(KVS_ROLE_RETRIEVAL).unsqueeze(2)).flatten().to(at::kDouble);
        std::vector<double> weight(retrieval.data_ptr<double>(), retrieval.data_ptr<double>() + heads);
        std::vector<int64_t> room(static_cast<size_t>(heads));
        int64_t pool = 0;
        for (int64_t i = 0; i < heads; ++i) {
            out[i] = std::min<int64_t>(int64_t(std::floor(base * double(s.v.budget[i]))), s.v.n_slots[i]);
            room[size_t(i)] = s.v.n_slots[i] - out[i];
            pool += s.v.budget[i] - out[i];
        }
        const std::vector<int64_t> extra = kvs::split_proportional(pool, weight, room);
        for (int64_t i = 0; i < heads; ++i) out[i] += extra[size_t(i)];
    }
};

} // namespace

const kvs_method* kvs_method_headkv() { return kvs::method<HeadKV>(); }
