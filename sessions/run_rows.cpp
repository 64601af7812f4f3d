#include "sessions/run_rows.h"

#include "core/policy.h"
#include "sessions/attention_blob.h"
#include "sessions/decision_blob.h"
#include "sessions/token_blob.h"

#include <cassert>
#include <cstdio>
#include <mutex>
#include <random>

namespace kvscope::rows {

const char* const kRecordColumns =
    "model_path, model_hash, method, budget, prompt_text, prompt_tokens, seed, device, dtype, uuid, task, answer, "
    "sweep, cell";
const char* const kSummaryColumns =
    "has_reference, n_steps, token_match, first_divergence, mean_kl, max_kl, top1, ppl_method, ppl_reference, "
    "kv_bytes, peak_kv_bytes, reference_kv_bytes, final_context, prefill_seconds, decode_seconds, policy_seconds";

namespace {

// A value that is NULL when it was not measured.
void bind_measured(sql::Statement& q, int i, bool measured, double value) {
    if (measured) q.bind_real(i, value);
}

} // namespace

std::string new_run_uuid() {
    static std::mutex mutex; // std::random_device's operator() is not promised to be thread-safe
    static std::random_device entropy;
    std::lock_guard<std::mutex> lock(mutex);
    char hex[33];
    for (int i = 0; i < 4; ++i) std::snprintf(hex + 8 * i, 9, "%08x", unsigned(entropy()));
    return hex;
}

std::string placeholders(int first, int count) {
    std::string out;
    for (int i = first; i < first + count; ++i) out += (i == first ? "?" : ", ?") + std::to_string(i);
    return out;
}

void bind_record(sql::Statement& q, int first, const RunRecord& r) {
    q.bind_text(first, r.model_path)
        .bind_text(first + 1, r.model_hash)
        .bind_text(first + 2, r.method)
        .bind_text(first + 3, r.budget)
        .bind_text(first + 4, r.prompt_text)
        .bind_blob(first + 5, pack_tokens(r.prompt_tokens))
        .bind_int(first + 6, int64_t(r.seed))
        .bind_text(first + 7, r.device)
        .bind_text(first + 8, r.dtype)
        .bind_text(first + 9, r.uuid);
    const std::string* optional[] = {&r.task, &r.answer, &r.sweep, &r.cell};
    for (int i = 0; i < 4; ++i)
        if (!optional[i]->empty()) q.bind_text(first + 10 + i, *optional[i]);
}

void bind_summary(sql::Statement& q, int first, const RunSummary& s) {
    const bool ref = s.has_reference;
    q.bind_int(first, ref).bind_int(first + 1, s.n_steps);
    bind_measured(q, first + 2, ref && s.token_match >= 0, s.token_match);
    if (ref && s.first_divergence >= 0) q.bind_int(first + 3, s.first_divergence);
    bind_measured(q, first + 4, ref, s.mean_kl);
    bind_measured(q, first + 5, ref, s.max_kl);
    bind_measured(q, first + 6, ref, s.top1);
    bind_measured(q, first + 7, ref, s.ppl_method);
    bind_measured(q, first + 8, ref, s.ppl_reference);
    q.bind_int(first + 9, s.kv_bytes).bind_int(first + 10, s.peak_kv_bytes);
    if (ref) q.bind_int(first + 11, s.reference_kv_bytes);
    q.bind_int(first + 12, s.final_context)
        .bind_real(first + 13, s.prefill_seconds)
        .bind_real(first + 14, s.decode_seconds)
        .bind_real(first + 15, s.policy_seconds);
}

sql::Statement prepare_step(sql::Connection& db) {
    return db.prepare("INSERT INTO steps (run_id, step, token, text, logprob, reference_token, reference_logprob, "
                      "kl, top1, match, kv_bytes, kv_slots, step_seconds, policy_seconds, reference_kv_bytes) "
                      "VALUES (" + placeholders(1, 15) + ")",
                      "storing a step");
}

sql::Statement prepare_decisions(sql::Connection& db) {
    return db.prepare("INSERT INTO decisions (run_id, step, n_heads, size, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                      "storing a step's decisions");
}

void insert_step(sql::Statement& q, int64_t run_id, const StepEvent& e, std::string_view text) {
    q.bind_int(1, run_id).bind_int(2, e.step).bind_int(3, e.token).bind_blob(4, text);
    q.bind_real(5, e.logprob);
    if (e.reference_token >= 0) // otherwise 6-10 stay NULL
        q.bind_int(6, e.reference_token)
            .bind_real(7, e.reference_logprob)
            .bind_real(8, e.kl)
            .bind_int(9, e.top1)
            .bind_int(10, e.token == e.reference_token);
    q.bind_int(11, e.kv_bytes).bind_int(12, e.kv_slots).bind_real(13, e.step_seconds).bind_real(14, e.policy_seconds);
    if (e.reference_kv_bytes >= 0) q.bind_int(15, e.reference_kv_bytes);
    q.execute();
}

sql::Statement prepare_attention(sql::Connection& db) {
    return db.prepare("INSERT INTO attention_samples (run_id, step, layer, head, n_queries, n_keys, key_stride, data) "
                      "VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7)",
                      "storing a step's attention");
}

sql::Statement prepare_thin_attention(sql::Connection& db) {
    return db.prepare("DELETE FROM attention_samples WHERE run_id = ?1 AND step % ?2 != 0", "thinning a run's attention");
}

void insert_decisions(sql::Statement& q, int64_t run_id, int64_t step, const std::vector<Decision>& decisions) {
    const DecisionBlob blob = encode_decisions(decisions);
    q.bind_int(1, run_id)
        .bind_int(2, step)
        .bind_int(3, int64_t(decisions.size()))
        .bind_int(4, blob.size)
        .bind_blob(5, blob.data)
        .execute();
}

void insert_attention(sql::Statement& q, int64_t run_id, const AttentionStep& a) {
    assert(a.mass.size() == size_t(a.n_layer) * size_t(a.n_head) * size_t(a.n_keys));
    const float* row = a.mass.data();
    for (int32_t layer = 0; layer < a.n_layer; ++layer)
        for (int32_t head = 0; head < a.n_head; ++head, row += a.n_keys)
            q.bind_int(1, run_id)
                .bind_int(2, a.step)
                .bind_int(3, layer)
                .bind_int(4, head)
                .bind_int(5, a.n_keys)
                .bind_int(6, a.key_stride)
                .bind_blob(7, encode_attention(row, size_t(a.n_keys)))
                .execute();
}

} // namespace kvscope::rows
