// cake: CAKE (METHODS.md §2.2), prefill only. From the attention A of the last w prompt
// queries, per layer: dispersion H_l = -sum_{h,t,j} A ln A, temporal shift V_l = sum_{h,j}
// Var_t A[h,t,j], preference P_l = H_l^(1/tau1) * V_l^(1/tau2); layer budgets B_l =
// L*B * P_l / sum P, a layer never getting more than it holds (the excess goes to the
// others), rounding to spend L*B exactly. Eviction indicator per query head I[j] =
// mean_t A + gamma * Var_t A, the window's own columns left out, average-pooled along the
// slots (kernel 5), mean-G; the w window tokens are protected. The cascading version
// (re-splitting after each layer's prefill) is not implemented: the split is made once,
// with every layer's preference known [assume: the final cascade step, without the
// never-grow rule].
#include "plugins/allocation/budget_split.h"
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Cake {
    static constexpr const char* name = "cake";
    static constexpr const char* help =
        "CAKE: layer budgets from each layer's attention dispersion and temporal shift, tokens by mean + gamma * "
        "variance of the window's attention; prefill only";
    static constexpr kvs_param_def params[] = {
        {"window", KVS_PARAM_INT, 32, 1, 1 << 20, "observation window: the last w prompt queries, always kept"},
        {"tau1", KVS_PARAM_FLOAT, 1.6, 1e-3, 1e9, "dispersion's temperature: P_l has H_l^(1/tau1)"},
        {"tau2", KVS_PARAM_FLOAT, 0.6, 1e-3, 1e9, "temporal shift's temperature: P_l has V_l^(1/tau2)"},
        {"gamma", KVS_PARAM_FLOAT, 200, 0, 1e9, "weight of the variance in the eviction indicator"},
        {"kernel", KVS_PARAM_INT, 5, 1, 1023, "average pooling of the indicator along the slots (odd)"},
    };

    int64_t window;
    double tau1, tau2, gamma;
    int64_t kernel;

    Cake(const double* p, kvs_instance_info& info)
        : window(int64_t(p[0])), tau1(p[1]), tau2(p[2]), gamma(p[3]), kernel(int64_t(p[4])) {
        if (kernel % 2 == 0) throw std::invalid_argument("cake: kernel must be odd, got " + std::to_string(kernel));
        info.mass_window = window;
        info.recent = window;
        info.every = 0;
        info.needs = KVS_NEEDS_MOMENTS;
    }

    // float [n_layer, n_head, S]: mean and variance over the window's queries of each slot's attention.
    std::pair<at::Tensor, at::Tensor> mean_var(const kvs::Step& s) const {
        const double w = double(std::min<int64_t>(window, s.v.n_prompt));
        at::Tensor mean = s.mass / w;
        return {mean, (s.mass_sq / w - mean.square()).clamp_min(0)};
    }

    at::Tensor score(const kvs::Step& s) const {
        auto [mean, var] = mean_var(s);
        at::Tensor in_window = s.positions.ge(s.v.n_past - window).repeat_interleave(s.group(), 1);
        return s.group_mean(kvs::pool_slots((mean + gamma * var).masked_fill(in_window, 0), kernel, false));
    }

    void head_budgets(const kvs::Step& s, const at::Tensor&, int64_t* out) const {
        const int64_t L = s.v.n_layer, Hk = s.v.n_head_kv;
        const at::Tensor H = s.mass_entropy.sum({1, 2}), V = mean_var(s).second.sum({1, 2});
        const at::Tensor P = H.pow(1 / tau1).mul(V.pow(1 / tau2)).to(at::kCPU, at::kDouble).contiguous();
        std::vector<double> preference(P.data_ptr<double>(), P.data_ptr<double>() + L);
        std::vector<int64_t> held(static_cast<size_t>(L));
        int64_t total = 0;
        for (int64_t l = 0; l < L; ++l) {
            held[size_t(l)] = *std::max_element(s.v.n_slots + l * Hk, s.v.n_slots + (l + 1) * Hk);
            for (int64_t g = 0; g < Hk; ++g) total += s.v.budget[l * Hk + g];
        }
        const std::vector<int64_t> layer = kvs::split_proportional(total / Hk, preference, held);
        for (int64_t i = 0; i < L * Hk; ++i) out[i] = layer[size_t(i / Hk)];
    }
};

} // namespace

const kvs_method* kvs_method_cake() { return kvs::method<Cake>(); }
