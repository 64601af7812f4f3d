// kvscope demo: the headless main job. Loads the default model, runs a chat prompt and
// a plain-text prompt, and prints what it did and what it cost.
#include "app/cli_common.h"

#include "core/generator.h"
#include "core/kv_store.h"
#include "core/model.h"

#include <cstdio>

namespace kvscope {

namespace {

void print_model(const Model& model, const std::string& path) {
    const ModelConfig& c = model.config();
    std::printf("model   %s (%s) from %s\n", c.name.c_str(), arch_name(c.arch), path.c_str());
    std::printf("        %lld layers, %lld query heads, %lld KV heads of dim %lld, vocabulary %lld, context %lld, "
                "%.1fM parameters, device %s\n",
                (long long)c.n_layer, (long long)c.n_head, (long long)c.n_head_kv, (long long)c.head_dim,
                (long long)c.n_vocab, (long long)c.n_ctx, model.n_params() / 1e6, model.device().str().c_str());
}

void run_case(const Model& model, const char* title, const std::string& text, bool chat, int64_t n_predict) {
    const Tokenizer& tok = model.tokenizer();
    std::vector<int32_t> ids = tok.encode(chat ? tok.apply_chat({{"user", text}}) : text, chat, tok.add_bos_default());
    KvStore cache(model.config(), model.device(), model.dtype());
    GenerateOptions options;
    options.n_predict = n_predict;
    GenerateResult r = generate(model, cache, ids, options);
    std::vector<int32_t> shown = r.tokens;
    if (!shown.empty() && tok.is_end_of_generation(shown.back())) shown.pop_back();
    std::printf("\n== %s (greedy, full KV cache)\n", title);
    std::printf("prompt  %s\n", text.c_str());
    std::printf("output  %s\n", tok.decode(shown).c_str());
    std::printf("cost    %lld prompt tokens at %.1f tokens/s, %zu generated at %.1f tokens/s, stop: %s, "
                "KV cache %.2f MiB (%.1f KiB per token)\n",
                (long long)r.n_prompt, r.prefill_tokens_per_second(), r.tokens.size(), r.decode_tokens_per_second(),
                r.stop_reason.c_str(), cache.bytes() / 1048576.0,
                cache.bytes() / 1024.0 / double(cache.n_past()));
}

} // namespace

void add_demo_command(CLI::App& app) {
    auto options = std::make_shared<ModelOptions>();
    CLI::App* cmd = app.add_subcommand("demo", "Headless demo: load the model, answer a chat question and continue "
                                               "a text, printing the output, speed and KV-cache size");
    add_model_options(*cmd, *options);
    cmd->callback([options] {
        std::unique_ptr<Model> model = load_model(*options);
        print_model(*model, options->model.empty() ? "the model cache (default model)" : options->model);
        run_case(*model, "chat", "What is the capital of France? Answer in one sentence.", true, 48);
        run_case(*model, "text", "The key-value cache of a transformer stores", false, 40);
    });
}

} // namespace kvscope
