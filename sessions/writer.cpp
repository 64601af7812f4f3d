#include "sessions/writer.h"

#include "core/error.h"
#include "sessions/build_version.h"
#include "sessions/decision_blob.h"
#include "sessions/schema.h"
#include "sessions/sqlite.h"
#include "sessions/token_blob.h"

#include <cassert>

namespace kvscope {

namespace {

// A value that is NULL when it was not measured.
void bind_measured(sql::Statement& q, int i, bool measured, double value) {
    if (measured) q.bind_real(i, value);
}

} // namespace

struct SessionWriter::Statements {
    sql::Statement begin, step, decisions, end;

    explicit Statements(sql::Connection& db)
        : begin(db.prepare(std::string("INSERT INTO runs (model_path, model_hash, method, budget, prompt_text, "
                                       "prompt_tokens, seed, device, dtype, build_version, started_at) "
                                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ") +
                               kSqlNow + ")",
                           "storing a run")),
          step(db.prepare("INSERT INTO steps (run_id, step, token, text, logprob, reference_token, reference_logprob, "
                          "kl, top1, match, kv_bytes, kv_slots, step_seconds, policy_seconds) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                          "storing a step")),
          decisions(db.prepare("INSERT INTO decisions (run_id, step, n_heads, size, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                               "storing a step's decisions")),
          end(db.prepare(std::string("UPDATE runs SET method = ?2, status = ?3, error = ?4, ended_at = ") + kSqlNow +
                             ", has_reference = ?5, n_steps = ?6, token_match = ?7, first_divergence = ?8, "
                             "mean_kl = ?9, max_kl = ?10, top1 = ?11, ppl_method = ?12, ppl_reference = ?13, "
                             "kv_bytes = ?14, peak_kv_bytes = ?15, reference_kv_bytes = ?16, final_context = ?17, "
                             "prefill_seconds = ?18, decode_seconds = ?19, policy_seconds = ?20 WHERE id = ?1",
                         "storing the end of a run")) {}
};

SessionWriter::SessionWriter(const std::string& path)
    : path_(path), db_(open_session_db(path, SessionAccess::write)), statements_(std::make_unique<Statements>(*db_)),
      thread_([this] { loop(); }) {}

SessionWriter::~SessionWriter() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
}

int64_t SessionWriter::begin_run(const RunRecord& run, TokenText token_text) {
    BeginRun item{run, {}, 0};
    std::future<int64_t> stored = item.stored.get_future();
    enqueue(std::move(item), true);
    run_id_ = stored.get();
    token_text_ = std::move(token_text);
    pending_step_ = -1;
    pending_.clear();
    return run_id_;
}

void SessionWriter::end_run(const RunSummary& summary) {
    EndRun item{run_id_, summary, {}};
    std::future<void> stored = item.stored.get_future();
    enqueue(std::move(item), true);
    run_id_ = 0;
    stored.get();
}

void SessionWriter::on_decisions(int64_t step, const std::vector<Decision>& decisions) {
    pending_step_ = step;
    pending_ = decisions;
}

void SessionWriter::on_step(const StepEvent& event) {
    assert(run_id_ != 0 && "begin_run() before the run");
    Step item{run_id_, event, token_text_(event.token), {}};
    if (pending_step_ == event.step) item.decisions = std::move(pending_);
    pending_step_ = -1;
    pending_.clear();
    enqueue(std::move(item), false);
}

void SessionWriter::enqueue(Item item, bool urgent) {
    bool wake = urgent;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back(std::move(item));
        urgent_ = urgent_ || urgent;
        wake = wake || queue_.size() == 1; // the writer sleeps until there is something
    }
    if (wake) wake_.notify_one();
}

void SessionWriter::loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    std::chrono::steady_clock::time_point last_commit;
    while (!stopping_ || !queue_.empty()) {
        wake_.wait(lock, [&] { return !queue_.empty() || stopping_; });
        // Gather work into one transaction until a commit interval after the last one
        // began, unless someone waits for it.
        wake_.wait_until(lock, last_commit + kCommitInterval, [&] { return urgent_ || stopping_; });
        std::vector<Item> batch;
        batch.swap(queue_);
        urgent_ = false;
        lock.unlock();
        last_commit = std::chrono::steady_clock::now();
        write(batch);
        lock.lock();
    }
}

void SessionWriter::write(std::vector<Item>& batch) {
    if (batch.empty()) return;
    if (!failure_) {
        try {
            sql::Transaction transaction(*db_, "storing runs");
            for (Item& item : batch) write_item(item);
            transaction.commit();
        } catch (...) {
            failure_ = std::current_exception(); // rolled back: the earlier commits stay
        }
    }
    settle(batch, failure_);
}

void SessionWriter::write_item(Item& item) {
    if (auto* begin = std::get_if<BeginRun>(&item)) {
        const RunRecord& r = begin->run;
        statements_->begin.bind_text(1, r.model_path)
            .bind_text(2, r.model_hash)
            .bind_text(3, r.method)
            .bind_text(4, r.budget)
            .bind_text(5, r.prompt_text)
            .bind_blob(6, pack_tokens(r.prompt_tokens))
            .bind_int(7, int64_t(r.seed))
            .bind_text(8, r.device)
            .bind_text(9, r.dtype)
            .bind_text(10, kvscope_build_version())
            .execute();
        begin->id = db_->last_insert_id();
    } else if (auto* step = std::get_if<Step>(&item)) {
        const StepEvent& e = step->event;
        sql::Statement& q = statements_->step;
        q.bind_int(1, step->run_id).bind_int(2, e.step).bind_int(3, e.token).bind_blob(4, step->text);
        q.bind_real(5, e.logprob);
        if (e.reference_token >= 0) // otherwise 6-10 stay NULL
            q.bind_int(6, e.reference_token)
                .bind_real(7, e.reference_logprob)
                .bind_real(8, e.kl)
                .bind_int(9, e.top1)
                .bind_int(10, e.token == e.reference_token);
        q.bind_int(11, e.kv_bytes).bind_int(12, e.kv_slots).bind_real(13, e.step_seconds).bind_real(14, e.policy_seconds);
        q.execute();
        if (step->decisions.empty()) return;
        const DecisionBlob blob = encode_decisions(step->decisions);
        statements_->decisions.bind_int(1, step->run_id)
            .bind_int(2, e.step)
            .bind_int(3, int64_t(step->decisions.size()))
            .bind_int(4, blob.size)
            .bind_blob(5, blob.data)
            .execute();
    } else {
        auto& end = std::get<EndRun>(item);
        const RunSummary& s = end.summary;
        const bool ref = s.has_reference;
        sql::Statement& q = statements_->end;
        q.bind_int(1, end.run_id).bind_text(2, s.method).bind_text(3, s.status == "ok" ? "ok" : "failed");
        if (!s.error.empty()) q.bind_text(4, s.error);
        q.bind_int(5, ref).bind_int(6, s.n_steps);
        bind_measured(q, 7, ref && s.token_match >= 0, s.token_match);
        if (ref && s.first_divergence >= 0) q.bind_int(8, s.first_divergence);
        bind_measured(q, 9, ref, s.mean_kl);
        bind_measured(q, 10, ref, s.max_kl);
        bind_measured(q, 11, ref, s.top1);
        bind_measured(q, 12, ref, s.ppl_method);
        bind_measured(q, 13, ref, s.ppl_reference);
        q.bind_int(14, s.kv_bytes).bind_int(15, s.peak_kv_bytes);
        if (ref) q.bind_int(16, s.reference_kv_bytes);
        q.bind_int(17, s.final_context)
            .bind_real(18, s.prefill_seconds)
            .bind_real(19, s.decode_seconds)
            .bind_real(20, s.policy_seconds)
            .execute();
    }
}

void SessionWriter::settle(std::vector<Item>& batch, std::exception_ptr failure) {
    for (Item& item : batch) {
        if (auto* begin = std::get_if<BeginRun>(&item)) {
            if (failure) begin->stored.set_exception(failure);
            else begin->stored.set_value(begin->id);
        } else if (auto* end = std::get_if<EndRun>(&item)) {
            if (failure) end->stored.set_exception(failure);
            else end->stored.set_value();
        }
    }
}

} // namespace kvscope
