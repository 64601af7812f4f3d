// kvscope compare: methods x budgets on a task, one table (and optionally a CSV).
#include "app/cli_common.h"

#include "core/engine.h"
#include "core/error.h"
#include "core/model.h"
#include "core/plugin_registry.h"
#include "core/tasks.h"
#include "sessions/queries.h"
#include "sessions/schema.h"
#include "sessions/writer.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>

namespace kvscope {

namespace {

struct CompareArgs {
    ModelOptions model;
    std::vector<std::string> plugins;
    std::string methods = "full,window,streaming_llm,h2o,snapkv,tova,key_norm,random,snapkv+pyramid,snapkv+adakv,oracle";
    std::string budgets = "64,128,256,512";
    std::string task = "passkey";
    int samples = 3;
    int64_t length = 1000;  // passkey prompt tokens; text prompt tokens
    int64_t steps = 64;     // text: teacher-forced continuation
    uint64_t seed = 0;
    std::string csv;
    StoreOptions store;
};

struct Cell { // one (method, budget) over the task's instances
    std::string method, budget;
    int n = 0, failed = 0, correct = 0, with_answer = 0;
    double match = 0, kl = 0, top1 = 0, ppl = 0, ppl_ref = 0, bytes = 0, ref_bytes = 0, tps = 0, policy = 0;
    std::string error;

    void add(const RunSummary& s, bool answered, bool has_answer) {
        if (s.status != "ok") {
            ++failed;
            error = s.error;
            return;
        }
        ++n;
        match = s.token_match < 0 || match < 0 ? -1 : match + s.token_match; // -1: not measured
        kl += s.mean_kl;
        top1 += s.top1;
        ppl += s.ppl_method;
        ppl_ref += s.ppl_reference;
        bytes += double(s.kv_bytes);
        ref_bytes += double(s.reference_kv_bytes);
        tps += s.decode_tokens_per_second();
        policy += s.policy_seconds / std::max(1e-9, s.prefill_seconds + s.decode_seconds);
        with_answer += has_answer;
        correct += answered;
    }
};

std::string task_text_path(const CompareArgs& args) {
    return args.task == "text" ? assets_dir() + "/prompts/natural_text.txt" : args.task;
}

std::vector<TaskInstance> make_task(const CompareArgs& args, const std::string& text, const Tokenizer& tok) {
    if (args.task == "passkey") return passkey_task(tok, args.length, args.samples, args.seed);
    return {text_task(tok, text, task_text_path(args), args.length, args.steps)};
}

void print_table(const std::vector<Cell>& cells, const std::string& task) {
    std::printf("\ntask: %s\n", task.c_str());
    std::printf("%-34s %7s %7s %9s %7s %9s %7s %10s %6s %8s %7s\n", "method", "budget", "match", "mean KL", "top-1",
                "ppl", "acc", "KV MiB", "KV %", "tok/s", "policy");
    for (const Cell& c : cells) {
        if (c.n == 0) {
            std::printf("%-34s %7s failed: %s\n", c.method.c_str(), c.budget.c_str(), c.error.c_str());
            continue;
        }
        const double n = c.n;
        char acc[16] = "-";
        if (c.with_answer) std::snprintf(acc, sizeof acc, "%d/%d", c.correct, c.with_answer);
        char match[16] = "-";
        if (c.match >= 0) std::snprintf(match, sizeof match, "%.1f%%", 100 * c.match / n);
        std::printf("%-34s %7s %7s %9.4f %6.1f%% %9.3f %7s %10.2f %5.1f%% %8.1f %6.1f%%\n", c.method.c_str(),
                    c.budget.c_str(), match, c.kl / n, 100 * c.top1 / n, c.ppl / n, acc,
                    c.bytes / n / 1048576.0, 100 * c.bytes / std::max(1.0, c.ref_bytes), c.tps / n, 100 * c.policy / n);
    }
}

void write_csv(const std::vector<Cell>& cells, const std::string& task, const std::string& path) {
    std::ofstream out(path);
    if (!out) throw Error(path, "csv", "cannot be written");
    out << "task,method,budget,runs,failed,token_match,mean_kl,top1,ppl,ppl_reference,correct,with_answer,kv_bytes,"
           "reference_kv_bytes,decode_tokens_per_second,policy_share\n";
    for (const Cell& c : cells) {
        const double n = std::max(1, c.n);
        out << task << ",\"" << c.method << "\"," << c.budget << ',' << c.n << ',' << c.failed << ',';
        if (c.match >= 0) out << c.match / n;
        out << ','
            << c.kl / n << ',' << c.top1 / n << ',' << c.ppl / n << ',' << c.ppl_ref / n << ',' << c.correct << ','
            << c.with_answer << ',' << c.bytes / n << ',' << c.ref_bytes / n << ',' << c.tps / n << ',' << c.policy / n
            << '\n';
    }
    if (!out.flush()) throw Error(path, "csv", "write failed (disk full?)");
}

// The runs of one `compare` as a named comparison: "compare <task>, runs <first>-<last>".
void store_as_comparison(SessionWriter& writer, const std::vector<int64_t>& run_ids, const std::string& task) {
    const std::string name = "compare " + task + ", runs " + std::to_string(run_ids.front()) + "-" +
                             std::to_string(run_ids.back());
    store_comparison(*open_session_db(writer.path(), SessionAccess::write), name, run_ids);
    std::fprintf(stderr, "stored %zu runs in %s as \"%s\"\n", run_ids.size(), writer.path().c_str(), name.c_str());
}

void compare(const CompareArgs& args) {
    auto registry = make_registry(args.plugins);
    const std::vector<std::string> specs = split_specs(args.methods);
    std::vector<Budget> budgets;
    for (const std::string& b : split_specs(args.budgets)) budgets.push_back(Budget::parse(b));
    if (specs.empty() || budgets.empty()) throw Error("compare", "--methods/--budgets", "nothing to compare");
    for (const std::string& spec : specs) resolve_method_spec(*registry, spec); // fail before loading

    // A task file that cannot be read fails before the model loads.
    const std::string text = args.task == "passkey" ? "" : read_text_file(task_text_path(args), "task text");
    std::unique_ptr<SessionWriter> writer = open_session_writer(args.store); // so does a bad database
    std::unique_ptr<Model> model = load_model(args.model);
    const Tokenizer& tok = model->tokenizer();
    const std::vector<TaskInstance> instances = make_task(args, text, tok);
    const RunRecord model_record = writer ? model_run_record(*model, args.model) : RunRecord{};
    std::vector<int64_t> run_ids;
    std::vector<Cell> cells;
    std::map<std::pair<std::string, std::string>, size_t> index;
    auto start = std::chrono::steady_clock::now();
    for (const TaskInstance& inst : instances) {
        ReferenceOptions ro;
        ro.n_predict = inst.n_predict;
        ro.forced = inst.forced;
        ro.record_future = true;
        ReferenceRun ref = run_reference(*model, inst.prompt, ro);
        RunRecord record = model_record;
        record.prompt_text = tok.decode(inst.prompt, /*skip_special=*/false);
        record.prompt_tokens = inst.prompt;
        record.seed = args.seed;
        for (const std::string& spec : specs) {
            const bool compresses = Policy(resolve_method_spec(*registry, spec), budgets[0], 0).compresses();
            // The full cache does not depend on the budget: one run, one row.
            for (size_t b = 0; b < (compresses ? budgets.size() : 1); ++b) {
                const Budget& budget = budgets[b];
                const std::string budget_text = compresses ? budget.text() : "-";
                auto [it, fresh] = index.try_emplace({spec, budget_text}, cells.size());
                if (fresh) cells.push_back(Cell{spec, budget_text, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, {}});
                RunOptions options;
                options.method = spec;
                options.budget = budget;
                options.seed = args.seed;
                if (writer) {
                    record.method = spec;
                    record.budget = budget_text;
                    run_ids.push_back(writer->begin_run(record, [&tok](int32_t id) { return tok.token_bytes(id); }));
                }
                RunSummary s = run_method(*model, *registry, inst.prompt, options, &ref, writer.get());
                if (writer) writer->end_run(s);
                const std::string output = model->tokenizer().decode(s.tokens, /*skip_special=*/true);
                const bool has_answer = !inst.answer.empty();
                cells[it->second].add(s, has_answer && output.find(inst.answer) != std::string::npos, has_answer);
                std::fprintf(stderr, "\r[%.0f s] %s: %s @ %s          ",
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                             inst.name.c_str(), spec.c_str(), budget_text.c_str());
            }
        }
    }
    std::fprintf(stderr, "\n");
    const std::string task = args.task == "passkey"
                                 ? "passkey (" + std::to_string(instances.size()) + " prompts of ~" +
                                       std::to_string(instances[0].prompt.size()) + " tokens, greedy 16 steps)"
                                 : args.task + " (" + std::to_string(args.length) + " prompt tokens, " +
                                       std::to_string(args.steps) + " teacher-forced)";
    print_table(cells, task);
    if (!args.csv.empty()) write_csv(cells, args.task, args.csv);
    if (writer) store_as_comparison(*writer, run_ids, task);
}

} // namespace

void add_compare_command(CLI::App& app) {
    auto args = std::make_shared<CompareArgs>();
    CLI::App* cmd = app.add_subcommand("compare", "Run methods x budgets on a task against the full cache and print one "
                                                  "table: token match, KL, top-1, accuracy, KV bytes, tokens/s");
    add_model_options(*cmd, args->model);
    add_plugin_option(*cmd, args->plugins);
    cmd->add_option("--methods", args->methods, "comma-separated run specs")->capture_default_str();
    cmd->add_option("--budgets", args->budgets, "comma-separated budgets (counts or fractions)")->capture_default_str();
    cmd->add_option("--task", args->task, "passkey, text (the bundled essay) or a UTF-8 text file")->capture_default_str();
    cmd->add_option("--samples", args->samples, "passkey prompts (depths spread evenly)")->capture_default_str()->check(CLI::Range(1, 100));
    cmd->add_option("--length", args->length, "prompt tokens (passkey: approximate)")->capture_default_str();
    cmd->add_option("--steps", args->steps, "text: teacher-forced continuation tokens")->capture_default_str();
    cmd->add_option("--seed", args->seed, "seed for the passkeys and seeded methods")->capture_default_str();
    cmd->add_option("--csv", args->csv, "also write the table as CSV");
    add_store_options(*cmd, args->store);
    cmd->callback([args] { compare(*args); });
}

} // namespace kvscope
