// Picks the next token from logits: greedy, or seeded sampling with temperature,
// top-k and top-p. Runs on the host over one row of fp32 logits.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace kvscope {

struct SamplerConfig {
    double temperature = 0.0; // 0: greedy (argmax)
    int64_t top_k = 0;        // 0: all tokens
    double top_p = 1.0;       // 1: no nucleus cut
    uint64_t seed = 0;
};

class Sampler {
public:
    explicit Sampler(const SamplerConfig& config);
    // `logits` holds n_vocab values. Same config and seed, same logits: same tokens.
    int32_t sample(const float* logits, int64_t n_vocab);

private:
    SamplerConfig config_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> candidates_; // reused between calls
    std::vector<double> probs_;
};

} // namespace kvscope
