// `kvscope sessions merge`: the runs of other sessions databases (a sweep's shards, a
// colleague's file) copied into one. Runs keep their uuid across databases, so a run is
// copied once however often it is merged, and a sweep cell keeps one finished run.
#pragma once

#include "sessions/sqlite.h"

#include <cstdint>
#include <string>

namespace kvscope {

struct MergeCounts {
    int64_t copied = 0;          // runs copied, with their steps, decisions and attention samples
    int64_t already_there = 0;   // runs the target holds (the same uuid)
    int64_t duplicate_cells = 0; // sweep runs of a cell the target has a run of (finished, or
                                 // unfinished like them): the target's stays
    int64_t replaced = 0;        // the target's unfinished runs of a cell that a finished run
                                 // from `source` took the place of
};

// Copies into `target` what the database at `source` holds and it lacks: runs (see
// MergeCounts), their comparisons (joined by name), head-role scores and sweeps (a sweep
// of the same name must have the same settings). All or nothing, in one transaction.
// `source` is opened as `kvscope sessions` reads, so an older schema is upgraded first.
// Throws Error naming the file for a source that is not a sessions database, is newer,
// is the target itself, or holds a sweep whose settings differ from the target's.
MergeCounts merge_sessions(sql::Connection& target, const std::string& source);

} // namespace kvscope
