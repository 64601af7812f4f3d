// adakv: AdaKV's head budgets (METHODS.md §2.2 AdaKV). Inside a layer with Hk*B_l slots,
// every KV head first gets floor(alpha*B_l) of its own top slots (protected slots, at +inf,
// first); the rest go to the top of all heads' remaining scores. A head never gets more
// than it holds, so the sum is Hk*B_l exactly whenever the heads hold that many slots.
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

struct AdaKV {
    static constexpr const char* name = "adakv";
    static constexpr const char* help =
        "AdaKV: each KV head gets floor*B_l of its own top slots, the rest of the layer's budget goes to "
        "the top scores over all heads (ties to the newer slot)";
    static constexpr kvs_param_def params[] = {
        {"floor", KVS_PARAM_FLOAT, 0.2, 0, 1, "share of B_l every head gets of its own top slots first (alpha)"},
    };

    double alpha;

    AdaKV(const double* p, kvs_instance_info&) : alpha(p[0]) {}

    void head_budgets(const kvs::Layer& l, int64_t budget, const at::Tensor& scores, int64_t* out) const {
        struct Slot { float score; int64_t slot, head; };
        auto better = [](const Slot& a, const Slot& b) {
            if (a.score != b.score) return a.score > b.score;
            return a.slot != b.slot ? a.slot > b.slot : a.head < b.head;
        };
        const at::Tensor sc = scores.to(at::kCPU, at::kFloat).contiguous();
        const float* p = sc.data_ptr<float>();
        const int64_t n_kv = l.v.n_head_kv, S = l.v.n_max, first = int64_t(std::floor(alpha * double(budget)));
        int64_t left = n_kv * budget;
        std::vector<Slot> rest, head;
        for (int64_t g = 0; g < n_kv; ++g) {
            head.clear();
            for (int64_t s = 0; s < l.v.n_slots[g]; ++s) head.push_back({p[g * S + s], s, g});
            std::sort(head.begin(), head.end(), better);
            out[g] = std::min<int64_t>(first, int64_t(head.size()));
            left -= out[g];
            rest.insert(rest.end(), head.begin() + out[g], head.end());
        }
        const int64_t take = std::clamp<int64_t>(left, 0, int64_t(rest.size()));
        std::nth_element(rest.begin(), rest.begin() + take, rest.end(), better);
        for (int64_t i = 0; i < take; ++i) ++out[rest[size_t(i)].head];
    }
};

} // namespace

const kvs_method* kvs_method_adakv() { return kvs::method<AdaKV>(); }
