// A KvCache that attends densely and shows each layer's attention probabilities to a
// callback: the head-role analysis reads them (core/head_roles.h). It can also silence
// heads (their attention output set to zero), to measure what a model loses without them.
// For probes of a few thousand tokens; it keeps every key and value.
#pragma once

#include "core/kv_cache.h"

#include <functional>
#include <set>
#include <utility>
#include <vector>

namespace kvscope {

class AttentionRecorder final : public KvCache {
public:
    // Called with the layer and its attention probabilities, fp32 [n_head, T, n_past + T]
    // (query x key; zero where causality or a sliding window hides a key).
    using Observer = std::function<void(int64_t layer, const at::Tensor& probabilities)>;

    AttentionRecorder(const ModelConfig& config, Observer observer,
                      std::set<std::pair<int64_t, int64_t>> silenced = {}); // (layer, query head)

    int64_t n_past() const override { return n_past_; }
    at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
    void commit(int64_t n_tokens) override { n_past_ += n_tokens; }
    void clear() override;
    int64_t bytes() const override;

private:
    int64_t n_head_, n_head_kv_, window_;
    Observer observer_;
    std::set<std::pair<int64_t, int64_t>> silenced_;
    std::vector<at::Tensor> k_, v_; // per layer, [n_head_kv, n_past, head_dim]
    int64_t n_past_ = 0;
};

} // namespace kvscope
