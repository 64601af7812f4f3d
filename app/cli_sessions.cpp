// kvscope sessions: the runs kept in the sessions database — list them, show one, delete,
// import an export, merge other databases in (a sweep's shards).
#include "app/cli_common.h"

#include "core/error.h"
#include "core/utf8.h"
#include "sessions/export.h"
#include "sessions/merge.h"
#include "sessions/queries.h"
#include "sessions/schema.h"
#include "sessions/sweeps.h"

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

namespace kvscope {

namespace {

struct SessionsArgs {
    std::string db;
    std::vector<int64_t> runs;
    bool steps = false;
    std::string file;                 // import
    std::vector<std::string> sources; // merge
};

// `text` on one line of at most `width` bytes, cut at a whole UTF-8 character.
std::string one_line(std::string text, size_t width) {
    for (char& c : text)
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    if (text.size() <= width) return text;
    text.resize(width - 3);
    text.resize(complete_utf8_prefix(text));
    return text + "...";
}

std::string percent(double fraction) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%.1f%%", 100 * fraction);
    return buf;
}

void list(const SessionsArgs& args) {
    const std::string path = session_db_path(args.db);
    if (!std::filesystem::exists(path)) { // nothing stored yet; reading creates nothing
        std::printf("no runs: %s does not exist yet\n", path.c_str());
        return;
    }
    auto db = open_session_db(path, SessionAccess::read);
    const std::vector<StoredRun> runs = list_runs(*db);
    if (runs.empty()) {
        std::printf("no runs in %s\n", db->path().c_str());
        return;
    }
    std::printf("%5s  %-19s  %-10s  %-30s %7s %6s %7s %9s  %-24s %s\n", "run", "started (UTC)", "status", "method",
                "budget", "steps", "match", "mean KL", "model", "prompt");
    for (const StoredRun& r : runs) {
        const bool measured = r.summary && r.summary->has_reference;
        const std::string match = measured && r.summary->token_match >= 0 ? percent(r.summary->token_match) : "-";
        char kl[16] = "-";
        if (measured) std::snprintf(kl, sizeof kl, "%.4f", r.summary->mean_kl);
        std::string started = r.started_at.substr(0, 19);
        if (started.size() > 10) started[10] = ' ';
        std::printf("%5lld  %-19s  %-10s  %-30s %7s %6lld %7s %9s  %-24s %s\n", (long long)r.id, started.c_str(),
                    r.status.c_str(), one_line(r.record.method, 30).c_str(), r.record.budget.c_str(),
                    (long long)r.stored_steps, match.c_str(), kl,
                    one_line(std::filesystem::path(r.record.model_path).filename().string(), 24).c_str(),
                    one_line(r.record.prompt_text, 40).c_str());
    }
}

void show(const SessionsArgs& args) {
    auto db = open_session_db(session_db_path(args.db), SessionAccess::read);
    for (int64_t id : args.runs) {
        const StoredRun r = load_run(*db, id);
        const RunRecord& rec = r.record;
        std::printf("run %lld (%s)\n", (long long)r.id, r.status.c_str());
        std::printf("model     %s\n          %s\n", rec.model_path.c_str(), rec.model_hash.c_str());
        std::printf("method    %s, budget %s, seed %llu\n", rec.method.c_str(), rec.budget.c_str(),
                    (unsigned long long)rec.seed);
        std::printf("device    %s, %s; build %s\n", rec.device.c_str(), rec.dtype.c_str(), r.build_version.c_str());
        std::printf("time      started %s, %s\n", r.started_at.c_str(),
                    r.ended_at.empty() ? "did not finish (its process stopped)" : ("ended " + r.ended_at).c_str());
        std::printf("prompt    %zu tokens: %s\n", rec.prompt_tokens.size(), one_line(rec.prompt_text, 100).c_str());
        std::printf("stored    %lld steps, decisions at %zu of them\n", (long long)r.stored_steps,
                    steps_with_decisions(*db, id).size());
        if (!r.error.empty()) std::printf("error     %s\n", r.error.c_str());
        if (args.steps) {
            std::vector<StepEvent> events;
            for (const StoredStep& s : load_steps(*db, id)) events.push_back(s.event);
            print_step_table(events);
        }
        if (r.summary) print_run_summary(*r.summary);
        std::printf("\n");
    }
}

// All or none: an unknown id deletes nothing.
void remove(const SessionsArgs& args) {
    auto db = open_session_db(session_db_path(args.db), SessionAccess::write);
    sql::Transaction transaction(*db, "deleting runs");
    for (int64_t id : args.runs) delete_run(*db, id);
    transaction.commit();
    for (int64_t id : args.runs) std::printf("deleted run %lld\n", (long long)id);
}

// All or none, as new runs: `kvscope export --format json` of them gives the file's bytes.
void import(const SessionsArgs& args) {
    const std::string text = read_text_file(args.file, "runs export");
    auto db = open_session_db(session_db_path(args.db), SessionAccess::write);
    const ImportResult imported = import_json(*db, text, args.file);
    for (int64_t id : imported.stored)
        std::printf("imported run %lld: %s\n", (long long)id, load_run(*db, id).record.method.c_str());
    for (int64_t id : imported.existing)
        std::printf("run %lld is there already (the same uuid): not imported again\n", (long long)id);
}

// What each sweep still lacks, cell by cell (the first few).
void print_sweep_progress(const std::vector<SweepProgress>& sweeps) {
    for (const SweepProgress& p : sweeps) {
        std::printf("sweep %s: %lld of %lld cells done", p.name.c_str(), (long long)p.done, (long long)p.cells);
        if (p.failed) std::printf(" (%lld failed)", (long long)p.failed);
        if (p.missing.empty()) {
            std::printf("\n");
            continue;
        }
        std::printf("; %zu missing:\n", p.missing.size());
        constexpr size_t kShown = 10;
        for (size_t i = 0; i < p.missing.size() && i < kShown; ++i) std::printf("  %s\n", p.missing[i].c_str());
        if (p.missing.size() > kShown) std::printf("  ... and %zu more\n", p.missing.size() - kShown);
    }
}

// Each source in its own transaction: a bad one stops the merge, the ones before it stay.
void merge(const SessionsArgs& args) {
    auto db = open_session_db(session_db_path(args.db), SessionAccess::write);
    for (const std::string& source : args.sources) {
        const MergeCounts c = merge_sessions(*db, source);
        std::printf("%s: copied %lld run%s", source.c_str(), (long long)c.copied, c.copied == 1 ? "" : "s");
        if (c.already_there) std::printf(", %lld there already", (long long)c.already_there);
        if (c.duplicate_cells) std::printf(", %lld skipped (their sweep cell has a run there)", (long long)c.duplicate_cells);
        if (c.replaced) std::printf(", replaced %lld unfinished", (long long)c.replaced);
        std::printf("\n");
    }
    print_sweep_progress(sweep_progress(*db));
}

// The sweeps of several databases (a sweep's shards, as they run) taken together: a cell
// is missing when no database has it done. Each database holds the whole grid.
void progress(const SessionsArgs& args) {
    std::map<std::string, SweepProgress> sweeps;
    std::map<std::string, std::set<std::string>> missing_everywhere;
    for (const std::string& path : args.sources) {
        auto db = open_session_db(path, SessionAccess::read);
        for (SweepProgress& p : sweep_progress(*db)) {
            auto [it, fresh] = sweeps.try_emplace(p.name, p);
            std::set<std::string>& missing = missing_everywhere[p.name];
            if (fresh) {
                missing.insert(p.missing.begin(), p.missing.end());
                continue;
            }
            it->second.failed += p.failed;
            const std::set<std::string> here(p.missing.begin(), p.missing.end());
            for (auto m = missing.begin(); m != missing.end();) m = here.count(*m) ? std::next(m) : missing.erase(m);
        }
    }
    std::vector<SweepProgress> out;
    for (auto& [name, p] : sweeps) {
        std::vector<std::string> ordered; // in the grid's order, as the first database lists them
        for (const std::string& cell : p.missing)
            if (missing_everywhere[name].count(cell)) ordered.push_back(cell);
        p.missing = ordered;
        p.done = p.cells - int64_t(ordered.size());
        out.push_back(p);
    }
    if (out.empty()) std::printf("no sweeps in %zu database%s\n", args.sources.size(), args.sources.size() == 1 ? "" : "s");
    print_sweep_progress(out);
}

} // namespace

void add_sessions_command(CLI::App& app) {
    auto args = std::make_shared<SessionsArgs>();
    CLI::App* cmd =
        app.add_subcommand("sessions", "The runs stored in the sessions database: list, show, delete, import, merge, "
                                                   "sweep progress");
    cmd->require_subcommand(1);

    CLI::App* list_cmd = cmd->add_subcommand("list", "One line per stored run, oldest first");
    add_db_option(*list_cmd, args->db);
    list_cmd->callback([args] { list(*args); });

    CLI::App* show_cmd = cmd->add_subcommand("show", "A stored run's settings, what was stored and its summary");
    add_db_option(*show_cmd, args->db);
    show_cmd->add_option("run", args->runs, "run id (from `kvscope sessions list`)")->required();
    show_cmd->add_flag("--steps", args->steps, "also print the per-step table");
    show_cmd->callback([args] { show(*args); });

    CLI::App* delete_cmd = cmd->add_subcommand("delete", "Delete runs with their steps and decisions");
    add_db_option(*delete_cmd, args->db);
    delete_cmd->add_option("run", args->runs, "run ids")->required();
    delete_cmd->callback([args] { remove(*args); });

    CLI::App* import_cmd = cmd->add_subcommand("import", "Store the runs of a `kvscope export --format json` file "
                                                         "that the database lacks (with their comparisons)");
    add_db_option(*import_cmd, args->db);
    import_cmd->add_option("file", args->file, "the JSON export")->required();
    import_cmd->callback([args] { import(*args); });

    CLI::App* merge_cmd = cmd->add_subcommand(
        "merge", "Copy into the database (--db) the runs of other sessions databases that it lacks, such as the "
                 "shards of a `kvscope sweep`: each run once (runs are known by uuid), one run per sweep cell; then "
                 "say which sweep cells are missing");
    add_db_option(*merge_cmd, args->db);
    merge_cmd->add_option("sources", args->sources, "databases to merge in")->required()->check(CLI::ExistingFile);
    merge_cmd->callback([args] { merge(*args); });

    CLI::App* progress_cmd = cmd->add_subcommand(
        "progress", "How far the sweeps in these databases are, taken together (such as a sweep's shards while "
                    "they run): cells done, and which are missing");
    progress_cmd->add_option("databases", args->sources, "sessions databases")->required()->check(CLI::ExistingFile);
    progress_cmd->callback([args] { progress(*args); });
}

} // namespace kvscope
