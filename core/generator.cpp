#include "core/generator.h"

#include "core/error.h"
#include "core/kv_cache.h"
#include "core/model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>

namespace kvscope {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

} // namespace

GenerateResult generate(const Model& model, KvCache& cache, const std::vector<int32_t>& prompt,
                        const GenerateOptions& options, const std::function<bool(int32_t)>& on_token) {
    const ModelConfig& config = model.config();
    if (prompt.empty()) throw Error("prompt", "text", "is empty: nothing to run");
    if (options.n_predict < 0) throw Error("generate", "n_predict", "must be >= 0");
    const int64_t needed = int64_t(prompt.size()) + options.n_predict;
    if (needed > config.n_ctx)
        throw Error("prompt", "length",
                    std::to_string(prompt.size()) + " prompt tokens + " + std::to_string(options.n_predict) +
                        " to generate exceed the model's context of " + std::to_string(config.n_ctx));
    if (cache.n_past() != 0) throw Error("generate", "cache", "must start empty");

    Sampler sampler(options.sampler);
    GenerateResult result;
    result.n_prompt = int64_t(prompt.size());
    auto next_token = [&](const at::Tensor& logits) { // logits [1, n_vocab], fp32
        at::Tensor row = logits.to(at::kCPU).contiguous();
        return sampler.sample(row.data_ptr<float>(), row.size(1));
    };
    auto stop_reason = [&](int32_t token) -> const char* {
        if (options.stop_at_end_of_generation && model.tokenizer().is_end_of_generation(token))
            return "end of generation";
        if (std::find(options.stop_tokens.begin(), options.stop_tokens.end(), token) != options.stop_tokens.end())
            return "stop token";
        return nullptr;
    };

    auto start = Clock::now();
    at::Tensor logits = model.forward(prompt, cache);
    int32_t token = options.n_predict > 0 ? next_token(logits) : -1;
    result.prefill_seconds = seconds_since(start);

    start = Clock::now();
    result.stop_reason = "length";
    while (int64_t(result.tokens.size()) < options.n_predict) {
        result.tokens.push_back(token);
        if (on_token && !on_token(token)) {
            result.stop_reason = "callback";
            break;
        }
        if (const char* reason = stop_reason(token)) {
            result.stop_reason = reason;
            break;
        }
        if (int64_t(result.tokens.size()) == options.n_predict) break;
        token = next_token(model.forward({token}, cache));
    }
    result.decode_seconds = seconds_since(start);
    return result;
}

} // namespace kvscope
