#include "app/cli_grid.h"

#include "core/engine.h"
#include "core/error.h"
#include "core/model.h"
#include "core/policy.h"
#include "core/tasks.h"
#include "core/tokenizer.h"
#include "sessions/csv.h"
#include "sessions/records.h"
#include "sessions/writer.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <optional>

namespace kvscope {

namespace {

std::string task_text_path(const std::string& task) {
    return task == "text" ? assets_dir() + "/prompts/natural_text.txt" : task;
}

int instance_count(const std::string& task, const GridOptions& options) {
    return task == "passkey" ? options.samples : 1;
}

std::vector<TaskInstance> task_instances(const std::string& task, uint64_t seed, const GridOptions& options,
                                         const Tokenizer& tok) {
    if (task == "passkey") return passkey_task(tok, options.length, options.samples, seed);
    const std::string path = task_text_path(task);
    return {text_task(tok, read_text_file(path, "task text"), path, options.length, options.steps)};
}

bool same_instance(const GridCell& a, const GridCell& b) {
    return a.task == b.task && a.seed == b.seed && a.instance == b.instance;
}

} // namespace

void add_grid_options(CLI::App& cmd, GridOptions& options) {
    cmd.add_option("--methods", options.methods, "comma-separated run specs")->capture_default_str();
    cmd.add_option("--budgets", options.budgets, "comma-separated budgets (counts or fractions)")->capture_default_str();
    cmd.add_option("--samples", options.samples, "passkey prompts (depths spread evenly)")
        ->capture_default_str()
        ->check(CLI::Range(1, 100));
    cmd.add_option("--length", options.length, "prompt tokens (passkey: approximate)")->capture_default_str();
    cmd.add_option("--steps", options.steps, "text: teacher-forced continuation tokens")->capture_default_str();
}

std::string GridCell::key() const {
    return "task=" + task + " seed=" + std::to_string(seed) + " instance=" + std::to_string(instance) +
           " method=" + method + " budget=" + budget;
}

std::vector<GridCell> grid_cells(const GridOptions& options, const PluginRegistry& registry) {
    const std::vector<std::string> specs = split_specs(options.methods), budgets = split_specs(options.budgets);
    if (specs.empty() || budgets.empty() || options.tasks.empty() || options.seeds.empty())
        throw Error("grid", "--methods, --budgets, tasks and seeds", "nothing to run: each needs at least one value");
    for (const std::string& b : budgets) Budget::parse(b);
    std::vector<bool> compresses;
    for (const std::string& spec : specs)
        compresses.push_back(Policy(resolve_method_spec(registry, spec), Budget::parse(budgets[0]), 0).compresses());
    for (const std::string& task : options.tasks)
        if (task != "passkey") read_text_file(task_text_path(task), "task text");

    std::vector<GridCell> cells;
    for (const std::string& task : options.tasks)
        for (uint64_t seed : options.seeds)
            for (int i = 0; i < instance_count(task, options); ++i)
                for (size_t m = 0; m < specs.size(); ++m)
                    // The full cache does not depend on the budget: one run, one row.
                    for (size_t b = 0; b < (compresses[m] ? budgets.size() : 1); ++b)
                        cells.push_back(GridCell{task, seed, i, specs[m], compresses[m] ? budgets[b] : "-"});
    return cells;
}

void run_cells(const Model& model, const PluginRegistry& registry, const GridOptions& options,
               const std::vector<GridCell>& cells, const HeadRoles* head_roles, SessionWriter* writer,
               const RunRecord& model_record,
               const std::string& sweep, const std::function<void(const CellResult&)>& done) {
    const Tokenizer& tok = model.tokenizer();
    std::map<std::pair<std::string, uint64_t>, std::vector<TaskInstance>> tasks;
    std::optional<ReferenceRun> reference;
    const GridCell* reference_cell = nullptr;
    for (const GridCell& cell : cells) {
        auto [task, fresh] = tasks.try_emplace({cell.task, cell.seed});
        if (fresh) task->second = task_instances(cell.task, cell.seed, options, tok);
        const TaskInstance& inst = task->second.at(size_t(cell.instance));
        if (!reference_cell || !same_instance(*reference_cell, cell)) {
            ReferenceOptions ro;
            ro.n_predict = inst.n_predict;
            ro.forced = inst.forced;
            ro.record_future = true; // for the oracle
            reference = run_reference(model, inst.prompt, ro);
            reference_cell = &cell;
        }
        RunOptions options_of_cell;
        options_of_cell.method = cell.method;
        options_of_cell.budget = Budget::parse(cell.budget == "-" ? "100%" : cell.budget);
        options_of_cell.seed = cell.seed;
        options_of_cell.head_roles = head_roles;
        int64_t run_id = 0;
        if (writer) {
            RunRecord record = model_record;
            record.method = cell.method;
            record.budget = cell.budget;
            record.prompt_text = tok.decode(inst.prompt, /*skip_special=*/false);
            record.prompt_tokens = inst.prompt;
            record.seed = cell.seed;
            record.task = cell.task;
            record.answer = inst.answer;
            if (!sweep.empty()) {
                record.sweep = sweep;
                record.cell = cell.key();
            }
            run_id = writer->begin_run(record, [&tok](int32_t id) { return tok.token_bytes(id); });
        }
        const RunSummary s = run_method(model, registry, inst.prompt, options_of_cell, &*reference, writer);
        if (writer) writer->end_run(s);
        const bool has_answer = !inst.answer.empty();
        const bool answered =
            has_answer && tok.decode(s.tokens, /*skip_special=*/true).find(inst.answer) != std::string::npos;
        done(CellResult{cell, s, has_answer, answered, run_id});
    }
}

void ResultTable::add(const std::string& task, const std::string& budget, const RunSummary& s, bool has_answer,
                      bool answered) {
    auto [it, fresh] = index_.try_emplace({task, s.method, budget}, rows_.size());
    if (fresh) {
        rows_.emplace_back();
        rows_.back().task = task;
        rows_.back().method = s.method;
        rows_.back().budget = budget;
    }
    Row& r = rows_[it->second];
    if (s.status != "ok") {
        ++r.failed;
        r.error = s.error;
        return;
    }
    ++r.n;
    r.match = s.token_match < 0 || r.match < 0 ? -1 : r.match + s.token_match; // -1: not measured (forced)
    r.kl += s.mean_kl;
    r.top1 += s.top1;
    r.ppl += s.ppl_method;
    r.ppl_ref += s.ppl_reference;
    r.bytes += double(s.kv_bytes);
    r.ref_bytes += double(s.reference_kv_bytes);
    r.tps += s.decode_tokens_per_second();
    r.policy += s.policy_seconds / std::max(1e-9, s.prefill_seconds + s.decode_seconds);
    r.prompt += double(s.n_prompt);
    r.steps += double(s.n_steps);
    r.with_answer += has_answer;
    r.correct += answered;
}

void ResultTable::print_task(const std::string& task, int width) const {
    const auto of_task = [&](const Row& r) { return r.task == task; };
    const auto measured = std::find_if(rows_.begin(), rows_.end(), [&](const Row& r) { return of_task(r) && r.n > 0; });
    std::printf("\ntask: %s", task.c_str());
    if (measured != rows_.end())
        std::printf(" (prompts of ~%.0f tokens, %.0f steps)", measured->prompt / measured->n, measured->steps / measured->n);
    std::printf("\n%-*s %7s %7s %9s %7s %9s %7s %10s %6s %8s %7s\n", width, "method", "budget", "match", "mean KL",
                "top-1", "ppl", "acc", "KV MiB", "KV %", "tok/s", "policy");
    for (const Row& r : rows_) {
        if (!of_task(r)) continue;
        if (r.n == 0) {
            std::printf("%-*s %7s failed: %s\n", width, r.method.c_str(), r.budget.c_str(), r.error.c_str());
            continue;
        }
        const double n = r.n;
        char acc[16] = "-";
        if (r.with_answer) std::snprintf(acc, sizeof acc, "%d/%d", r.correct, r.with_answer);
        char match[16] = "-";
        if (r.match >= 0) std::snprintf(match, sizeof match, "%.1f%%", 100 * r.match / n);
        std::printf("%-*s %7s %7s %9.4f %6.1f%% %9.3f %7s %10.2f %5.1f%% %8.1f %6.1f%%\n", width, r.method.c_str(),
                    r.budget.c_str(), match, r.kl / n, 100 * r.top1 / n, r.ppl / n, acc, r.bytes / n / 1048576.0,
                    100 * r.bytes / std::max(1.0, r.ref_bytes), r.tps / n, 100 * r.policy / n);
    }
}

void ResultTable::print() const {
    std::vector<std::string> tasks; // in the order they came
    int width = 34;
    for (const Row& r : rows_) {
        if (std::find(tasks.begin(), tasks.end(), r.task) == tasks.end()) tasks.push_back(r.task);
        width = std::max(width, int(r.method.size()));
    }
    for (const std::string& task : tasks) print_task(task, width);
}

void ResultTable::write_csv(const std::string& path) const {
    std::ofstream out(path, std::ios::binary);
    if (!out) throw Error(path, "csv", "cannot be written");
    CsvWriter csv(out);
    csv.header({"task", "method", "budget", "runs", "failed", "token_match", "mean_kl", "top1", "ppl", "ppl_reference",
                "correct", "with_answer", "kv_bytes", "reference_kv_bytes", "decode_tokens_per_second", "policy_share"});
    for (const Row& r : rows_) {
        const double n = std::max(1, r.n);
        csv.text(r.task).text(r.method).text(r.budget).integer(r.n).integer(r.failed);
        csv.real_if(r.n > 0 && r.match >= 0, r.match / n);
        csv.real_if(r.n > 0, r.kl / n).real_if(r.n > 0, r.top1 / n).real_if(r.n > 0, r.ppl / n);
        csv.real_if(r.n > 0, r.ppl_ref / n).integer(r.correct).integer(r.with_answer);
        csv.real_if(r.n > 0, r.bytes / n).real_if(r.n > 0, r.ref_bytes / n).real_if(r.n > 0, r.tps / n);
        csv.real_if(r.n > 0, r.policy / n);
        csv.end_row();
    }
    if (!out.flush()) throw Error(path, "csv", "write failed (disk full?)");
}

} // namespace kvscope
