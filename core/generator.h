// The generation loop: prefill the prompt, then decode token by token through a
// KvCache, sampling each next token and stopping at the end of generation.
#pragma once

#include "core/sampler.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kvscope {

class KvCache;
class Model;

struct GenerateOptions {
    int64_t n_predict = 64;            // tokens to generate at most
    SamplerConfig sampler;
    bool stop_at_end_of_generation = true;
    std::vector<int32_t> stop_tokens;  // extra ids that end generation
};

struct GenerateResult {
    std::vector<int32_t> tokens;       // generated ids (the stop token included)
    int64_t n_prompt = 0;
    double prefill_seconds = 0;
    double decode_seconds = 0;         // all steps after the first token
    std::string stop_reason;           // "length", "end of generation", "stop token", "callback"

    double prefill_tokens_per_second() const { return prefill_seconds > 0 ? n_prompt / prefill_seconds : 0; }
    double decode_tokens_per_second() const {
        return decode_seconds > 0 && tokens.size() > 1 ? double(tokens.size() - 1) / decode_seconds : 0;
    }
};

// Runs `prompt` (not empty, fits the model's context together with n_predict) into an
// empty `cache`. `on_token` sees each new id as it is chosen; returning false stops.
GenerateResult generate(const Model& model, KvCache& cache, const std::vector<int32_t>& prompt,
                        const GenerateOptions& options,
                        const std::function<bool(int32_t)>& on_token = {});

} // namespace kvscope
