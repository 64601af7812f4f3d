// razor: RazorAttention (METHODS.md §2.2). Retrieval heads, found offline on repeated
// random tokens (the top `induction` share of query heads by induction score and the top
// `echo` share by echo score), keep the whole cache; every other head keeps `sinks` sinks,
// the newest tokens and one compensation slot: the mean key and value of everything it
// dropped, attended with logit q.k/sqrt(d) + ln(count) (the host keeps it: KVS_COMPENSATE).
// A KV head is a retrieval head if any of its query heads is [assume].
// At a budget B [assume]: retrieval heads are made full best first (by their best
// induction or echo score) while every other head can still keep its sinks, one recent
// token and the compensation slot; the others share the rest of L*Hk*B equally, the
// compensation slot counted in. Acts after the prefill and every decode step.
#include "plugins/allocation/budget_split.h"
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <cmath>
#include <vector>

namespace {

struct Razor {
    static constexpr const char* name = "razor";
    static constexpr const char* help =
        "RazorAttention: retrieval heads (top induction and echo scores of the head profile) keep everything, the "
        "others sinks + the newest tokens + one compensation slot for what they dropped";
    static constexpr kvs_param_def params[] = {
        {"induction", KVS_PARAM_FLOAT, 0.15, 0, 1, "share of query heads that are retrieval heads by induction score"},
        {"echo", KVS_PARAM_FLOAT, 0.01, 0, 1, "share of query heads that are retrieval heads by echo score"},
        {"sinks", KVS_PARAM_INT, 4, 0, 1 << 20, "first tokens a non-retrieval head never evicts"},
        {"compensate", KVS_PARAM_BOOL, 1, 0, 1, "keep the compensation slot (0: drop evicted tokens outright)"},
    };

    double induction_share, echo_share;
    int64_t sinks;
    bool compensate;

    Razor(const double* p, kvs_instance_info& info)
        : induction_share(p[0]), echo_share(p[1]), sinks(int64_t(p[2])), compensate(p[3] != 0) {
        info.sinks = sinks;
        info.every = 1;
        info.needs = KVS_NEEDS_HEAD_ROLES | (compensate ? KVS_COMPENSATE : 0u);
    }

    at::Tensor score(const kvs::Step& s) const { return s.positions.to(at::kFloat); } // newest first

    void head_budgets(const kvs::Step& s, const at::Tensor&, int64_t* out) const {
        const int64_t heads = int64_t(s.v.n_layer) * s.v.n_head_kv;
        const std::vector<bool> full = kvs::two_class_budgets(heads, s.v.n_slots, s.v.budget, retrieval_heads(s), sinks + 2, out);
        for (int64_t i = 0; i < heads && compensate; ++i)
            if (!full[size_t(i)] && out[i] > 0) --out[i]; // the compensation slot's place
    }

    // KV heads holding a retrieval query head, best first.
    std::vector<int64_t> retrieval_heads(const kvs::Step& s) const {
        const at::Tensor induction = s.role(KVS_ROLE_INDUCTION).flatten(), echo = s.role(KVS_ROLE_ECHO).flatten();
        const int64_t n = induction.numel();
        at::Tensor chosen = at::zeros({n}, at::kBool);
        for (auto [score, share] : {std::pair{induction, induction_share}, std::pair{echo, echo_share}}) {
            const int64_t k = int64_t(std::ceil(share * double(n)));
            if (k > 0) chosen.index_fill_(0, std::get<1>(score.topk(k)), true);
        }
        // -1 marks a KV head with no chosen query head (scores are >= 0).
        const at::Tensor best = at::maximum(induction, echo).masked_fill(chosen.logical_not(), -1).view({-1, s.group()}).amax(1);
        return kvs::ranked_above(best, -1);
    }
};

} // namespace

const kvs_method* kvs_method_razor() { return kvs::method<Razor>(); }
