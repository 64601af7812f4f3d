// kvscope generate: run a prompt through the model and print the continuation.
#include "app/cli_common.h"

#include "core/error.h"
#include "core/generator.h"
#include "core/kv_store.h"
#include "core/model.h"
#include "core/utf8.h"

#include <algorithm>
#include <cstdio>

namespace kvscope {

namespace {

struct GenerateArgs {
    ModelOptions model;
    std::string prompt;
    std::string prompt_file;
    bool chat = false;
    std::string system;
    std::vector<std::string> stop; // texts of tokens that end generation
    GenerateOptions generate;
};

void run_generate(const GenerateArgs& args) {
    std::string prompt = args.prompt_file.empty() ? args.prompt : read_text_file(args.prompt_file, "prompt file");
    if (size_t bad = find_invalid_utf8(prompt); bad != std::string::npos)
        throw Error("--prompt", "text", "invalid UTF-8 at byte " + std::to_string(bad));
    if (prompt.empty()) throw Error("--prompt", "text", "is empty: nothing to run");

    std::unique_ptr<Model> model = load_model(args.model);
    const Tokenizer& tok = model->tokenizer();
    GenerateOptions options = args.generate;
    for (const std::string& stop : args.stop) {
        std::vector<int32_t> stop_ids = tok.encode(stop, /*parse_special=*/true);
        if (stop_ids.size() != 1)
            throw Error("--stop", stop, "is " + std::to_string(stop_ids.size()) + " tokens, not one token");
        options.stop_tokens.push_back(stop_ids[0]);
    }
    std::vector<int32_t> ids = encode_prompt(tok, prompt, args.chat, args.system);

    KvStore cache(model->config(), model->device(), model->dtype());
    // The prompt is echoed once the first token exists, so a refused run prints nothing.
    bool echoed = args.chat;
    std::string pending; // token bytes not yet printed: an unfinished UTF-8 sequence
    GenerateResult result = generate(*model, cache, ids, options, [&](int32_t id) {
        if (!echoed) std::fputs(prompt.c_str(), stdout);
        echoed = true;
        if (tok.is_end_of_generation(id)) return true;
        pending += tok.token_bytes(id);
        size_t n = complete_utf8_prefix(pending);
        std::fwrite(pending.data(), 1, n, stdout);
        std::fflush(stdout);
        pending.erase(0, n);
        return true;
    });
    std::fwrite(pending.data(), 1, pending.size(), stdout);
    std::fputs("\n", stdout);
    std::fflush(stdout); // the text ends before the statistics line on stderr
    std::fprintf(stderr,
                 "prompt: %lld tokens, prefill %.1f tokens/s | generated: %zu tokens, decode %.1f tokens/s | "
                 "stop: %s | KV cache %.1f MiB\n",
                 (long long)result.n_prompt, result.prefill_tokens_per_second(), result.tokens.size(),
                 result.decode_tokens_per_second(), result.stop_reason.c_str(), cache.bytes() / 1048576.0);
}

} // namespace

void add_generate_command(CLI::App& app) {
    auto args = std::make_shared<GenerateArgs>();
    CLI::App* cmd = app.add_subcommand("generate", "Generate a continuation of a prompt with the full KV cache, "
                                                   "printing the text and prefill/decode tokens per second");
    add_model_options(*cmd, args->model);
    auto* prompt = cmd->add_option("-p,--prompt", args->prompt, "prompt text");
    cmd->add_option("-f,--prompt-file", args->prompt_file, "read the prompt from a UTF-8 file")->excludes(prompt);
    cmd->add_option("-n,--n-predict", args->generate.n_predict, "tokens to generate at most")->capture_default_str();
    cmd->add_flag("--chat", args->chat, "wrap the prompt as a user message in the model's chat format");
    cmd->add_option("--system", args->system, "system message for --chat");
    cmd->add_option("--temperature", args->generate.sampler.temperature, "0 for greedy")->capture_default_str();
    cmd->add_option("--top-k", args->generate.sampler.top_k, "keep the k most likely tokens (0: all)")->capture_default_str();
    cmd->add_option("--top-p", args->generate.sampler.top_p, "nucleus sampling mass")->capture_default_str();
    cmd->add_option("--seed", args->generate.sampler.seed, "sampling seed")->capture_default_str();
    cmd->add_option("--stop", args->stop, "a token (given as its text, e.g. \"<|im_end|>\" or \".\") that ends generation; "
                                          "repeatable");
    cmd->add_flag("--ignore-eos{false}", args->generate.stop_at_end_of_generation,
                  "keep generating past the end-of-generation token");
    cmd->callback([args] {
        if (args->prompt.empty() && args->prompt_file.empty())
            throw Error("generate", "--prompt", "give a prompt with --prompt or --prompt-file");
        run_generate(*args);
    });
}

} // namespace kvscope
