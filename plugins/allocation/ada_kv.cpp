// adakv: AdaKV's head budgets (METHODS.md §2.2 AdaKV). Inside each layer, with Hk*B_l slots,
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
        "the top scores over all heads (ties to the newer token)";
    static constexpr kvs_param_def params[] = {
        {"floor", KVS_PARAM_FLOAT, 0.2, 0, 1, "share of B_l every head gets of its own top slots first (alpha)"},
    };

    double alpha;

    AdaKV(const double* p, kvs_instance_info&) : alpha(p[0]) {}

    void head_budgets(const kvs::Step& s, const at::Tensor& scores, int64_t* out) const {
        const at::Tensor sc = scores.to(at::kCPU, at::kFloat).contiguous(), pos = s.positions.to(at::kCPU).contiguous();
        const int64_t n_kv = s.v.n_head_kv, R = s.v.n_max;
        for (int64_t l = 0; l < s.v.n_layer; ++l)
            split_layer(sc.data_ptr<float>() + l * n_kv * R, pos.data_ptr<int32_t>() + l * n_kv * R, n_kv, R,
                        s.v.budget[l * n_kv], out + l * n_kv);
    }

    // One layer: scores and positions [n_kv, R] (position < 0: no token) -> out [n_kv].
    void split_layer(const float* score, const int32_t* pos, int64_t n_kv, int64_t R, int64_t budget, int64_t* out) const {
        struct Slot { float score; int32_t pos; int64_t head; };
        auto better = [](const Slot& a, const Slot& b) {
            if (a.score != b.score) return a.score > b.score;
            return a.pos != b.pos ? a.pos > b.pos : a.head < b.head;
        };
        const int64_t first = int64_t(std::floor(alpha * double(budget)));
        int64_t left = n_kv * budget;
        std::vector<Slot> rest, head;
        for (int64_t g = 0; g < n_kv; ++g) {
            head.clear();
            for (int64_t r = 0; r < R; ++r)
                if (pos[g * R + r] >= 0) head.push_back({score[g * R + r], pos[g * R + r], g});
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
