#include "sessions/export.h"

#include "sessions/csv.h"
#include "sessions/queries.h"

#include <ostream>

namespace kvscope {

namespace {

void step_row(CsvWriter& csv, int64_t run, const StoredStep& s) {
    const StepEvent& e = s.event;
    const bool ref = e.reference_token >= 0;
    csv.integer(run).integer(e.step).integer(e.token).text(s.text).real(e.logprob);
    csv.integer_if(ref, e.reference_token).real_if(ref, e.reference_logprob).real_if(ref, e.kl);
    csv.integer_if(ref, e.top1).integer_if(ref, e.token == e.reference_token);
    csv.integer(e.kv_bytes).integer_if(e.reference_kv_bytes >= 0, e.reference_kv_bytes).integer(e.kv_slots);
    csv.real(e.step_seconds).real(e.policy_seconds);
    csv.end_row();
}

// What the run's summary measured; all empty for an unfinished run.
void summary_columns(CsvWriter& csv, const std::optional<RunSummary>& summary) {
    const RunSummary s = summary.value_or(RunSummary{});
    const bool ended = summary.has_value(), ref = ended && s.has_reference;
    csv.real_if(ref && s.token_match >= 0, s.token_match).integer_if(ref && s.first_divergence >= 0, s.first_divergence);
    csv.real_if(ref, s.mean_kl).real_if(ref, s.max_kl).real_if(ref, s.top1);
    csv.real_if(ref, s.ppl_method).real_if(ref, s.ppl_reference);
    csv.integer_if(ended, s.kv_bytes).integer_if(ended, s.peak_kv_bytes).integer_if(ref, s.reference_kv_bytes);
    csv.real_if(ref && s.reference_kv_bytes > 0, double(s.kv_bytes) / double(s.reference_kv_bytes));
    csv.real_if(ended, s.bytes_per_token()).real_if(ended, s.decode_tokens_per_second());
    csv.real_if(ended, s.prefill_seconds).real_if(ended, s.decode_seconds).real_if(ended, s.policy_seconds);
    const double run_seconds = s.prefill_seconds + s.decode_seconds; // as `kvscope compare` reports it
    csv.real_if(ended && run_seconds > 0, s.policy_seconds / run_seconds);
}

void summary_row(CsvWriter& csv, const StoredRun& run) {
    const RunRecord& r = run.record;
    csv.integer(run.id).text(r.method).text(r.budget).text(run.status).integer(run.stored_steps);
    summary_columns(csv, run.summary);
    csv.text(r.model_path).text(r.device).text(r.dtype).integer(int64_t(r.prompt_tokens.size()));
    csv.text(std::to_string(r.seed)).text(run.started_at).text(run.error);
    csv.end_row();
}

} // namespace

void export_steps_csv(sql::Connection& db, const std::vector<int64_t>& runs, std::ostream& out) {
    CsvWriter csv(out);
    csv.header({"run", "step", "token", "text", "logprob", "reference_token", "reference_logprob", "kl", "top1", "match",
                "kv_bytes", "reference_kv_bytes", "kv_slots", "step_seconds", "policy_seconds"});
    for (int64_t id : runs) {
        load_run(db, id); // an unknown id is an error, not an empty table
        for (const StoredStep& s : load_steps(db, id)) step_row(csv, id, s);
    }
}

void export_summary_csv(sql::Connection& db, const std::vector<int64_t>& runs, std::ostream& out) {
    CsvWriter csv(out);
    csv.header({"run", "method", "budget", "status", "steps", "token_match", "first_divergence", "mean_kl", "max_kl",
                "top1", "ppl_method", "ppl_reference", "kv_bytes", "peak_kv_bytes", "reference_kv_bytes",
                "kv_fraction", "bytes_per_token", "decode_tokens_per_second", "prefill_seconds", "decode_seconds",
                "policy_seconds", "policy_share", "model", "device", "dtype", "prompt_tokens", "seed", "started_at",
                "error"});
    for (int64_t id : runs) summary_row(csv, load_run(db, id));
}

} // namespace kvscope
