#include "sessions/merge.h"

#include "core/error.h"
#include "sessions/queries.h"
#include "sessions/schema.h"

#include <filesystem>
#include <system_error>

namespace kvscope {

namespace {

// The columns of `table` but `skip`, comma-separated: the schema says what a run is, so a
// column a later version adds is copied without touching this file.
std::string columns_of(sql::Connection& db, const std::string& table, const std::string& skip) {
    sql::Statement q = db.prepare("SELECT group_concat(name, ', ') FROM pragma_table_info(?1) WHERE name != ?2",
                                  "reading the columns of " + table);
    q.bind_text(1, table).bind_text(2, skip);
    q.step();
    return q.text(0);
}

bool same_file(const std::string& a, const std::string& b) {
    std::error_code ec;
    return std::filesystem::equivalent(a, b, ec);
}

// The source's sweeps and their cells; a sweep the target has must have the same grid.
void copy_sweeps(sql::Connection& db, const std::string& source) {
    sql::Statement conflict = db.prepare("SELECT s.name, s.grid, t.grid FROM source.sweeps s JOIN main.sweeps t "
                                         "USING (name) WHERE s.grid != t.grid",
                                         "comparing sweeps");
    if (conflict.step())
        throw Error(source, "sweep " + conflict.text(0),
                    "has other settings than in " + db.path() + " (" + conflict.text(1) + " there: " +
                        conflict.text(2) + ")");
    db.exec("INSERT OR IGNORE INTO main.sweeps SELECT * FROM source.sweeps;"
            "INSERT OR IGNORE INTO main.sweep_cells SELECT * FROM source.sweep_cells;"
            "INSERT OR IGNORE INTO main.head_roles SELECT * FROM source.head_roles",
            "copying sweeps and head roles");
}

// What to do with one source run of a sweep cell, given the target's runs of that cell.
enum class CellAction { copy, skip, replace };

CellAction cell_action(sql::Connection& db, const std::string& sweep, const std::string& cell, bool finished) {
    sql::Statement q = db.prepare("SELECT count(*), count(*) FILTER (WHERE status != 'unfinished') FROM main.runs "
                                  "WHERE sweep = ?1 AND cell = ?2",
                                  "reading the target's runs of a cell");
    q.bind_text(1, sweep).bind_text(2, cell);
    q.step();
    const int64_t any = q.int64(0), done = q.int64(1);
    if (any == 0) return CellAction::copy;
    if (done > 0 || !finished) return CellAction::skip;
    return CellAction::replace;
}

int64_t copy_run(sql::Connection& db, int64_t id, const std::string& run_columns) {
    db.prepare("INSERT INTO main.runs (" + run_columns + ") SELECT " + run_columns + " FROM source.runs WHERE id = ?1",
               "copying a run")
        .bind_int(1, id)
        .execute();
    const int64_t copy = db.last_insert_id();
    for (const char* table : {"steps", "decisions", "attention_samples"}) {
        const std::string columns = columns_of(db, table, "run_id");
        db.prepare(std::string("INSERT INTO main.") + table + " (run_id, " + columns + ") SELECT ?2, " + columns +
                       " FROM source." + table + " WHERE run_id = ?1",
                   std::string("copying a run's ") + table)
            .bind_int(1, id)
            .bind_int(2, copy)
            .execute();
    }
    sql::Statement names = db.prepare("SELECT c.name FROM source.comparisons c JOIN source.comparison_runs r ON "
                                      "r.comparison_id = c.id WHERE r.run_id = ?1",
                                      "reading a run's comparisons");
    names.bind_int(1, id);
    while (names.step()) add_to_comparison(db, names.text(0), copy);
    return copy;
}

MergeCounts copy_runs(sql::Connection& db) {
    MergeCounts counts;
    const std::string run_columns = columns_of(db, "runs", "id");
    sql::Statement runs = db.prepare("SELECT id, uuid, sweep, cell, status != 'unfinished', EXISTS (SELECT 1 FROM "
                                     "main.runs t WHERE t.uuid = s.uuid) FROM source.runs s ORDER BY id",
                                     "reading the source's runs");
    while (runs.step()) {
        if (runs.int64(5)) {
            ++counts.already_there;
            continue;
        }
        if (!runs.is_null(2)) {
            const CellAction action = cell_action(db, runs.text(2), runs.text(3), runs.int64(4) != 0);
            if (action == CellAction::skip) {
                ++counts.duplicate_cells;
                continue;
            }
            if (action == CellAction::replace) {
                sql::Statement gone = db.prepare("DELETE FROM main.runs WHERE sweep = ?1 AND cell = ?2",
                                                 "deleting an unfinished run");
                gone.bind_text(1, runs.text(2)).bind_text(2, runs.text(3)).execute();
                counts.replaced += db.changes();
            }
        }
        copy_run(db, runs.int64(0), run_columns);
        ++counts.copied;
    }
    return counts;
}

} // namespace

MergeCounts merge_sessions(sql::Connection& target, const std::string& source) {
    if (same_file(target.path(), source)) throw Error(source, "merging", "is the target database itself");
    open_session_db(source, SessionAccess::read); // checks it, upgrades an older schema
    target.prepare("ATTACH DATABASE ?1 AS source", "opening " + source).bind_text(1, source).execute();
    MergeCounts counts;
    try {
        sql::Transaction transaction(target, "merging " + source);
        copy_sweeps(target, source);
        counts = copy_runs(target);
        transaction.commit();
    } catch (...) {
        target.exec("DETACH DATABASE source", "closing " + source);
        throw;
    }
    target.exec("DETACH DATABASE source", "closing " + source);
    return counts;
}

} // namespace kvscope
