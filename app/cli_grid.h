// The grid that `compare` and `sweep` run, and the table they print: methods x budgets on
// tasks (passkey, the bundled natural text, a text file) with seeds. A cell is one run of
// one method at one budget on one task instance, next to the full-cache reference of that
// instance; the table averages a (task, method, budget) over its instances and seeds.
#pragma once

#include "app/cli_common.h"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace kvscope {

struct GridOptions {
    std::string methods = "full,window,streaming_llm,h2o,snapkv,tova,key_norm,random,snapkv+pyramid,snapkv+adakv,oracle";
    std::string budgets = "64,128,256,512";
    std::vector<std::string> tasks{"passkey"}; // passkey, text, or a UTF-8 text file
    std::vector<uint64_t> seeds{0};
    int samples = 3;       // passkey prompts (depths spread evenly)
    int64_t length = 1000; // prompt tokens (passkey: approximate)
    int64_t steps = 64;    // text: teacher-forced continuation tokens
};
// --methods, --budgets, --samples, --length, --steps; the tasks and seeds are the command's.
void add_grid_options(CLI::App& command, GridOptions& options);

struct GridCell {
    std::string task;
    uint64_t seed = 0;
    int instance = 0;   // of the task's prompts: passkey has --samples, text one
    std::string method; // the run spec as given
    std::string budget; // as given; "-" for a method that keeps every token, run once
    // "task=passkey seed=0 instance=1 method=snapkv budget=128": the cell's name in a sweep.
    std::string key() const;
};

// Every cell in order (task, seed, instance, method, budget). Throws Error for a bad run
// spec, budget or task file first, before any model loads.
std::vector<GridCell> grid_cells(const GridOptions& options, const PluginRegistry& registry);

// Runs `cells` in order, each beside the reference of its task instance (run once for
// consecutive cells that share it), and stores each through `writer` when there is one,
// as `model_record` with the cell's settings, task and answer (and `sweep`, the cell's
// key, when not empty). Calls `done` after each cell with its summary and, for a task
// with an answer, whether the free-running output holds it.
struct CellResult {
    const GridCell& cell;
    const RunSummary& summary;
    bool has_answer, answered;
    int64_t run_id; // in the writer's database; 0 without one
};
// head_roles: the model's head profile (head_roles_for), for head-aware methods.
void run_cells(const Model& model, const PluginRegistry& registry, const GridOptions& options,
               const std::vector<GridCell>& cells, const HeadRoles* head_roles, SessionWriter* writer,
               const RunRecord& model_record,
               const std::string& sweep, const std::function<void(const CellResult&)>& done);

// The results, one table per task: token match, KL, top-1, perplexity, accuracy, KV bytes
// (and their share of the full cache's), decode tokens/s, policy share. Rows come in the
// order they are first added.
class ResultTable {
public:
    // A run's summary under (task, its method, `budget`): the budget as given ("-" for the
    // full cache), since the summary's is what the method resolved it to.
    void add(const std::string& task, const std::string& budget, const RunSummary& summary, bool has_answer,
             bool answered);
    void print() const;
    // Writes the table as CSV (RFC 4180); throws Error naming the file.
    void write_csv(const std::string& path) const;

private:
    struct Row {
        std::string task, method, budget;
        int n = 0, failed = 0, correct = 0, with_answer = 0;
        double match = 0, kl = 0, top1 = 0, ppl = 0, ppl_ref = 0, bytes = 0, ref_bytes = 0, tps = 0, policy = 0;
        double prompt = 0, steps = 0;
        std::string error;
    };
    void print_task(const std::string& task, int method_width) const;

    std::vector<Row> rows_;
    std::map<std::tuple<std::string, std::string, std::string>, size_t> index_;
};

} // namespace kvscope
