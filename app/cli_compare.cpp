// kvscope compare: methods x budgets on a task, one table (and optionally a CSV); or the
// same table of runs stored before (--sweep, --comparison), such as a merged sweep's.
#include "app/cli_grid.h"

#include "core/error.h"
#include "core/model.h"
#include "core/plugin_registry.h"
#include "sessions/queries.h"
#include "sessions/schema.h"
#include "sessions/sweeps.h"
#include "sessions/writer.h"

#include <chrono>
#include <cstdio>

namespace kvscope {

namespace {

struct CompareArgs {
    ModelOptions model;
    std::vector<std::string> plugins;
    GridOptions grid;
    std::string task = "passkey";
    uint64_t seed = 0;
    std::string csv;
    StoreOptions store;
    std::string sweep, comparison; // the table of these stored runs instead
};

// The runs of one `compare` as a named comparison: "compare <task>, runs <first>-<last>".
void store_as_comparison(SessionWriter& writer, const std::vector<int64_t>& run_ids, const std::string& task) {
    const std::string name = "compare " + task + ", runs " + std::to_string(run_ids.front()) + "-" +
                             std::to_string(run_ids.back());
    store_comparison(*open_session_db(writer.path(), SessionAccess::write), name, run_ids);
    std::fprintf(stderr, "stored %zu runs in %s as \"%s\"\n", run_ids.size(), writer.path().c_str(), name.c_str());
}

void compare(CompareArgs args) {
    args.grid.tasks = {args.task};
    args.grid.seeds = {args.seed};
    auto registry = make_registry(args.plugins);
    const std::vector<GridCell> cells = grid_cells(args.grid, *registry); // bad input fails before loading
    std::unique_ptr<SessionWriter> writer = open_session_writer(args.store); // so does a bad database
    std::unique_ptr<Model> model = load_model(args.model);
    const RunRecord model_record = writer ? model_run_record(*model, args.model) : RunRecord{};
    const auto roles = head_roles_for(*model, args.model, *registry, split_specs(args.grid.methods),
                                      writer ? writer->path() : "");
    ResultTable table;
    std::vector<int64_t> run_ids;
    const auto start = std::chrono::steady_clock::now();
    size_t n_done = 0;
    run_cells(*model, *registry, args.grid, cells, roles.get(), writer.get(), model_record, "", [&](const CellResult& r) {
        table.add(r.cell.task, r.cell.budget, r.summary, r.has_answer, r.answered);
        if (writer) run_ids.push_back(r.run_id);
        std::fprintf(stderr, "\r[%.0f s] %zu/%zu: %s          ",
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), ++n_done,
                     cells.size(), r.cell.key().c_str());
    });
    std::fprintf(stderr, "\n");
    table.print();
    if (!args.csv.empty()) table.write_csv(args.csv);
    if (writer) store_as_comparison(*writer, run_ids, args.task);
}

// The table of stored runs: a sweep's done cells, or a comparison's runs that ended.
void compare_stored(const CompareArgs& args) {
    auto db = open_session_db(session_db_path(args.store.db), SessionAccess::read);
    const std::vector<int64_t> ids = args.sweep.empty() ? comparison_runs(*db, args.comparison) : sweep_runs(*db, args.sweep);
    if (ids.empty())
        throw Error(db->path(), args.sweep.empty() ? "comparison " + args.comparison : "sweep " + args.sweep,
                    "holds no finished runs");
    ResultTable table;
    int64_t unfinished = 0;
    for (int64_t id : ids) {
        const StoredRun run = load_run(*db, id);
        if (!run.summary) {
            ++unfinished;
            continue;
        }
        std::string output; // what the run generated, to look for the task's answer in
        for (const StoredStep& s : load_steps(*db, id)) output += s.text;
        const std::string& answer = run.record.answer;
        table.add(run.record.task.empty() ? "prompt" : run.record.task, run.record.budget, *run.summary,
                  !answer.empty(), !answer.empty() && output.find(answer) != std::string::npos);
    }
    std::printf("%zu runs from %s", ids.size() - size_t(unfinished), db->path().c_str());
    if (unfinished) std::printf(" (%lld unfinished left out)", (long long)unfinished);
    std::printf("\n");
    table.print();
    if (!args.csv.empty()) table.write_csv(args.csv);
}

} // namespace

void add_compare_command(CLI::App& app) {
    auto args = std::make_shared<CompareArgs>();
    CLI::App* cmd = app.add_subcommand("compare", "Run methods x budgets on a task against the full cache and print one "
                                                  "table: token match, KL, top-1, accuracy, KV bytes, tokens/s; or "
                                                  "print that table for runs stored before (--sweep, --comparison)");
    add_model_options(*cmd, args->model);
    add_plugin_option(*cmd, args->plugins);
    add_grid_options(*cmd, args->grid);
    cmd->add_option("--task", args->task, "passkey, text (the bundled essay) or a UTF-8 text file")->capture_default_str();
    cmd->add_option("--seed", args->seed, "seed for the passkeys and seeded methods")->capture_default_str();
    cmd->add_option("--csv", args->csv, "also write the table as CSV");
    add_store_options(*cmd, args->store);
    auto* sweep = cmd->add_option("--sweep", args->sweep, "print the table of this stored sweep's runs (from --db) "
                                                          "instead of running: a `kvscope sweep`, or a merge of its shards");
    cmd->add_option("--comparison", args->comparison, "print the table of this stored comparison's runs (from --db)")
        ->excludes(sweep);
    cmd->callback([args] {
        if (!args->sweep.empty() || !args->comparison.empty()) compare_stored(*args);
        else compare(*args);
    });
}

} // namespace kvscope
