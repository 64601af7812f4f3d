// Reading the sessions database back: runs, their steps and decisions; deleting runs.
// Every function throws Error naming the file (and the run) on a failure or a damaged row.
#pragma once

#include "sessions/records.h"
#include "sessions/sqlite.h"

#include <cstdint>
#include <optional>
#include <vector>

namespace kvscope {

struct HeadRoles;

// Every run, oldest first.
std::vector<StoredRun> list_runs(sql::Connection& db);
// The id of the run with this uuid, if the database holds it.
std::optional<int64_t> find_run(sql::Connection& db, const std::string& uuid);
// Throws Error("<file>", "run <id>", "no such run") for an id not in the database.
StoredRun load_run(sql::Connection& db, int64_t id);
std::vector<StoredStep> load_steps(sql::Connection& db, int64_t run_id);
// The step's decisions, empty when the method evicted nothing there.
std::vector<Decision> load_decisions(sql::Connection& db, int64_t run_id, int64_t step);
// The steps that have decisions, in order.
std::vector<int64_t> steps_with_decisions(sql::Connection& db, int64_t run_id);
// The run's attention samples (the GUI's, one query per row) by step, in step order; empty
// when it has none. Throws Error for a damaged row or a step that misses some layer or head.
std::vector<AttentionStep> load_attention(sql::Connection& db, int64_t run_id);
// Deletes a run with its steps, decisions, samples and comparison entries.
void delete_run(sql::Connection& db, int64_t id);
// Stores a named collection of runs (a `kvscope compare`); returns its id.
int64_t store_comparison(sql::Connection& db, const std::string& name, const std::vector<int64_t>& run_ids);
// The runs of the comparison called `name`, in order.
std::vector<int64_t> comparison_runs(sql::Connection& db, const std::string& name);
// Adds a run to the comparison called `name`, creating the comparison when there is none.
void add_to_comparison(sql::Connection& db, const std::string& name, int64_t run_id);
// Stores a model's head-role scores (core/head_roles.h) under `probes` (the probe options,
// as ProbeOptions::describe() gives them), replacing what was stored under the same pair:
// each role's score per (layer, query head), and the layer preference as role
// "layer_preference" with head -1.
void store_head_roles(sql::Connection& db, const std::string& model_hash, const std::string& probes,
                      const HeadRoles& roles);
// The scores store_head_roles() stored for the model under `probes`, roles in name order
// (n_head_kv is not stored: 0); none when nothing is stored. Throws Error when a role
// misses some head.
std::optional<HeadRoles> load_head_roles(sql::Connection& db, const std::string& model_hash, const std::string& probes);
// The names of the comparisons that hold the run, in name order.
std::vector<std::string> run_comparisons(sql::Connection& db, int64_t run_id);

} // namespace kvscope
