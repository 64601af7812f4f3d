// A sweep's grid in the sessions database (`kvscope sweep`, DESIGN.md §9): its settings,
// its cells, which cells hold a finished run. Every shard of a sweep stores the whole grid,
// so any shard's database, and a merge of some of them, knows which cells are missing.
//
// A cell is done when a run of it ended ('ok' or 'failed': a failure is the method's,
// and runs again the same way); a run left 'unfinished' by a stopped process is not.
#pragma once

#include "sessions/sqlite.h"

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace kvscope {

// Stores the sweep `name` with its settings (`grid`, JSON) and cells, or checks that the
// stored one has the same settings: throws Error naming the file and the sweep when not.
void store_sweep(sql::Connection& db, const std::string& name, const std::string& grid,
                 const std::vector<std::string>& cells);

// The sweep's done cells.
std::set<std::string> done_cells(sql::Connection& db, const std::string& sweep);

// Deletes the 'unfinished' runs of these cells (left by a stopped process, to be run
// again); returns how many.
int64_t delete_unfinished_runs(sql::Connection& db, const std::string& sweep, const std::set<std::string>& cells);

struct SweepProgress {
    std::string name;
    int64_t cells = 0, done = 0, failed = 0; // failed: done cells whose run failed
    std::vector<std::string> missing;        // in the grid's order
};
// Every sweep in the database, by name.
std::vector<SweepProgress> sweep_progress(sql::Connection& db);

// The ids of the sweep's done runs, in the grid's order.
std::vector<int64_t> sweep_runs(sql::Connection& db, const std::string& sweep);

} // namespace kvscope
