#include "sessions/writer.h"

#include "core/error.h"
#include "sessions/build_version.h"
#include "sessions/run_rows.h"
#include "sessions/schema.h"
#include "sessions/sqlite.h"

#include <cassert>

namespace kvscope {

struct SessionWriter::Statements {
    sql::Statement begin, step, decisions, attention, thin_attention, end;

    explicit Statements(sql::Connection& db)
        : begin(db.prepare(std::string("INSERT INTO runs (") + rows::kRecordColumns + ", build_version, started_at) " +
                               "VALUES (" + rows::placeholders(1, rows::kRecordColumnCount + 1) + ", " + kSqlNow + ")",
                           "storing a run")),
          step(rows::prepare_step(db)), decisions(rows::prepare_decisions(db)),
          attention(rows::prepare_attention(db)), thin_attention(rows::prepare_thin_attention(db)),
          end(db.prepare(std::string("UPDATE runs SET method = ?2, status = ?3, error = ?4, ended_at = ") + kSqlNow +
                             ", (" + rows::kSummaryColumns + ") = (" + rows::placeholders(5, rows::kSummaryColumnCount) +
                             ") WHERE id = ?1",
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
    if (item.run.uuid.empty()) item.run.uuid = rows::new_run_uuid();
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

void SessionWriter::on_attention_rows(AttentionStep rows) {
    assert(run_id_ != 0 && "begin_run() before the run");
    enqueue(Attention{run_id_, std::move(rows)}, false);
}

void SessionWriter::thin_attention(int64_t stride) {
    assert(run_id_ != 0 && "begin_run() before the run");
    enqueue(ThinAttention{run_id_, stride}, false);
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
        rows::bind_record(statements_->begin, 1, begin->run);
        statements_->begin.bind_text(rows::kRecordColumnCount + 1, kvscope_build_version()).execute();
        begin->id = db_->last_insert_id();
    } else if (auto* step = std::get_if<Step>(&item)) {
        rows::insert_step(statements_->step, step->run_id, step->event, step->text);
        if (!step->decisions.empty())
            rows::insert_decisions(statements_->decisions, step->run_id, step->event.step, step->decisions);
    } else if (auto* attention = std::get_if<Attention>(&item)) {
        rows::insert_attention(statements_->attention, attention->run_id, attention->rows);
    } else if (auto* thin = std::get_if<ThinAttention>(&item)) {
        statements_->thin_attention.bind_int(1, thin->run_id).bind_int(2, thin->stride).execute();
    } else {
        auto& end = std::get<EndRun>(item);
        const RunSummary& s = end.summary;
        sql::Statement& q = statements_->end;
        q.bind_int(1, end.run_id).bind_text(2, s.method).bind_text(3, s.status == "ok" ? "ok" : "failed");
        if (!s.error.empty()) q.bind_text(4, s.error);
        rows::bind_summary(q, 5, s);
        q.execute();
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
