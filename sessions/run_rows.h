// How a run's rows are written: the SQL and the bindings that the writer thread and the
// JSON import share, so a run stored either way reads back the same (NULL where a value
// was not measured, as sessions/schema.cpp describes).
#pragma once

#include "sessions/records.h"
#include "sessions/sqlite.h"

#include <string>
#include <string_view>

namespace kvscope::rows {

// The runs columns of a RunRecord, in the order bind_record() binds them.
extern const char* const kRecordColumns;
// The runs columns of a RunSummary, in the order bind_summary() binds them.
extern const char* const kSummaryColumns;
constexpr int kRecordColumnCount = 14;
constexpr int kSummaryColumnCount = 16;

// A new run identity: 128 random bits as 32 lowercase hex digits.
std::string new_run_uuid();

// "?first, ?first+1, ..., ?first+count-1": the placeholders of a column list.
std::string placeholders(int first, int count);

// Binds the record to parameters first .. first + kRecordColumnCount - 1; its empty
// task, answer, sweep and cell as NULL. The uuid must be set.
void bind_record(sql::Statement& q, int first, const RunRecord& record);
// Binds the summary to parameters first .. first + kSummaryColumnCount - 1; what the run
// did not measure (no reference, a forced reference, no divergence) stays NULL.
void bind_summary(sql::Statement& q, int first, const RunSummary& summary);

// INSERT statements for one step, its decisions and its attention samples.
sql::Statement prepare_step(sql::Connection& db);
sql::Statement prepare_decisions(sql::Connection& db);
sql::Statement prepare_attention(sql::Connection& db);
void insert_step(sql::Statement& q, int64_t run_id, const StepEvent& event, std::string_view text);
// Stores the decisions as one blob (sessions/decision_blob.h).
void insert_decisions(sql::Statement& q, int64_t run_id, int64_t step, const std::vector<Decision>& decisions);
// Stores one row per (layer, query head), each one query's blob (sessions/attention_blob.h).
void insert_attention(sql::Statement& q, int64_t run_id, const AttentionStep& attention);
// A DELETE of the run's attention samples at steps that are not multiples of a stride
// (?1 the run, ?2 the stride): what thinning a trace drops.
sql::Statement prepare_thin_attention(sql::Connection& db);

} // namespace kvscope::rows
