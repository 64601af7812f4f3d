// kvscope run: one prompt through one cache method, optionally next to the full-cache
// reference, with a summary of what the method kept, cost and changed.
#include "app/cli_common.h"

#include "core/engine.h"
#include "core/error.h"
#include "core/model.h"
#include "core/plugin_registry.h"
#include "core/utf8.h"
#include "sessions/writer.h"

#include <cstdio>

namespace kvscope {

namespace {

struct RunArgs {
    ModelOptions model;
    std::vector<std::string> plugins;
    std::string method = "full";
    std::string budget = "100%";
    std::string prompt, prompt_file, system;
    bool chat = false;
    bool reference = false;
    bool steps = false;
    int64_t n_predict = 64;
    uint64_t seed = 0;
    StoreOptions store;
};

// Hands each event to several observers: the printer and the session writer.
class Fanout : public RunObserver {
public:
    explicit Fanout(std::vector<RunObserver*> observers) : observers_(std::move(observers)) {}
    void on_step(const StepEvent& ev) override {
        for (RunObserver* o : observers_) o->on_step(ev);
    }
    void on_decisions(int64_t step, const std::vector<Decision>& decisions) override {
        for (RunObserver* o : observers_) o->on_decisions(step, decisions);
    }

private:
    std::vector<RunObserver*> observers_;
};

// Streams the free-running tokens and remembers the steps for the table.
class Printer : public RunObserver {
public:
    explicit Printer(const Tokenizer& tok) : tok_(tok) {}
    void on_step(const StepEvent& ev) override {
        steps.push_back(ev);
        if (tok_.is_end_of_generation(ev.token)) return;
        pending_ += tok_.token_bytes(ev.token);
        const size_t n = complete_utf8_prefix(pending_);
        std::fwrite(pending_.data(), 1, n, stdout);
        std::fflush(stdout);
        pending_.erase(0, n);
    }
    void finish() {
        std::fwrite(pending_.data(), 1, pending_.size(), stdout);
        std::fputs("\n", stdout);
        std::fflush(stdout);
    }
    std::vector<StepEvent> steps;

private:
    const Tokenizer& tok_;
    std::string pending_;
};

std::string mib(int64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f MiB", double(bytes) / 1048576.0);
    return buf;
}

} // namespace

void print_step_table(const std::vector<StepEvent>& steps) {
    if (steps.empty()) return;
    std::printf("\n%5s %8s %8s %10s %8s %10s %9s %9s\n", "step", "token", "ref", "KL", "top-1", "KV bytes", "step ms",
                "policy ms");
    for (const StepEvent& e : steps)
        std::printf("%5lld %8d %8d %10.5f %8s %10lld %9.2f %9.3f\n", (long long)e.step, e.token, e.reference_token, e.kl,
                    e.top1 ? "yes" : "no", (long long)e.kv_bytes, e.step_seconds * 1e3, e.policy_seconds * 1e3);
}

void print_run_summary(const RunSummary& s) {
    std::printf("\nmethod    %s, budget %s\n", s.method.c_str(), s.budget.c_str());
    std::printf("tokens    %lld prompt, %lld steps\n", (long long)s.n_prompt, (long long)s.n_steps);
    if (s.has_reference) {
        std::printf("fidelity  token match %.1f%% (first divergence: %s) | teacher-forced KL mean %.4f, max %.4f | "
                    "top-1 %.1f%% | perplexity %.3f (reference %.3f)\n",
                    100 * s.token_match,
                    s.first_divergence < 0 ? "none" : ("step " + std::to_string(s.first_divergence)).c_str(), s.mean_kl,
                    s.max_kl, 100 * s.top1, s.ppl_method, s.ppl_reference);
    }
    std::printf("memory    KV %s at the end (%.0f B per token), peak %s", mib(s.kv_bytes).c_str(), s.bytes_per_token(),
                mib(s.peak_kv_bytes).c_str());
    if (s.has_reference)
        std::printf("; full cache %s (%.1f%%)", mib(s.reference_kv_bytes).c_str(),
                    100.0 * double(s.kv_bytes) / double(std::max<int64_t>(1, s.reference_kv_bytes)));
    std::printf("\ntime      prefill %.2f s, decode %.1f tokens/s, policy %.3f s (%.1f%% of the run)\n", s.prefill_seconds,
                s.decode_tokens_per_second(), s.policy_seconds,
                100 * s.policy_seconds / std::max(1e-9, s.prefill_seconds + s.decode_seconds));
}

namespace {

void run(const RunArgs& args) {
    std::string text = args.prompt_file.empty() ? args.prompt : read_text_file(args.prompt_file, "prompt file");
    if (text.empty()) throw Error("run", "--prompt", "give a prompt with --prompt or --prompt-file");
    RunOptions options;
    options.method = args.method;
    options.budget = Budget::parse(args.budget);
    options.seed = args.seed;
    options.n_predict = args.n_predict;
    auto registry = make_registry(args.plugins);
    resolve_method_spec(*registry, args.method); // a bad spec fails before the model loads
    std::unique_ptr<SessionWriter> writer = open_session_writer(args.store); // so does a bad database

    std::unique_ptr<Model> model = load_model(args.model);
    const Tokenizer& tok = model->tokenizer();
    std::vector<int32_t> prompt = encode_prompt(tok, text, args.chat, args.system);
    const auto roles = head_roles_for(*model, args.model, *registry, {args.method}, writer ? writer->path() : "");
    options.head_roles = roles.get();
    int64_t run_id = 0;
    if (writer) {
        RunRecord record = model_run_record(*model, args.model);
        record.method = args.method;
        record.budget = options.budget.text();
        record.prompt_text = text;
        record.prompt_tokens = prompt;
        record.seed = args.seed;
        run_id = writer->begin_run(record, [&tok](int32_t id) { return tok.token_bytes(id); });
    }
    ReferenceRun reference;
    if (args.reference) {
        ReferenceOptions ro;
        ro.n_predict = args.n_predict;
        ro.record_future = true;
        reference = run_reference(*model, prompt, ro);
        std::fprintf(stderr, "reference: %zu steps, prefill %.2f s, decode %.2f s\n", reference.tokens.size(),
                     reference.prefill_seconds, reference.decode_seconds);
    }
    Printer printer(tok);
    std::vector<RunObserver*> observers{&printer};
    if (writer) observers.insert(observers.begin(), writer.get()); // first: a printed token is already queued
    Fanout fanout(observers);
    RunSummary s = run_method(*model, *registry, prompt, options, args.reference ? &reference : nullptr, &fanout);
    printer.finish();
    if (writer) writer->end_run(s);
    if (s.status != "ok") throw Error(s.error);
    if (args.steps) print_step_table(printer.steps);
    print_run_summary(s);
    if (writer) std::fprintf(stderr, "stored as run %lld in %s\n", (long long)run_id, writer->path().c_str());
}

} // namespace

void add_run_command(CLI::App& app) {
    auto args = std::make_shared<RunArgs>();
    CLI::App* cmd = app.add_subcommand("run", "Run a prompt through a KV-cache method (greedy) and summarise what it kept, "
                                              "cost and, with --reference, how far it drifted from the full cache");
    add_model_options(*cmd, args->model);
    add_plugin_option(*cmd, args->plugins);
    cmd->add_option("--method", args->method, "run spec, e.g. 'snapkv(window=32)+pyramid' (kvscope methods lists them)")
        ->capture_default_str();
    cmd->add_option("--budget", args->budget,
                    "slots kept per layer and KV head: a count (128) or a fraction of the context (0.25, 25%)")
        ->capture_default_str();
    auto* prompt = cmd->add_option("-p,--prompt", args->prompt, "prompt text");
    cmd->add_option("-f,--prompt-file", args->prompt_file, "read the prompt from a UTF-8 file")->excludes(prompt);
    cmd->add_flag("--chat", args->chat, "wrap the prompt as a user message in the model's chat format");
    cmd->add_option("--system", args->system, "system message for --chat");
    cmd->add_option("-n,--n-predict", args->n_predict, "tokens to generate at most")->capture_default_str();
    cmd->add_flag("--reference", args->reference,
                  "also run the full cache and report token match, KL, top-1 agreement and perplexity against it");
    cmd->add_flag("--steps", args->steps, "print a per-step table");
    cmd->add_option("--seed", args->seed, "seed for seeded methods (random)")->capture_default_str();
    add_store_options(*cmd, args->store);
    cmd->callback([args] { run(*args); });
}

} // namespace kvscope
