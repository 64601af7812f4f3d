// kvscope sweep: the grid of `compare` (methods x budgets x tasks x seeds) as cells stored
// in a sessions database, one shard of it per process (--shard i/n), so that a job array
// spreads it over machines, each shard into its own database; `kvscope sessions merge`
// puts the shards together, `kvscope compare --sweep` prints the table.
//
// Resumable: the cells a database holds a finished run of are skipped, and the unfinished
// runs a stopped process left are deleted and run again.
#include "app/cli_grid.h"

#include "core/error.h"
#include "core/model.h"
#include "core/plugin_registry.h"
#include "sessions/model_hash.h"
#include "sessions/records.h"
#include "sessions/schema.h"
#include "sessions/sweeps.h"
#include "sessions/writer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <set>

namespace kvscope {

namespace {

struct SweepArgs {
    ModelOptions model;
    std::vector<std::string> plugins;
    GridOptions grid;
    std::string shard = "0/1";
    std::string name;
    std::string db;
};

struct Shard {
    int64_t index = 0, count = 1;

    // "i/n" with 0 <= i < n: Slurm's $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT for an
    // array 0-(n-1).
    static Shard parse(const std::string& text) {
        Shard s;
        char slash = 0, rest = 0;
        long long i = -1, n = 0;
        if (std::sscanf(text.c_str(), "%lld %c %lld %c", &i, &slash, &n, &rest) != 3 || slash != '/' || n < 1 || i < 0 ||
            i >= n)
            throw Error("--shard", text, "is not i/n with 0 <= i < n (such as 0/4, 3/4)");
        s.index = i;
        s.count = n;
        return s;
    }
    // Shard i holds the i-th of n contiguous, even slices of the grid: neighbouring cells
    // share a task instance, so a slice runs few reference runs.
    std::pair<size_t, size_t> slice(size_t n_cells) const {
        return {n_cells * size_t(index) / size_t(count), n_cells * size_t(index + 1) / size_t(count)};
    }
};

// What makes two shards parts of one sweep: the grid and the model. The same settings give
// the same default name on every machine.
std::string grid_json(const SweepArgs& args, const std::string& hash) {
    const GridOptions& g = args.grid;
    return nlohmann::ordered_json{{"methods", split_specs(g.methods)},
                                  {"budgets", split_specs(g.budgets)},
                                  {"tasks", g.tasks},
                                  {"seeds", g.seeds},
                                  {"samples", g.samples},
                                  {"length", g.length},
                                  {"steps", g.steps},
                                  {"model_hash", hash},
                                  {"device", args.model.device},
                                  {"dtype", args.model.dtype}}
        .dump();
}

// "sweep-" and 16 hex digits of the settings' FNV-1a hash.
std::string default_name(const std::string& grid) {
    uint64_t h = 14695981039346656037ull;
    for (unsigned char c : grid) h = (h ^ c) * 1099511628211ull;
    char name[32];
    std::snprintf(name, sizeof name, "sweep-%016llx", (unsigned long long)h);
    return name;
}

void sweep(const SweepArgs& args) {
    const Shard shard = Shard::parse(args.shard);
    auto registry = make_registry(args.plugins);
    const std::vector<GridCell> grid = grid_cells(args.grid, *registry); // bad input fails before any work
    const std::string path = session_db_path(args.db);
    const std::string hash = model_hash(model_path(args.model));
    const std::string settings = grid_json(args, hash);
    const std::string name = args.name.empty() ? default_name(settings) : args.name;

    std::vector<std::string> keys;
    for (const GridCell& cell : grid) keys.push_back(cell.key());
    const auto [first, last] = shard.slice(grid.size());
    std::vector<GridCell> todo;
    std::set<std::string> todo_keys;
    int64_t deleted = 0;
    {
        auto db = open_session_db(path, SessionAccess::write);
        store_sweep(*db, name, settings, keys);
        const std::set<std::string> done = done_cells(*db, name);
        for (size_t i = first; i < last; ++i)
            if (!done.count(keys[i])) {
                todo.push_back(grid[i]);
                todo_keys.insert(keys[i]);
            }
        deleted = delete_unfinished_runs(*db, name, todo_keys);
    }
    std::printf("%s, shard %lld/%lld: %zu of its %zu cells to run (%zu done before)", name.c_str(),
                (long long)shard.index, (long long)shard.count, todo.size(), last - first,
                last - first - todo.size());
    if (deleted) std::printf("; deleted %lld unfinished run%s a stopped process left", (long long)deleted, deleted == 1 ? "" : "s");
    std::printf("\n");
    std::fflush(stdout);

    if (!todo.empty()) {
        SessionWriter writer(path);
        std::unique_ptr<Model> model = load_model(args.model);
        const RunRecord record = model_run_record(*model, args.model, hash);
        const auto roles = head_roles_for(*model, args.model, *registry, split_specs(args.grid.methods), path);
        const auto start = std::chrono::steady_clock::now();
        size_t n_done = 0, n_failed = 0;
        run_cells(*model, *registry, args.grid, todo, roles.get(), &writer, record, name, [&](const CellResult& r) {
            ++n_done;
            n_failed += r.summary.status != "ok";
            std::fprintf(stderr, "\r[%.0f s] %zu/%zu: %s          ",
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), n_done,
                         todo.size(), r.cell.key().c_str());
        });
        std::fprintf(stderr, "\n");
        std::printf("ran %zu cells (%zu failed) in %.0f s\n", n_done, n_failed,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    auto db = open_session_db(path, SessionAccess::read);
    for (const SweepProgress& p : sweep_progress(*db))
        if (p.name == name)
            std::printf("%s holds %lld of the sweep's %lld cells; the table: kvscope compare --sweep %s --db %s\n",
                        path.c_str(), (long long)p.done, (long long)p.cells, name.c_str(), path.c_str());
}

} // namespace

void add_sweep_command(CLI::App& app) {
    auto args = std::make_shared<SweepArgs>();
    CLI::App* cmd = app.add_subcommand(
        "sweep", "Run a grid of methods x budgets x tasks x seeds into a sessions database, one shard of it "
                 "(--shard i/n) per process; resumable: cells done are skipped. Merge shards with `kvscope sessions "
                 "merge`, print the table with `kvscope compare --sweep`");
    add_model_options(*cmd, args->model);
    add_plugin_option(*cmd, args->plugins);
    add_grid_options(*cmd, args->grid);
    cmd->add_option("--tasks", args->grid.tasks, "passkey, text (the bundled essay) or UTF-8 text files")
        ->delimiter(',')
        ->capture_default_str();
    cmd->add_option("--seeds", args->grid.seeds, "seeds for the passkeys and seeded methods")
        ->delimiter(',')
        ->capture_default_str();
    cmd->add_option("--shard", args->shard, "run shard i of n (0 <= i < n): the i-th of n even slices of the grid")
        ->capture_default_str();
    cmd->add_option("--name", args->name, "the sweep's name (default: from a hash of its settings and the model)");
    add_db_option(*cmd, args->db);
    cmd->callback([args] { sweep(*args); });
}

} // namespace kvscope
