#include "sessions/sweeps.h"

#include "core/error.h"
#include "sessions/schema.h"

namespace kvscope {

namespace {

const char* const kDone = "status IN ('ok', 'failed')";

} // namespace

void store_sweep(sql::Connection& db, const std::string& name, const std::string& grid,
                 const std::vector<std::string>& cells) {
    sql::Transaction transaction(db, "storing sweep " + name);
    sql::Statement stored = db.prepare("SELECT grid FROM sweeps WHERE name = ?1", "reading sweep " + name);
    stored.bind_text(1, name);
    if (stored.step()) {
        if (stored.text(0) != grid)
            throw Error(db.path(), "sweep " + name,
                        "is stored with other settings (" + stored.text(0) + "): give this one another --name");
        return; // the same grid: its cells are there
    }
    db.prepare(std::string("INSERT INTO sweeps (name, grid, created_at) VALUES (?1, ?2, ") + kSqlNow + ")",
               "storing sweep " + name)
        .bind_text(1, name)
        .bind_text(2, grid)
        .execute();
    sql::Statement cell = db.prepare("INSERT INTO sweep_cells (sweep, cell, ordinal) VALUES (?1, ?2, ?3)",
                                     "storing the cells of sweep " + name);
    for (size_t i = 0; i < cells.size(); ++i) cell.bind_text(1, name).bind_text(2, cells[i]).bind_int(3, int64_t(i)).execute();
    transaction.commit();
}

std::set<std::string> done_cells(sql::Connection& db, const std::string& sweep) {
    sql::Statement q = db.prepare(std::string("SELECT DISTINCT cell FROM runs WHERE sweep = ?1 AND ") + kDone,
                                  "reading the done cells of sweep " + sweep);
    q.bind_text(1, sweep);
    std::set<std::string> done;
    while (q.step()) done.insert(q.text(0));
    return done;
}

int64_t delete_unfinished_runs(sql::Connection& db, const std::string& sweep, const std::set<std::string>& cells) {
    sql::Transaction transaction(db, "deleting unfinished runs of sweep " + sweep);
    sql::Statement q = db.prepare("DELETE FROM runs WHERE sweep = ?1 AND cell = ?2 AND status = 'unfinished'",
                                  "deleting unfinished runs of sweep " + sweep);
    int64_t deleted = 0;
    for (const std::string& cell : cells) {
        q.bind_text(1, sweep).bind_text(2, cell).execute();
        deleted += db.changes();
    }
    transaction.commit();
    return deleted;
}

std::vector<SweepProgress> sweep_progress(sql::Connection& db) {
    std::vector<SweepProgress> out;
    sql::Statement names = db.prepare("SELECT name FROM sweeps ORDER BY name", "reading sweeps");
    while (names.step()) out.push_back(SweepProgress{names.text(0), 0, 0, 0, {}});
    for (SweepProgress& p : out) {
        // Each cell with whether a run of it ended, and whether every such run failed.
        sql::Statement q = db.prepare(
            std::string("SELECT cell, (SELECT count(*) FROM runs r WHERE r.sweep = c.sweep AND r.cell = c.cell AND ") +
                kDone + "), (SELECT count(*) FROM runs r WHERE r.sweep = c.sweep AND r.cell = c.cell AND status = "
                        "'ok') FROM sweep_cells c WHERE sweep = ?1 ORDER BY ordinal",
            "reading the cells of sweep " + p.name);
        q.bind_text(1, p.name);
        while (q.step()) {
            ++p.cells;
            const bool done = q.int64(1) > 0, ok = q.int64(2) > 0;
            if (!done) p.missing.push_back(q.text(0));
            p.done += done;
            p.failed += done && !ok;
        }
    }
    return out;
}

std::vector<int64_t> sweep_runs(sql::Connection& db, const std::string& sweep) {
    sql::Statement q = db.prepare(std::string("SELECT r.id FROM runs r JOIN sweep_cells c ON c.sweep = r.sweep AND "
                                              "c.cell = r.cell WHERE r.sweep = ?1 AND r.") +
                                      kDone + " ORDER BY c.ordinal, r.id",
                                  "reading the runs of sweep " + sweep);
    q.bind_text(1, sweep);
    std::vector<int64_t> ids;
    while (q.step()) ids.push_back(q.int64(0));
    return ids;
}

} // namespace kvscope
