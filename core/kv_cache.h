// The KV-cache seam. The forward pass hands each layer's new keys and values to a
// KvCache and asks it for the attention output; what the cache keeps, and how it
// attends over it, is the cache's business. The one implementation is the paged
// KvStore (kv_store.h): the full-cache reference and every method alike.
#pragma once

#include "core/model_config.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

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

} // namespace kvscope
