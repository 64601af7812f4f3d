// The report export (issue 6, item 5): runs from the sessions database as a Markdown file
// and a self-contained HTML page, for a paper's appendix, with PNG plots (sessions/plot.h):
//
//   - a summary table per run (method, budget, match, KL, top-1, perplexity, KV bytes,
//     tokens/s, policy share) and a table of what each ran on;
//   - fidelity vs budget, one line per method: mean KL, and top-1 / token match;
//   - KV bytes vs step, one line per run;
//   - the eviction raster of one layer and KV head per run: decode step x token position,
//     each cell kept, evicted at that step, evicted earlier or not yet generated;
//   - the head-role grids (layer x query head, one per role) of each model that has scores.
//
// For --out PATH (PATH.md, or PATH itself when it ends in .md) it writes <stem>.md, the PNGs
// <stem>-<plot>.png beside it that the Markdown links to, and <stem>.html with the same PNGs
// inlined as data URIs. All files are written under temporary names and renamed when every
// one is complete: a failure leaves none of them behind.
#pragma once

#include "sessions/plot.h"
#include "sessions/records.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kvscope {

namespace sql {
class Connection;
}

struct ReportOptions {
    std::string comparison;      // the comparison the runs are, named in the report's heading
    int64_t layer = 0, head = 0; // the eviction raster's layer and KV head
};

// A report of `runs`, in that order. Throws Error naming the database for an unknown run,
// and naming the file for one that cannot be written.
void write_report(sql::Connection& db, const std::vector<int64_t>& runs, const ReportOptions& options,
                  const std::string& out_path);

// ---- the eviction raster, reconstructed from the decision blobs ------------------------

enum class RasterCell : uint8_t { kept, evicted_now, evicted_earlier, not_generated };

struct EvictionRaster {
    int64_t n_prompt = 0, n_steps = 0;
    int64_t n_positions = 0;          // the last step's context
    std::vector<int64_t> evicted_at;  // per position: the step that evicted it, -1 if never
    bool has_decisions = false;       // the layer and head lost slots at some step

    // At decode step `step` the context holds positions [0, n_prompt + step): step 0 is
    // the prefill, each later step adds the token the step before predicted.
    RasterCell at(int64_t step, int64_t position) const;
};

// The raster of `layer` and KV `head` of `run` (positions past the last step's context,
// only in a damaged database, are left out).
EvictionRaster eviction_raster(sql::Connection& db, const StoredRun& run, int64_t layer, int64_t head);

// The colour of a raster cell in the report's PNGs.
plot::Rgb raster_cell_colour(RasterCell cell);

} // namespace kvscope
