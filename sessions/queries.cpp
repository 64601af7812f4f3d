#include "sessions/queries.h"

#include "core/error.h"
#include "core/head_roles.h"
#include "core/policy.h"
#include "sessions/attention_blob.h"
#include "sessions/decision_blob.h"
#include "sessions/schema.h"
#include "sessions/token_blob.h"

#include <algorithm>
#include <limits>

namespace kvscope {

namespace {

const char* const kRunColumns =
    "id, model_path, model_hash, method, budget, prompt_text, prompt_tokens, seed, device, dtype, build_version, "
    "started_at, ended_at, status, error, has_reference, n_steps, token_match, first_divergence, mean_kl, max_kl, "
    "top1, ppl_method, ppl_reference, kv_bytes, peak_kv_bytes, reference_kv_bytes, final_context, prefill_seconds, "
    "decode_seconds, policy_seconds, (SELECT count(*) FROM steps WHERE run_id = runs.id), uuid, task, answer, sweep, "
    "cell";

std::string run_name(int64_t id) { return "run " + std::to_string(id); }

constexpr int64_t kMaxAttentionKeys = int64_t(1) << 24; // columns of a row: a damaged count never inflates more

// A measured value, or `otherwise` when the column is NULL (not measured).
double real_or(const sql::Statement& q, int column, double otherwise) {
    return q.is_null(column) ? otherwise : q.real(column);
}

RunSummary read_summary(const sql::Statement& q, const StoredRun& run) {
    RunSummary s;
    s.method = run.record.method;
    s.budget = run.record.budget;
    s.status = run.status;
    s.error = run.error;
    s.n_prompt = int64_t(run.record.prompt_tokens.size());
    s.has_reference = q.int64(15) != 0;
    s.n_steps = q.int64(16);
    s.token_match = real_or(q, 17, s.has_reference ? -1 : 1); // NULL with a reference: forced, not measured
    s.first_divergence = q.is_null(18) ? -1 : q.int64(18);
    s.mean_kl = real_or(q, 19, 0);
    s.max_kl = real_or(q, 20, 0);
    s.top1 = real_or(q, 21, 1);
    s.ppl_method = real_or(q, 22, 0);
    s.ppl_reference = real_or(q, 23, 0);
    s.kv_bytes = q.int64(24);
    s.peak_kv_bytes = q.int64(25);
    s.reference_kv_bytes = q.int64(26);
    s.final_context = q.int64(27);
    s.prefill_seconds = q.real(28);
    s.decode_seconds = q.real(29);
    s.policy_seconds = q.real(30);
    return s;
}

StoredRun read_run(const sql::Statement& q, const std::string& path) {
    StoredRun run;
    run.id = q.int64(0);
    RunRecord& r = run.record;
    r.model_path = q.text(1);
    r.model_hash = q.text(2);
    r.method = q.text(3);
    r.budget = q.text(4);
    r.prompt_text = q.text(5);
    r.prompt_tokens = unpack_tokens(q.text(6), path + ": " + run_name(run.id));
    r.seed = uint64_t(q.int64(7));
    r.device = q.text(8);
    r.dtype = q.text(9);
    run.build_version = q.text(10);
    run.started_at = q.text(11);
    run.ended_at = q.text(12);
    run.status = q.text(13);
    run.error = q.text(14);
    if (!q.is_null(16)) run.summary = read_summary(q, run); // n_steps: set when the run ended
    run.stored_steps = q.int64(31);
    r.uuid = q.text(32);
    r.task = q.text(33);
    r.answer = q.text(34);
    r.sweep = q.text(35);
    r.cell = q.text(36);
    return run;
}

} // namespace

std::vector<StoredRun> list_runs(sql::Connection& db) {
    sql::Statement q = db.prepare(std::string("SELECT ") + kRunColumns + " FROM runs ORDER BY id", "listing runs");
    std::vector<StoredRun> runs;
    while (q.step()) runs.push_back(read_run(q, db.path()));
    return runs;
}

std::optional<int64_t> find_run(sql::Connection& db, const std::string& uuid) {
    sql::Statement q = db.prepare("SELECT id FROM runs WHERE uuid = ?1", "finding a run");
    q.bind_text(1, uuid);
    if (!q.step()) return std::nullopt;
    return q.int64(0);
}

StoredRun load_run(sql::Connection& db, int64_t id) {
    sql::Statement q = db.prepare(std::string("SELECT ") + kRunColumns + " FROM runs WHERE id = ?1", "reading a run");
    q.bind_int(1, id);
    if (!q.step()) throw Error(db.path(), run_name(id), "no such run");
    return read_run(q, db.path());
}

std::vector<StoredStep> load_steps(sql::Connection& db, int64_t run_id) {
    sql::Statement q = db.prepare("SELECT step, token, text, logprob, reference_token, reference_logprob, kl, top1, "
                                  "kv_bytes, kv_slots, step_seconds, policy_seconds, reference_kv_bytes FROM steps "
                                  "WHERE run_id = ?1 ORDER BY step",
                                  "reading steps");
    q.bind_int(1, run_id);
    std::vector<StoredStep> steps;
    while (q.step()) {
        StoredStep s;
        StepEvent& e = s.event;
        e.step = q.int64(0);
        e.token = int32_t(q.int64(1));
        s.text = q.text(2);
        e.logprob = q.real(3);
        e.reference_token = q.is_null(4) ? -1 : int32_t(q.int64(4));
        e.reference_logprob = real_or(q, 5, 0);
        e.kl = real_or(q, 6, 0);
        e.top1 = q.is_null(7) || q.int64(7) != 0;
        e.kv_bytes = q.int64(8);
        e.kv_slots = q.int64(9);
        e.step_seconds = q.real(10);
        e.policy_seconds = q.real(11);
        e.reference_kv_bytes = q.is_null(12) ? -1 : q.int64(12);
        steps.push_back(std::move(s));
    }
    return steps;
}

std::vector<Decision> load_decisions(sql::Connection& db, int64_t run_id, int64_t step) {
    sql::Statement q =
        db.prepare("SELECT size, data FROM decisions WHERE run_id = ?1 AND step = ?2", "reading decisions");
    q.bind_int(1, run_id).bind_int(2, step);
    if (!q.step()) return {};
    return decode_decisions(q.text(1), q.int64(0),
                            db.path() + ": " + run_name(run_id) + " step " + std::to_string(step));
}

std::vector<int64_t> steps_with_decisions(sql::Connection& db, int64_t run_id) {
    sql::Statement q = db.prepare("SELECT step FROM decisions WHERE run_id = ?1 ORDER BY step", "reading decisions");
    q.bind_int(1, run_id);
    std::vector<int64_t> steps;
    while (q.step()) steps.push_back(q.int64(0));
    return steps;
}

std::vector<AttentionStep> load_attention(sql::Connection& db, int64_t run_id) {
    sql::Statement q = db.prepare("SELECT step, layer, head, n_queries, n_keys, key_stride, data FROM attention_samples "
                                  "WHERE run_id = ?1 ORDER BY step, layer, head",
                                  "reading attention samples");
    q.bind_int(1, run_id);
    const std::string where = db.path() + ": " + run_name(run_id);
    std::vector<AttentionStep> steps;
    while (q.step()) {
        const int64_t step = q.int64(0), layer = q.int64(1), head = q.int64(2), n_keys = q.int64(4), stride = q.int64(5);
        const std::string at = "step " + std::to_string(step) + " L" + std::to_string(layer) + ".H" + std::to_string(head);
        if (q.int64(3) != 1 || layer < 0 || head < 0 || n_keys < 1 || n_keys > kMaxAttentionKeys || stride < 1 ||
            stride > std::numeric_limits<int32_t>::max())
            throw Error(where, "attention_samples", at + " is malformed (one query per row, 1 .. " +
                                                        std::to_string(kMaxAttentionKeys) + " columns, a positive stride)");
        if (steps.empty() || steps.back().step != step) steps.push_back({step, 0, 0, int32_t(n_keys), int32_t(stride), {}});
        AttentionStep& s = steps.back();
        if (n_keys != steps.front().n_keys || stride != steps.front().key_stride)
            throw Error(where, "attention_samples", at + " has other columns than the run's first row");
        s.n_layer = int32_t(std::max<int64_t>(s.n_layer, layer + 1));
        s.n_head = int32_t(std::max<int64_t>(s.n_head, head + 1));
        const std::vector<float> row = decode_attention(q.text(6), size_t(n_keys), where + " " + at);
        s.mass.insert(s.mass.end(), row.begin(), row.end());
    }
    // Rows are unique per (step, layer, head): a step holds every pair when it holds as many
    // rows as its largest layer and head span.
    for (const AttentionStep& s : steps)
        if (s.n_layer != steps.front().n_layer || s.n_head != steps.front().n_head ||
            s.mass.size() != size_t(s.n_layer) * size_t(s.n_head) * size_t(s.n_keys))
            throw Error(where, "attention_samples", "step " + std::to_string(s.step) + " misses some layers or heads");
    return steps;
}

void delete_run(sql::Connection& db, int64_t id) {
    sql::Statement q = db.prepare("DELETE FROM runs WHERE id = ?1", "deleting a run");
    q.bind_int(1, id).execute();
    if (db.changes() == 0) throw Error(db.path(), run_name(id), "no such run");
}

int64_t store_comparison(sql::Connection& db, const std::string& name, const std::vector<int64_t>& run_ids) {
    sql::Transaction transaction(db, "storing a comparison");
    db.prepare(std::string("INSERT INTO comparisons (name, created_at) VALUES (?1, ") + kSqlNow + ")",
               "storing a comparison")
        .bind_text(1, name)
        .execute();
    const int64_t id = db.last_insert_id();
    sql::Statement add =
        db.prepare("INSERT INTO comparison_runs (comparison_id, run_id) VALUES (?1, ?2)", "storing a comparison");
    for (int64_t run : run_ids) add.bind_int(1, id).bind_int(2, run).execute();
    transaction.commit();
    return id;
}

std::vector<int64_t> comparison_runs(sql::Connection& db, const std::string& name) {
    sql::Statement q = db.prepare("SELECT run_id FROM comparison_runs JOIN comparisons ON comparisons.id = comparison_id "
                                  "WHERE name = ?1 ORDER BY run_id",
                                  "reading a comparison");
    q.bind_text(1, name);
    std::vector<int64_t> runs;
    while (q.step()) runs.push_back(q.int64(0));
    return runs;
}

void add_to_comparison(sql::Connection& db, const std::string& name, int64_t run_id) {
    db.prepare(std::string("INSERT OR IGNORE INTO comparisons (name, created_at) VALUES (?1, ") + kSqlNow + ")",
               "storing a comparison")
        .bind_text(1, name)
        .execute();
    db.prepare("INSERT OR IGNORE INTO comparison_runs (comparison_id, run_id) "
               "SELECT id, ?2 FROM comparisons WHERE name = ?1",
               "storing a comparison")
        .bind_text(1, name)
        .bind_int(2, run_id)
        .execute();
}

void store_head_roles(sql::Connection& db, const std::string& model_hash, const std::string& probes,
                      const HeadRoles& roles) {
    sql::Transaction transaction(db, "storing head roles");
    db.prepare("DELETE FROM head_roles WHERE model_hash = ?1 AND probes = ?2", "storing head roles")
        .bind_text(1, model_hash)
        .bind_text(2, probes)
        .execute();
    sql::Statement q = db.prepare(std::string("INSERT INTO head_roles (model_hash, probes, layer, head, role, score, "
                                              "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ") + kSqlNow + ")",
                                  "storing head roles");
    const auto add = [&](int64_t layer, int64_t head, const std::string& role, double score) {
        q.bind_text(1, model_hash).bind_text(2, probes).bind_int(3, layer).bind_int(4, head).bind_text(5, role);
        q.bind_real(6, score).execute();
    };
    for (size_t r = 0; r < roles.roles.size(); ++r)
        for (int64_t i = 0; i < roles.n_layer * roles.n_head; ++i)
            add(i / roles.n_head, i % roles.n_head, roles.roles[r], roles.scores[r][size_t(i)]);
    for (int64_t l = 0; l < roles.n_layer; ++l) add(l, -1, "layer_preference", roles.layer_preference[size_t(l)]);
    transaction.commit();
}

std::optional<HeadRoles> load_head_roles(sql::Connection& db, const std::string& model_hash, const std::string& probes) {
    sql::Statement q = db.prepare("SELECT layer, head, role, score FROM head_roles WHERE model_hash = ?1 AND probes = ?2 "
                                  "ORDER BY role, layer, head",
                                  "reading head roles");
    q.bind_text(1, model_hash).bind_text(2, probes);
    struct Row { int64_t layer, head; std::string role; double score; };
    std::vector<Row> rows;
    HeadRoles r;
    while (q.step()) {
        rows.push_back({q.int64(0), q.int64(1), q.text(2), q.real(3)});
        r.n_layer = std::max(r.n_layer, rows.back().layer + 1);
        r.n_head = std::max(r.n_head, rows.back().head + 1);
    }
    if (rows.empty()) return std::nullopt;
    r.layer_preference.assign(size_t(r.n_layer), 0.0);
    std::vector<std::vector<bool>> seen;
    for (const Row& row : rows) {
        if (row.layer < 0 || row.head < -1) throw Error(db.path(), "head roles", "a row at layer " + std::to_string(row.layer));
        if (row.head == -1) {
            r.layer_preference[size_t(row.layer)] = row.score;
            continue;
        }
        if (r.roles.empty() || r.roles.back() != row.role) {
            r.roles.push_back(row.role);
            r.scores.emplace_back(size_t(r.n_layer * r.n_head), 0.0);
            seen.emplace_back(size_t(r.n_layer * r.n_head), false);
        }
        r.scores.back()[size_t(row.layer * r.n_head + row.head)] = row.score;
        seen.back()[size_t(row.layer * r.n_head + row.head)] = true;
    }
    for (size_t i = 0; i < seen.size(); ++i)
        if (std::count(seen[i].begin(), seen[i].end(), false) > 0)
            throw Error(db.path(), "head roles", "role " + r.roles[i] + " misses some heads under probes \"" + probes + "\"");
    return r;
}

std::vector<std::string> run_comparisons(sql::Connection& db, int64_t run_id) {
    sql::Statement q = db.prepare("SELECT name FROM comparisons JOIN comparison_runs ON comparison_id = comparisons.id "
                                  "WHERE run_id = ?1 ORDER BY name",
                                  "reading a run's comparisons");
    q.bind_int(1, run_id);
    std::vector<std::string> names;
    while (q.step()) names.push_back(q.text(0));
    return names;
}

} // namespace kvscope
