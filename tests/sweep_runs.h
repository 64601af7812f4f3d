// The runs of a sweep by cell, to check that a sharded sweep (merged from its shards'
// databases) equals the same grid run in one process: the same tokens and decisions.
#pragma once

#include "sessions/queries.h"
#include "sessions/schema.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace kvscope::test {

// A cell's run as the comparison with another database needs it: tokens and decisions.
struct CellRun {
    std::vector<int32_t> tokens;
    std::vector<std::vector<Decision>> decisions; // at each step that has them
    bool operator==(const CellRun& o) const {
        if (tokens != o.tokens || decisions.size() != o.decisions.size()) return false;
        for (size_t i = 0; i < decisions.size(); ++i) {
            if (decisions[i].size() != o.decisions[i].size()) return false;
            for (size_t j = 0; j < decisions[i].size(); ++j)
                if (decisions[i][j].kept != o.decisions[i][j].kept || decisions[i][j].evicted != o.decisions[i][j].evicted)
                    return false;
        }
        return true;
    }
};

// Every run of the sweep by its cell; each cell must have one.
inline std::map<std::string, CellRun> cell_runs(const std::string& path, const std::string& sweep) {
    auto db = open_session_db(path, SessionAccess::read);
    std::map<std::string, CellRun> out;
    for (const StoredRun& run : list_runs(*db)) {
        EXPECT_EQ(run.record.sweep, sweep);
        EXPECT_EQ(run.status, "ok") << run.error;
        CellRun& cell = out[run.record.cell];
        EXPECT_TRUE(cell.tokens.empty()) << "two runs of " << run.record.cell << " in " << path;
        for (const StoredStep& s : load_steps(*db, run.id)) cell.tokens.push_back(s.event.token);
        for (int64_t step : steps_with_decisions(*db, run.id)) cell.decisions.push_back(load_decisions(*db, run.id, step));
    }
    return out;
}

// The sweep "grid" in the database at `sharded` (merged from shards) holds the same cells
// as in `local` (the grid run in one process), `n_cells` of them, each with the same
// tokens (`n_steps` of them) and the same decisions, and each method evicted something.
inline void expect_same_cells(const std::string& local_db, const std::string& sharded_db, size_t n_cells,
                              size_t n_steps) {
    const std::map<std::string, CellRun> local = cell_runs(local_db, "grid"), sharded = cell_runs(sharded_db, "grid");
    ASSERT_EQ(local.size(), n_cells);
    ASSERT_EQ(sharded.size(), n_cells);
    for (const auto& [cell, run] : local) {
        ASSERT_TRUE(sharded.count(cell)) << cell;
        EXPECT_TRUE(sharded.at(cell) == run) << cell << ": tokens or decisions differ from the one-process run";
        EXPECT_EQ(run.tokens.size(), n_steps);
        EXPECT_EQ(run.decisions.empty(), cell.find("method=full") != std::string::npos) << cell;
    }
}

} // namespace kvscope::test
