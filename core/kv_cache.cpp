#include "core/kv_cache.h"

#include "core/error.h"

#include <ATen/ATen.h>

#include <cmath>
#include <string>

namespace kvscope {

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t q_first, int64_t window) {
    const int64_t n_head = q.size(0), T = q.size(1), head_dim = q.size(2);
    const int64_t n_head_kv = k.size(0), n_keys = k.size(1);
    const int64_t group = n_head / n_head_kv;
    // Query heads that share a KV head sit side by side: view them as one longer
    // block of queries so K and V are read once per KV head.
    at::Tensor qg = q.reshape({n_head_kv, group * T, head_dim});
    at::Tensor scores = at::matmul(qg, k.transpose(1, 2)).to(at::kFloat); // [kv, group*T, n_keys]
    scores.mul_(1.0 / std::sqrt(double(head_dim)));
    if (T > 1 || window > 0) {
        at::Tensor q_pos = at::arange(q_first, q_first + T, scores.options().dtype(at::kLong)).unsqueeze(1);
        at::Tensor k_pos = at::arange(n_keys, scores.options().dtype(at::kLong)).unsqueeze(0);
        at::Tensor masked = k_pos > q_pos;
        if (window > 0) masked = masked.logical_or(k_pos <= q_pos - window);
        scores = scores.view({n_head_kv, group, T, n_keys})
                     .masked_fill(masked, -std::numeric_limits<float>::infinity())
                     .view({n_head_kv, group * T, n_keys});
    }
    at::Tensor probs = at::softmax(scores, -1).to(v.scalar_type());
    return at::matmul(probs, v).view({n_head, T, head_dim});
}

DenseKvCache::DenseKvCache(const ModelConfig& config, int64_t capacity, c10::Device device,
                           c10::ScalarType dtype)
    : n_head_(config.n_head), n_head_kv_(config.n_head_kv), sliding_window_(config.sliding_window),
      capacity_(capacity) {
    auto options = at::TensorOptions().device(device).dtype(dtype);
    for (int64_t il = 0; il < config.n_layer; ++il) {
        k_.push_back(at::empty({n_head_kv_, capacity, config.head_dim}, options));
        v_.push_back(at::empty({n_head_kv_, capacity, config.head_dim}, options));
    }
}

at::Tensor DenseKvCache::attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    const int64_t T = q.size(1);
    if (n_past_ + T > capacity_)
        throw Error("kv cache", "capacity",
                    std::to_string(n_past_ + T) + " tokens do not fit in " + std::to_string(capacity_));
    const int64_t end = n_past_ + T;
    k_[layer].narrow(1, n_past_, T).copy_(k);
    v_[layer].narrow(1, n_past_, T).copy_(v);
    return causal_attention(q, k_[layer].narrow(1, 0, end), v_[layer].narrow(1, 0, end), n_past_,
                            sliding_window_);
}

void DenseKvCache::commit(int64_t n_tokens) { n_past_ += n_tokens; }

int64_t DenseKvCache::bytes() const {
    int64_t total = 0;
    for (size_t il = 0; il < k_.size(); ++il) total += k_[il].nbytes() + v_[il].nbytes();
    return total;
}

} // namespace kvscope
