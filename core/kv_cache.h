// The KV-cache seam. The forward pass hands each layer's new keys and values to a
// KvCache and asks it for the attention output; what the cache keeps, and how it
// attends over it, is the cache's business. DenseKvCache keeps everything (the
// reference lane); the compressed store of the cache layer plugs in here.
#pragma once

#include "core/model_config.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <vector>

namespace kvscope {

class KvCache {
public:
    virtual ~KvCache() = default;

    // Positions already processed: the next token's position.
    virtual int64_t n_past() const = 0;
    // Layer `layer` of a step of T tokens at positions n_past() .. n_past()+T-1:
    // q [n_head, T, head_dim], k and v [n_head_kv, T, head_dim] (RoPE applied).
    // Stores k and v, and returns softmax(q K^T / sqrt(head_dim)) V over the tokens the
    // cache holds for this layer plus the step's own (causally): [n_head, T, head_dim].
    virtual at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                              const at::Tensor& v) = 0;
    // After every layer has seen the step: its T tokens become past.
    virtual void commit(int64_t n_tokens) = 0;
    // Forget everything.
    virtual void clear() = 0;
    // Bytes allocated for keys and values now.
    virtual int64_t bytes() const = 0;
};

// Every token of every layer, in one preallocated [n_head_kv, capacity, head_dim]
// tensor per layer for K and for V.
class DenseKvCache final : public KvCache {
public:
    DenseKvCache(const ModelConfig& config, int64_t capacity, c10::Device device, c10::ScalarType dtype);

    int64_t n_past() const override { return n_past_; }
    int64_t capacity() const { return capacity_; }
    at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
    void commit(int64_t n_tokens) override;
    void clear() override { n_past_ = 0; }
    int64_t bytes() const override;

private:
    int64_t n_head_;
    int64_t n_head_kv_;
    int64_t sliding_window_;
    int64_t capacity_;
    int64_t n_past_ = 0;
    std::vector<at::Tensor> k_; // per layer
    std::vector<at::Tensor> v_;
};

// softmax(q K^T * scale + causal mask) V with grouped-query heads. Queries are at
// positions q_first .. q_first+T-1, keys at 0 .. n_keys-1. With window > 0 a query
// sees only the last `window` positions (Mistral). The math every cache shares.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t q_first, int64_t window);

} // namespace kvscope
