// kvscope export: stored runs as JSON, CSV tables or a Chrome trace (sessions/export.h).
#include "app/cli_common.h"
#include "app/export_formats.h"

#include "core/error.h"
#include "sessions/queries.h"
#include "sessions/report.h"
#include "sessions/schema.h"

#include <algorithm>
#include <cstdio>

namespace kvscope {

namespace {

struct ExportArgs {
    std::string db;
    std::vector<int64_t> runs;
    std::string comparison;
    std::string format;
    std::string out;
    int64_t layer = 0, head = 0; // report: the eviction raster's
};

// The RUN ids, then the comparison's runs, each once.
std::vector<int64_t> selected_runs(sql::Connection& db, const ExportArgs& args) {
    std::vector<int64_t> runs;
    const auto add = [&runs](int64_t id) {
        if (std::find(runs.begin(), runs.end(), id) == runs.end()) runs.push_back(id);
    };
    for (int64_t id : args.runs) add(id);
    if (!args.comparison.empty()) {
        const std::vector<int64_t> members = comparison_runs(db, args.comparison);
        if (members.empty()) throw Error(db.path(), "comparison \"" + args.comparison + "\"", "no such comparison");
        for (int64_t id : members) add(id);
    }
    if (runs.empty()) throw Error("export", "runs", "name run ids (see `kvscope sessions list`) or --comparison NAME");
    for (int64_t id : runs) load_run(db, id); // an unknown id fails before anything is written
    return runs;
}

void run_export(const ExportArgs& args) {
    auto db = open_session_db(session_db_path(args.db), SessionAccess::read);
    const std::vector<int64_t> runs = selected_runs(*db, args);
    export_format_named(args.format).write(*db, runs, ReportOptions{args.comparison, args.layer, args.head}, args.out);
    std::fprintf(stderr, "exported %zu run%s to %s\n", runs.size(), runs.size() == 1 ? "" : "s", args.out.c_str());
}

std::string formats_help() {
    std::string help = "what to write:";
    for (const ExportFormat& f : export_formats()) help += std::string("\n  ") + f.name + ": " + f.what;
    return help;
}

} // namespace

void add_export_command(CLI::App& app) {
    auto args = std::make_shared<ExportArgs>();
    CLI::App* cmd = app.add_subcommand("export", "Write stored runs as JSON, CSV, a Chrome trace or a report");
    cmd->add_option("run", args->runs, "run ids (from `kvscope sessions list`)");
    cmd->add_option("--comparison", args->comparison, "also the runs of this comparison (as `kvscope compare` named it)");
    std::vector<std::string> names;
    for (const ExportFormat& f : export_formats()) names.push_back(f.name);
    cmd->add_option("--format", args->format, formats_help())->required()->check(CLI::IsMember(names));
    cmd->add_option("--out", args->out, "the file to write (replaced only once complete)")->required();
    cmd->add_option("--layer", args->layer, "report: the eviction raster's layer")->capture_default_str();
    cmd->add_option("--head", args->head, "report: the eviction raster's KV head")->capture_default_str();
    add_db_option(*cmd, args->db);
    cmd->callback([args] { run_export(*args); });
}

} // namespace kvscope
