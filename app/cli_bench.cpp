// kvscope bench: prefill and decode speed of a model at given context lengths, with the
// full KV cache (bench/compare_llama_cpp.py runs it beside llama.cpp on the same file), or
// with cache methods at a budget beside the full cache in the same run (--methods): the
// policy's overhead and the bytes it saves; with --record also what storing the runs in a
// sessions database costs in speed and in disk.
#include "app/cli_common.h"

#include "core/engine.h"
#include "core/error.h"
#include "core/generator.h"
#include "core/kv_store.h"
#include "core/model.h"
#include "core/npy.h"
#include "core/tokenizer.h"
#include "sessions/writer.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include <unistd.h>

namespace kvscope {

namespace {

struct BenchArgs {
    ModelOptions model;
    std::vector<int64_t> contexts{512, 2048};
    int64_t decode = 64;
    int repeat = 3;
    std::string ids_file; // prompt ids to cycle through; default: the tokenized text below
    bool json = false;
    std::vector<std::string> plugins;
    std::string methods;       // empty: the full-cache speed table
    std::string budget = "50%";
    bool record = false;       // also run each method recorded into a sessions database
};

std::string format(const char* fmt, double a, double b) {
    char buf[64];
    std::snprintf(buf, sizeof buf, fmt, a, b);
    return buf;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// `n` prompt ids: the given ids repeated as often as needed.
std::vector<int32_t> prompt_of(const std::vector<int32_t>& source, int64_t n) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = source[size_t(i) % source.size()];
    return ids;
}

// Each method beside the full cache at every context: decode speed, its ratio to the
// full cache's (the median of per-round ratios), and the KV bytes held at the end.
void run_method_bench(const BenchArgs& args, const Model& model, const std::vector<int32_t>& source) {
    auto registry = make_registry(args.plugins);
    std::vector<std::string> specs{"full"};
    for (const std::string& spec : split_specs(args.methods))
        if (spec != "full") specs.push_back(spec);
    for (const std::string& spec : specs) resolve_method_spec(*registry, spec);
    if (!args.json)
        std::printf("%-8s %-58s %7s %14s %13s %8s %9s %6s %7s%s\n", "context", "method", "budget", "prefill tok/s",
                    "decode tok/s", "vs full", "KV MiB", "KV %", "policy", args.record ? "  recorded  DB KiB/1k steps" : "");
    const RunRecord model_record = args.record ? model_run_record(model, args.model) : RunRecord{};
    const auto roles = head_roles_for(model, args.model, *registry, specs, ""); // scored once, not stored
    for (int64_t context : args.contexts) {
        const std::vector<int32_t> prompt = prompt_of(source, context);
        // Each method runs right after a run of the full cache, and its speed is compared with
        // that run's: drift in the machine's speed (a GPU's host, a busy CPU) then moves both
        // sides of a ratio together. Rounds repeat this for every method; a ratio is the
        // median of its rounds'.
        // With --record, each method also runs into a database of its own (in the same
        // round, right after its unrecorded run): the speed ratio of the two, and the
        // database's size per 1,000 decode steps.
        struct Series {
            std::vector<double> prefill, decode, ratio, policy, recorded;
            RunSummary last;
            std::unique_ptr<SessionWriter> writer;
            int64_t recorded_steps = 0;
        };
        std::vector<Series> series(specs.size());
        const std::filesystem::path db_dir = std::filesystem::temp_directory_path() / ("kvscope-bench-" + std::to_string(getpid()));
        if (args.record) std::filesystem::create_directories(db_dir);
        for (size_t i = 0; i < specs.size() && args.record; ++i)
            series[i].writer = std::make_unique<SessionWriter>((db_dir / (std::to_string(i) + ".db")).string());
        // Runs specs[i] once (and recorded, with --record); returns its decode tokens/s.
        const auto measure = [&](size_t i, bool counted) {
            RunOptions options;
            options.method = specs[i];
            options.budget = Budget::parse(specs[i] == "full" ? "100%" : args.budget);
            options.n_predict = args.decode;
            options.stop_at_end_of_generation = false;
            options.head_roles = roles.get();
            RunSummary s = run_method(model, *registry, prompt, options, nullptr);
            if (s.status != "ok") throw Error(s.error);
            Series& out = series[i];
            out.last = s;
            double recorded = 0;
            if (out.writer) {
                RunRecord record = model_record;
                record.method = specs[i];
                record.budget = options.budget.text();
                record.prompt_tokens = prompt;
                out.writer->begin_run(record, [&](int32_t id) { return model.tokenizer().token_bytes(id); });
                RunSummary rs = run_method(model, *registry, prompt, options, nullptr, out.writer.get());
                out.writer->end_run(rs);
                out.recorded_steps += rs.n_steps;
                recorded = rs.decode_tokens_per_second();
            }
            if (counted) {
                out.prefill.push_back(double(context) / s.prefill_seconds);
                out.decode.push_back(s.decode_tokens_per_second());
                out.policy.push_back(s.policy_seconds / (s.prefill_seconds + s.decode_seconds));
                if (out.writer) out.recorded.push_back(recorded / out.decode.back());
            }
            return s.decode_tokens_per_second();
        };
        for (int r = 0; r <= args.repeat; ++r) { // the first round warms up and is not counted
            if (specs.size() == 1) measure(0, r > 0);
            for (size_t i = 1; i < specs.size(); ++i) {
                const double full = measure(0, r > 0), method = measure(i, r > 0);
                if (r > 0) series[i].ratio.push_back(method / full);
            }
        }
        series[0].ratio.assign(1, 1.0);
        std::vector<double> db_kib_per_1k(specs.size(), 0);
        for (size_t i = 0; i < specs.size() && args.record; ++i) {
            const std::string path = series[i].writer->path();
            series[i].writer.reset(); // closing checkpoints the WAL into the file
            db_kib_per_1k[i] = double(std::filesystem::file_size(path)) / 1024.0 / double(series[i].recorded_steps) * 1000.0;
        }
        if (args.record) std::filesystem::remove_all(db_dir);
        const double full_bytes = double(series[0].last.kv_bytes);
        for (size_t i = 0; i < specs.size(); ++i) {
            const Series& x = series[i];
            const RunSummary& s = x.last;
            if (args.json)
                std::printf("{\"engine\": \"kvscope\", \"context\": %lld, \"decode_tokens\": %lld, \"threads\": %d, "
                            "\"device\": \"%s\", \"method\": \"%s\", \"budget\": \"%s\", \"prefill_tokens_per_second\": %.3f, "
                            "\"decode_tokens_per_second\": %.3f, \"decode_vs_full\": %.4f, \"kv_bytes\": %lld, "
                            "\"full_kv_bytes\": %.0f, \"policy_share\": %.4f%s}\n",
                            (long long)context, (long long)args.decode, at::get_num_threads(), model.device().str().c_str(),
                            s.method.c_str(), s.budget.c_str(), median(x.prefill), median(x.decode), median(x.ratio),
                            (long long)s.kv_bytes, full_bytes, median(x.policy),
                            args.record ? (", \"recorded_vs_unrecorded\": " + std::to_string(median(x.recorded)) +
                                           ", \"db_kib_per_1000_steps\": " + std::to_string(db_kib_per_1k[i])).c_str()
                                        : "");
            else
                std::printf("%-8lld %-58s %7s %14.1f %13.1f %7.1f%% %9.2f %5.1f%% %6.2f%%%s\n", (long long)context,
                            s.method.c_str(), i == 0 ? "-" : s.budget.c_str(), median(x.prefill), median(x.decode),
                            100 * median(x.ratio), double(s.kv_bytes) / 1048576.0, 100 * double(s.kv_bytes) / full_bytes,
                            100 * median(x.policy),
                            args.record ? format("  %7.1f%%  %15.1f", 100 * median(x.recorded), db_kib_per_1k[i]).c_str() : "");
            std::fflush(stdout);
        }
    }
}

void run_bench(const BenchArgs& args) {
    std::unique_ptr<Model> model = load_model(args.model);
    std::vector<int32_t> source;
    if (!args.ids_file.empty()) {
        NpyArray a = read_npy(args.ids_file);
        if (a.dtype != "<i4" || a.shape.size() != 1 || a.numel() == 0)
            throw Error(args.ids_file, "ids", "must be a non-empty 1-D int32 array");
        source.assign(a.i32(), a.i32() + a.numel());
    } else {
        source = model->tokenizer().encode("The history of measurement is the history of agreement: a unit is only as "
                                           "useful as the number of people who share it. ");
    }
    if (!args.methods.empty()) return run_method_bench(args, *model, source);
    if (!args.json)
        std::printf("%-8s %-8s %10s %14s %14s\n", "context", "decode", "threads", "prefill tok/s", "decode tok/s");
    for (int64_t context : args.contexts) {
        std::vector<double> prefill, decode;
        GenerateOptions options;
        options.n_predict = args.decode;
        options.stop_at_end_of_generation = false;
        KvStore cache(model->config(), model->device(), model->dtype());
        std::vector<int32_t> prompt = prompt_of(source, context);
        for (int r = 0; r <= args.repeat; ++r) { // the first round warms up and is not counted
            cache.clear();
            GenerateResult result = generate(*model, cache, prompt, options);
            if (r == 0) continue;
            prefill.push_back(result.prefill_tokens_per_second());
            decode.push_back(result.decode_tokens_per_second());
        }
        if (args.json)
            std::printf("{\"engine\": \"kvscope\", \"context\": %lld, \"decode_tokens\": %lld, \"threads\": %d, "
                        "\"prefill_tokens_per_second\": %.3f, \"decode_tokens_per_second\": %.3f}\n",
                        (long long)context, (long long)args.decode, at::get_num_threads(), median(prefill),
                        median(decode));
        else
            std::printf("%-8lld %-8lld %10d %14.1f %14.1f\n", (long long)context, (long long)args.decode,
                        at::get_num_threads(), median(prefill), median(decode));
        std::fflush(stdout);
    }
}

} // namespace

void add_bench_command(CLI::App& app) {
    auto args = std::make_shared<BenchArgs>();
    CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode tokens per second at given context lengths "
                                                "(median of --repeat runs after a warm-up): the full KV cache, or with "
                                                "--methods each method beside it with its KV bytes and policy share");
    add_model_options(*cmd, args->model);
    cmd->add_option("-c,--contexts", args->contexts, "prompt lengths in tokens")->delimiter(',')->capture_default_str();
    cmd->add_option("-n,--decode", args->decode, "tokens decoded after each prompt")->capture_default_str();
    cmd->add_option("-r,--repeat", args->repeat, "timed runs per context")->capture_default_str()->check(CLI::Range(1, 100));
    cmd->add_option("--ids", args->ids_file, "prompt ids (1-D int32 .npy) to cycle through");
    cmd->add_flag("--json", args->json, "one JSON object per context instead of a table");
    cmd->add_option("--methods", args->methods,
                    "comma-separated run specs to time beside the full cache (policy overhead and KV bytes)");
    cmd->add_option("--budget", args->budget, "budget for --methods: a count or a fraction of the context")
        ->capture_default_str();
    cmd->add_flag("--record", args->record,
                  "with --methods: also run each method recorded into a sessions database (a temporary one): decode "
                  "speed recorded vs not, and database size per 1,000 decode steps");
    add_plugin_option(*cmd, args->plugins);
    cmd->callback([args] { run_bench(*args); });
}

} // namespace kvscope
