// Head roles (DESIGN.md §6; the definitions are METHODS.md §3's), scored from the attention
// every layer's heads pay on the probe suite (core/probes.h), per layer x query head:
//
//   sink            text: mean over queries t >= 16 of the mass on position 0
//   locality        text: mean over queries t >= r of the mass on the last r keys, (t-r, t]; r = 64
//   previous_token  text: mean over t >= 1 of the mass on t - 1
//   entropy         text: mean over t >= 1 of H(A[t, :]) / ln(t + 1); 1 for uniform attention
//   induction       repeat: mean over the second copy's queries of the mass on the token that
//                   followed the same token's first occurrence (t - N + 1)
//   echo            repeat: the same, on the first occurrence itself (t - N)
//   retrieval       needle: the fraction of answer tokens whose query's top key is that token
//                   in the needle
//
// and per layer, CAKE's preference on the text probe's last w = 32 queries: dispersion
// H_l = -sum_{h,t,j} A log A, temporal shift V_l = sum_{h,j} Var_t A, P_l = H_l^(1/1.6) V_l^(1/0.6).
// Each role's score is its mean over the probes that define it.
#pragma once

#include "core/probes.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kvscope {

class Model;

struct HeadRoles {
    int64_t n_layer = 0, n_head = 0, n_head_kv = 0;
    std::vector<std::string> roles;          // in the order above
    std::vector<std::vector<double>> scores; // per role, [n_layer * n_head], layer-major
    std::vector<double> layer_preference;    // [n_layer]

    // Throws Error for a role it does not have.
    const std::vector<double>& role(const std::string& name) const;
    // The mean over each KV head's query heads: [n_layer * n_head_kv].
    std::vector<double> per_kv_head(const std::string& name) const;
};

// The roles, in the order HeadRoles lists them.
const std::vector<std::string>& role_names();

// Sums the scores of one probe and layer at a time, so that only one layer's attention is
// ever held.
class RoleScorer {
public:
    RoleScorer(int64_t n_layer, int64_t n_head, int64_t n_head_kv);
    // `attention`: the layer's probabilities on the whole probe, fp32 [n_head, T, T].
    void add(const Probe& probe, int64_t layer, const at::Tensor& attention);
    HeadRoles result() const;

private:
    void add_role(size_t role, int64_t layer, const at::Tensor& per_head, double weight);

    HeadRoles shape_;
    std::vector<std::vector<double>> sum_, weight_; // per role, [n_layer * n_head]
    std::vector<double> preference_sum_, preference_n_;
};

// Runs every probe through `model` (one prefill each, attention recorded densely) and
// scores every head. `progress` hears which probe runs.
HeadRoles analyze_heads(const Model& model, const std::vector<Probe>& probes,
                        const std::function<void(const Probe&)>& progress = {});

} // namespace kvscope
