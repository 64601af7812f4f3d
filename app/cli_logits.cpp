// kvscope logits: the model's logits for a token sequence, and optionally a greedy
// continuation, written as .npy files for the parity scripts (tests/, tests/device/).
#include "app/cli_common.h"

#include "core/error.h"
#include "core/generator.h"
#include "core/kv_store.h"
#include "core/model.h"
#include "core/npy.h"

#include <ATen/ATen.h>

#include <cstdio>

namespace kvscope {

namespace {

struct LogitsArgs {
    ModelOptions model;
    std::string prompt;
    std::string ids_file; // .npy of int32 token ids
    std::string out;
    int64_t greedy = 0;
    std::string greedy_out;
};

void run_logits(const LogitsArgs& args) {
    std::unique_ptr<Model> model = load_model(args.model);
    std::vector<int32_t> ids;
    if (!args.ids_file.empty()) {
        NpyArray array = read_npy(args.ids_file);
        if (array.dtype != "<i4" || array.shape.size() != 1) throw Error(args.ids_file, "ids", "must be a 1-D int32 array");
        ids.assign(array.i32(), array.i32() + array.numel());
    } else {
        ids = model->tokenizer().encode(args.prompt, true, model->tokenizer().add_bos_default());
    }
    KvStore cache(model->config(), model->device(), model->dtype());
    at::Tensor logits = model->forward(ids, cache, /*all_logits=*/true).to(at::kCPU).contiguous();
    write_npy(args.out, logits.data_ptr<float>(), {logits.size(0), logits.size(1)});
    std::fprintf(stderr, "wrote %s: logits [%lld, %lld]\n", args.out.c_str(), (long long)logits.size(0),
                 (long long)logits.size(1));
    if (args.greedy > 0) {
        cache.clear();
        GenerateOptions options;
        options.n_predict = args.greedy;
        options.stop_at_end_of_generation = false;
        GenerateResult result = generate(*model, cache, ids, options);
        write_npy(args.greedy_out, result.tokens.data(), {int64_t(result.tokens.size())});
        std::fprintf(stderr, "wrote %s: %zu greedy tokens\n", args.greedy_out.c_str(), result.tokens.size());
    }
}

} // namespace

void add_logits_command(CLI::App& app) {
    auto args = std::make_shared<LogitsArgs>();
    CLI::App* cmd = app.add_subcommand("logits", "Write the logits of every position of a prompt (and a greedy "
                                                 "continuation) as .npy files, for parity checks against a reference");
    add_model_options(*cmd, args->model);
    auto* prompt = cmd->add_option("-p,--prompt", args->prompt, "prompt text");
    cmd->add_option("--ids", args->ids_file, "token ids as a 1-D int32 .npy file")->excludes(prompt);
    cmd->add_option("-o,--out", args->out, "logits output (.npy, float32 [tokens, n_vocab])")->required();
    cmd->add_option("--greedy", args->greedy, "also generate this many tokens greedily");
    cmd->add_option("--greedy-out", args->greedy_out, "greedy ids output (.npy, int32)");
    cmd->callback([args] {
        if (args->prompt.empty() && args->ids_file.empty()) throw Error("logits", "--prompt", "give --prompt or --ids");
        if (args->greedy > 0 && args->greedy_out.empty()) throw Error("logits", "--greedy-out", "required with --greedy");
        run_logits(*args);
    });
}

} // namespace kvscope
