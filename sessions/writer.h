// SessionWriter: records runs into a sessions database while the engine runs them.
//
// The engine's thread only enqueues (a step's event and decisions, a viewer's attention
// rows); one writer thread owns the connection and commits everything queued in one
// transaction, kCommitInterval (250 ms) after the previous commit began, or as soon as the
// previous one ends when that took longer. So a process killed at any moment loses at
// most the steps of the last 250 ms (plus the commit then in flight), and the database
// stays whole: each WAL commit is atomic. Commits are not fsynced (synchronous=NORMAL,
// sessions/schema.cpp): a killed process loses nothing committed; a power cut may lose the
// last commits, never the database.
//
// A run's row is stored when it begins, as 'unfinished', and becomes 'ok' or 'failed' when
// it ends: a run whose process died stays 'unfinished'. When a write fails (a full disk),
// the writer stops writing, the engine runs on, and end_run() throws the Error; what was
// committed before stays.
#pragma once

#include "sessions/records.h"

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <variant>
#include <vector>

namespace kvscope {

namespace sql {
class Connection;
}

class SessionWriter : public RunObserver {
public:
    static constexpr std::chrono::milliseconds kCommitInterval{250};
    using TokenText = std::function<std::string(int32_t)>; // a token's bytes

    // Opens (creates, upgrades) the database on the caller's thread, so a bad file fails
    // before any work is done (see open_session_db), and starts the writer thread.
    explicit SessionWriter(const std::string& path);
    ~SessionWriter() override; // writes what is queued, stops the thread; never throws
    SessionWriter(const SessionWriter&) = delete;
    SessionWriter& operator=(const SessionWriter&) = delete;

    const std::string& path() const { return path_; }

    // Stores the run's row ('unfinished') and returns its id, once committed. `token_text`
    // names the steps' tokens; it is called on the engine's thread.
    int64_t begin_run(const RunRecord& run, TokenText token_text);
    // Stores the end of the current run ('ok' or 'failed', with the summary) and waits for
    // the commit. Throws the Error of any write of the run that failed.
    void end_run(const RunSummary& summary);

    // RunObserver, on the engine's thread: enqueue only.
    void on_step(const StepEvent& event) override;
    void on_decisions(int64_t step, const std::vector<Decision>& decisions) override;

    // The attention rows a viewer recorded at a decode step (the GUI bins the engine's
    // attention itself), and the thinning of its record: the stored rows of the steps that
    // are not multiples of `stride` are dropped, so the database holds what the viewer
    // keeps. On the engine's thread, enqueue only.
    void on_attention_rows(AttentionStep rows);
    void thin_attention(int64_t stride);

private:
    struct BeginRun {
        RunRecord run;
        std::promise<int64_t> stored;
        int64_t id = 0;
    };
    struct Step {
        int64_t run_id;
        StepEvent event;
        std::string text;
        std::vector<Decision> decisions; // empty when the method evicted nothing
    };
    struct EndRun {
        int64_t run_id;
        RunSummary summary;
        std::promise<void> stored;
    };
    struct Attention {
        int64_t run_id;
        AttentionStep rows;
    };
    struct ThinAttention {
        int64_t run_id, stride;
    };
    using Item = std::variant<BeginRun, Step, EndRun, Attention, ThinAttention>;
    struct Statements;

    void enqueue(Item item, bool urgent);
    void loop();
    void write(std::vector<Item>& batch);
    void write_item(Item& item);
    void settle(std::vector<Item>& batch, std::exception_ptr failure);

    std::string path_;
    std::unique_ptr<sql::Connection> db_;
    std::unique_ptr<Statements> statements_;

    // The engine's side (its thread only).
    int64_t run_id_ = 0;
    TokenText token_text_;
    int64_t pending_step_ = -1;            // the engine reports a step's decisions before
    std::vector<Decision> pending_;        // the step: they travel together, in one commit

    // Shared with the writer thread.
    std::mutex mutex_;
    std::condition_variable wake_;
    std::vector<Item> queue_;
    bool urgent_ = false;   // someone waits for the next commit
    bool stopping_ = false;

    // The writer thread's.
    std::exception_ptr failure_; // the first write that failed; nothing is written after it
    std::thread thread_;
};

} // namespace kvscope
