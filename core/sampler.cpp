#include "core/sampler.h"

#include "core/error.h"

#include <algorithm>
#include <cmath>

namespace kvscope {

Sampler::Sampler(const SamplerConfig& config) : config_(config), rng_(config.seed) {
    if (!(config.temperature >= 0)) throw Error("sampler", "temperature", "must be >= 0");
    if (config.top_k < 0) throw Error("sampler", "top_k", "must be >= 0");
    if (!(config.top_p > 0 && config.top_p <= 1)) throw Error("sampler", "top_p", "must be in (0, 1]");
}

int32_t Sampler::sample(const float* logits, int64_t n_vocab) {
    if (config_.temperature == 0.0) // ties go to the lowest id, as argmax does elsewhere
        return int32_t(std::max_element(logits, logits + n_vocab) - logits);

    candidates_.resize(size_t(n_vocab));
    for (int64_t i = 0; i < n_vocab; ++i) candidates_[i] = {logits[i], int32_t(i)};
    auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    size_t keep = candidates_.size();
    if (config_.top_k > 0 && size_t(config_.top_k) < keep) {
        keep = size_t(config_.top_k);
        std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
    } else {
        std::sort(candidates_.begin(), candidates_.end(), by_logit);
    }
    // Softmax with temperature over the kept candidates, highest first.
    const double max_logit = candidates_[0].first;
    std::vector<double>& probs = probs_;
    probs.resize(keep);
    double total = 0;
    for (size_t i = 0; i < keep; ++i) total += probs[i] = std::exp((candidates_[i].first - max_logit) / config_.temperature);
    // Nucleus: the smallest prefix whose mass reaches top_p.
    double mass = 0;
    size_t nucleus = keep;
    for (size_t i = 0; i < keep; ++i) {
        mass += probs[i] / total;
        if (mass >= config_.top_p) {
            nucleus = i + 1;
            break;
        }
    }
    std::discrete_distribution<size_t> pick(probs.begin(), probs.begin() + nucleus);
    return candidates_[pick(rng_)].second;
}

} // namespace kvscope
