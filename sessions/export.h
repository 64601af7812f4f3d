// Exports of stored runs (DESIGN.md §7, issue 6 item 5): JSON with its import, CSV tables
// and a Chrome trace. Each writes to a stream; write_file_atomically() puts one in a file.
// Every function throws Error naming the database and the run for an unknown run id.
//
// JSON (export_json.cpp): everything stored about each run, and import_json(), its inverse.
//   {"format": "kvscope-runs", "version": 2, "runs": [run, ...]}, one line per step:
//   run = {the run's row (uuid, settings, task, sweep cell, build, times, status, error), "summary" (null while
//          unfinished), "comparisons" (names), "steps": [{the step's row, "decisions"
//          (only at steps that have them): [{layer, head, kept, evicted}]}]}
//   Database ids are left out, so a run imported anywhere exports to the same bytes; runs
//   refer to their comparisons by name. Version 1 (before run uuids) still imports. A value the run did not measure is null. Text is
//   UTF-8; bytes that are not (a token can split a character) are replaced by U+FFFD in
//   "<key>", and given exactly, as hex, in "<key>_hex". ±Infinity is the string "inf"/"-inf".
//
// CSV (export_csv.cpp), RFC 4180 (CRLF, quoted where needed, text as UTF-8 with U+FFFD):
//   steps: one row per step of every run, the run id first; empty where not measured.
//   summary: one row per run (method, budget, fidelity, perplexity, KV bytes, speed, ...).
//
// Trace (export_trace.cpp): Chrome's Trace Event Format, for Perfetto and chrome://tracing.
//   One process per run, each starting at 0 µs so runs line up; tracks "run" (the whole
//   run, its settings as args), "forward" (prefill, each decode step) and "policy"; the
//   stored per-step seconds are laid end to end. Counters: KV bytes and slots, KL and top-1
//   (with a reference), decode tokens/s; the run's settings also as process metadata.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

namespace kvscope {

namespace sql {
class Connection;
}

void export_json(sql::Connection& db, const std::vector<int64_t>& runs, std::ostream& out);
// Stores the runs of an export_json() document (`text`, read from `where`) that the database
// lacks (by uuid), all in one transaction, joining (or creating) their comparisons by name.
// Throws Error naming `where` and the field for a document that is not one.
struct ImportResult {
    std::vector<int64_t> stored;   // the new runs' ids, in the document's order
    std::vector<int64_t> existing; // the ids of its runs that were there already
};
ImportResult import_json(sql::Connection& db, const std::string& text, const std::string& where);

void export_steps_csv(sql::Connection& db, const std::vector<int64_t>& runs, std::ostream& out);
void export_summary_csv(sql::Connection& db, const std::vector<int64_t>& runs, std::ostream& out);

void export_trace(sql::Connection& db, const std::vector<int64_t>& runs, std::ostream& out);

// Writes `path` through `fill`, all or nothing: into a temporary file beside it, renamed
// over `path` once complete. Throws Error naming `path` when it cannot be written; whatever
// `fill` throws is rethrown, and then nothing is left behind.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& fill);

// `bytes` as valid UTF-8: each byte of an invalid sequence becomes U+FFFD.
std::string valid_utf8(std::string_view bytes);

} // namespace kvscope
