#include "core/attention_recorder.h"

#include <ATen/ATen.h>

#include <cmath>

namespace kvscope {

AttentionRecorder::AttentionRecorder(const ModelConfig& config, Observer observer,
                                     std::set<std::pair<int64_t, int64_t>> silenced)
    : n_head_(config.n_head), n_head_kv_(config.n_head_kv), window_(config.sliding_window),
      observer_(std::move(observer)), silenced_(std::move(silenced)), k_(size_t(config.n_layer)),
      v_(size_t(config.n_layer)) {}

at::Tensor AttentionRecorder::attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    at::Tensor& keys = k_[size_t(layer)];
    at::Tensor& values = v_[size_t(layer)];
    keys = keys.defined() ? at::cat({keys, k.to(at::kFloat)}, 1) : k.to(at::kFloat);
    values = values.defined() ? at::cat({values, v.to(at::kFloat)}, 1) : v.to(at::kFloat);
    const int64_t T = q.size(1), S = keys.size(1), group = n_head_ / n_head_kv_;
    const at::Tensor K = keys.repeat_interleave(group, 0), V = values.repeat_interleave(group, 0);
    at::Tensor scores = at::matmul(q.to(at::kFloat), K.transpose(1, 2)).mul_(1.0 / std::sqrt(double(q.size(2))));
    // Query t sits at position n_past + t; it sees keys at positions <= its own, and with a
    // sliding window only the last `window` of them.
    const at::Tensor qpos = at::arange(n_past_, n_past_ + T, scores.options().dtype(at::kLong)).view({T, 1});
    const at::Tensor kpos = at::arange(S, scores.options().dtype(at::kLong)).view({1, S});
    at::Tensor hidden = kpos.gt(qpos);
    if (window_ > 0) hidden = hidden.logical_or(kpos.le(qpos - window_));
    const at::Tensor p = scores.masked_fill_(hidden, -INFINITY).softmax(-1);
    if (observer_) observer_(layer, p);
    at::Tensor out = at::matmul(p, V);
    for (const auto& [l, h] : silenced_)
        if (l == layer) out[h].zero_();
    return out.to(q.scalar_type());
}

void AttentionRecorder::clear() {
    for (at::Tensor& t : k_) t = at::Tensor();
    for (at::Tensor& t : v_) t = at::Tensor();
    n_past_ = 0;
}

int64_t AttentionRecorder::bytes() const {
    int64_t n = 0;
    for (size_t l = 0; l < k_.size(); ++l)
        if (k_[l].defined()) n += k_[l].nbytes() + v_[l].nbytes();
    return n;
}

} // namespace kvscope
