// The sessions database through the real `kvscope` binary, on a tiny generated model
// (tests/reference/make_method_model.py).
//
// Crash safety (issue 6, item 2): runs that all write into one database are killed with
// SIGKILL at random moments, a third spread over start-up, opening the database and the
// reference run, two thirds over the method's steps and the end, where there is most to
// lose. After every kill the database must open without repair, pass PRAGMA
// integrity_check, hold every earlier run as it was, mark the killed run 'unfinished' (or
// 'ok' if it got to the end), hold its steps from 0 without a gap, well-formed, and hold
// every token the run had printed half a second before the kill (the commit interval,
// 250 ms, plus slack for the commit itself).
//
// Then the `sessions` command, `compare`'s comparison, a sharded `sweep` killed and resumed
// then merged, a disk that fills up mid-run and a --db that is not a database.
#include "core/error.h"
#include "core/policy.h"
#include "sessions/queries.h"
#include "sessions/schema.h"
#include "sessions/sweeps.h"
#include "sweep_runs.h"
#include "test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

extern char** environ;

namespace kvscope {
namespace {

using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

constexpr int kKills = 24, kEarlyKills = 8; // the early ones before the method's steps
constexpr double kMaxLoss = 0.5; // seconds of printed tokens a kill may lose: the 250 ms interval + slack

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

int64_t file_size(const std::string& path) {
    struct stat st {};
    return stat(path.c_str(), &st) == 0 ? int64_t(st.st_size) : 0;
}

// kvscope with `args`, stdout and stderr into files; returns its pid.
pid_t spawn_kvscope(const std::vector<std::string>& args, const std::string& out, const std::string& err) {
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&files, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&files, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> argv_text{KVSCOPE_EXE};
    argv_text.insert(argv_text.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : argv_text) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, KVSCOPE_EXE, &files, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&files);
    return rc == 0 ? pid : -1;
}

// The exit status, or 128 + the signal that ended it.
int wait_for(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct Outcome {
    int status;
    std::string out, err;
};

class SessionsKill : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = test::scratch_dir("sessions_kill");
        const std::string command = test::python() + " " KVSCOPE_SOURCE_DIR "/tests/reference/make_method_model.py " +
                                    dir_ + " > " + dir_ + "/make_model.log 2>&1";
        made_ = test::run(command) == 0;
    }
    void SetUp() override { ASSERT_TRUE(made_) << "make_method_model.py failed: " << read_text(dir_ + "/make_model.log"); }

    static std::string path(const std::string& name) { return dir_ + "/" + name; }

    // The greedy reference of this prompt runs 330 steps before its end-of-text token: on
    // one thread, about a second of the method's steps after a second of start-up.
    static std::vector<std::string> run_args(const std::string& db, const std::string& n_predict = "480") {
        return {"run", "-m", path("method-model-4l.gguf"), "-p", "the", "-n", n_predict, "--method", "h2o", "--budget",
                "32", "--reference", "--threads", "1", "--db", db};
    }

    static Outcome kvscope(const std::vector<std::string>& args, const std::string& tag) {
        const pid_t pid = spawn_kvscope(args, path(tag + ".out"), path(tag + ".err"));
        const int status = pid > 0 ? wait_for(pid) : -1;
        return {status, read_text(path(tag + ".out")), read_text(path(tag + ".err"))};
    }

    static std::string dir_;
    static bool made_;
};

std::string SessionsKill::dir_;
bool SessionsKill::made_ = false;

// Checks one run's rows; returns the bytes of its tokens' text.
int64_t check_run(sql::Connection& db, const StoredRun& run) {
    SCOPED_TRACE("run " + std::to_string(run.id));
    EXPECT_TRUE(run.status == "ok" || run.status == "unfinished") << run.status << ": " << run.error;
    EXPECT_EQ(run.ended_at.empty(), run.status == "unfinished");
    EXPECT_EQ(run.record.model_hash.rfind("sha256:", 0), 0u);
    const std::vector<StoredStep> steps = load_steps(db, run.id);
    if (run.summary) {
        EXPECT_EQ(run.summary->n_steps, int64_t(steps.size()));
    }
    int64_t text_bytes = 0;
    for (size_t k = 0; k < steps.size(); ++k) {
        const StepEvent& e = steps[k].event;
        EXPECT_EQ(e.step, int64_t(k)) << "steps must run from 0 without a gap";
        EXPECT_GE(e.token, 0);
        EXPECT_GE(e.reference_token, 0);
        EXPECT_GE(e.kl, 0);
        EXPECT_GT(e.kv_bytes, 0);
        EXPECT_GT(e.kv_slots, 0);
        EXPECT_GE(e.step_seconds, 0);
        EXPECT_FALSE(steps[k].text.empty());
        text_bytes += int64_t(steps[k].text.size());
    }
    for (int64_t step : steps_with_decisions(db, run.id)) {
        EXPECT_LT(step, int64_t(steps.size()));
        for (const Decision& d : load_decisions(db, run.id, step)) { // decodes, or throws
            EXPECT_LT(d.layer, 4);
            EXPECT_LT(d.head, 2);
            EXPECT_FALSE(d.evicted.empty());
        }
    }
    return text_bytes;
}

struct Sample {
    double at;       // seconds since the start
    int64_t printed; // bytes of stdout so far: the run's tokens
    bool stepping;   // stderr has the reference's line: the method's steps have begun
};

// Runs kvscope until it exits or `kill_at` seconds have passed since its start (or, with
// `after_steps_begin`, since its steps began), then SIGKILLs it; samples its output every
// 5 ms on the way.
std::vector<Sample> run_until(const std::vector<std::string>& args, const std::string& out, const std::string& err,
                              double kill_at, bool after_steps_begin = false) {
    const auto start = Clock::now();
    const pid_t pid = spawn_kvscope(args, out, err);
    std::vector<Sample> samples;
    if (pid <= 0) return samples;
    double origin = after_steps_begin ? 1e9 : 0;
    for (;;) {
        const double now = Seconds(Clock::now() - start).count();
        samples.push_back({now, file_size(out), read_text(err).find("reference:") != std::string::npos});
        if (samples.back().stepping) origin = std::min(origin, now);
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) return samples;
        if (now - origin >= kill_at) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    kill(pid, SIGKILL);
    wait_for(pid);
    samples.push_back({Seconds(Clock::now() - start).count(), file_size(out), samples.back().stepping});
    return samples;
}

TEST_F(SessionsKill, KilledRunsLeaveAWholeDatabase) {
    const std::string db_path = path("sessions.db");
    // One run to the end: what a whole run stores, and when its steps begin and end.
    const std::vector<Sample> whole = run_until(run_args(db_path), path("whole.out"), path("whole.err"), 600);
    auto first_step = std::find_if(whole.begin(), whole.end(), [](const Sample& s) { return s.stepping; });
    ASSERT_NE(first_step, whole.end()) << read_text(path("whole.err"));
    const double steps_begin = first_step->at, lifetime = whole.back().at;
    std::vector<StoredRun> before = list_runs(*open_session_db(db_path, SessionAccess::read));
    ASSERT_EQ(before.size(), 1u);
    ASSERT_EQ(before[0].status, "ok") << read_text(path("whole.err"));
    EXPECT_GT(before[0].stored_steps, 100);

    std::mt19937 rng(std::random_device{}());
    std::uniform_real_distribution<double> uniform(0, 1);
    int unfinished = 0, with_steps = 0, with_must_keep = 0;
    std::ostringstream log;
    for (int i = 0; i < kKills; ++i) {
        // Stratified: each kill lands at a random moment of its own slice of the phase. A
        // run's start-up time varies more than its steps' time, so the late kills count
        // from the moment this run's steps begin.
        const bool late = i >= kEarlyKills;
        const double kill_at = late ? (lifetime - steps_begin) * 1.1 * (i - kEarlyKills + uniform(rng)) /
                                          (kKills - kEarlyKills)
                                    : steps_begin * (i + uniform(rng)) / kEarlyKills;
        const std::string tag = "kill" + std::to_string(i);
        const std::vector<Sample> samples =
            run_until(run_args(db_path), path(tag + ".out"), path(tag + ".err"), kill_at, late);
        ASSERT_FALSE(samples.empty()) << "could not start " KVSCOPE_EXE;
        // What the run had printed kMaxLoss seconds before it was killed must be stored.
        int64_t must_keep = 0;
        for (const Sample& s : samples)
            if (samples.back().at - s.at >= kMaxLoss) must_keep = s.printed;

        const std::string when = std::to_string(kill_at) + (late ? " s into the steps" : " s");
        SCOPED_TRACE(tag + " at " + when);
        auto db = open_session_db(db_path, SessionAccess::write); // as the next run does
        sql::Statement q = db->prepare("PRAGMA integrity_check", "checking");
        ASSERT_TRUE(q.step());
        ASSERT_EQ(q.text(0), "ok");
        const std::vector<StoredRun> runs = list_runs(*db);
        ASSERT_TRUE(runs.size() == before.size() || runs.size() == before.size() + 1) << runs.size() << " runs";
        for (size_t j = 0; j < before.size(); ++j) { // every earlier run as it was
            EXPECT_EQ(runs[j].id, before[j].id);
            EXPECT_EQ(runs[j].status, before[j].status);
            EXPECT_EQ(runs[j].stored_steps, before[j].stored_steps);
        }
        int64_t killed_text = 0; // the killed run's, when it got as far as its row
        for (const StoredRun& run : runs) killed_text = check_run(*db, run);
        const bool has_row = runs.size() > before.size();
        EXPECT_GE(has_row ? killed_text : 0, must_keep) << "tokens printed " << kMaxLoss << " s before the kill are lost";
        if (has_row && runs.back().status == "unfinished") {
            ++unfinished;
            with_steps += runs.back().stored_steps > 0;
        }
        with_must_keep += must_keep > 0;
        log << tag << " at " << when << ": " << (has_row ? runs.back().status : "no row yet") << ", "
            << (has_row ? runs.back().stored_steps : 0) << " steps stored, " << must_keep << " bytes had to be\n";
        before = runs;
        if (HasFatalFailure()) return;
    }
    std::printf("%sa whole run: %lld steps from %.2f s to %.2f s; %d of %d kills left an unfinished run, %d with "
                "steps; %d had printed tokens %.1f s before the kill\n",
                log.str().c_str(), (long long)list_runs(*open_session_db(db_path, SessionAccess::read))[0].stored_steps,
                steps_begin, lifetime, unfinished, kKills, with_steps, with_must_keep, kMaxLoss);
    // Kills in a run's first commit interval of steps find no steps stored, by design; at
    // least one later kill must find some, or the steps only reached the disk at the end.
    EXPECT_GE(with_steps, 1) << "no kill among the steps found any step stored";
}

// ---- the sessions command ---------------------------------------------------------------

TEST_F(SessionsKill, SessionsListShowAndDelete) {
    const std::string db = path("cli.db");
    ASSERT_EQ(kvscope(run_args(db, "40"), "cli-run1").status, 0);
    ASSERT_EQ(kvscope(run_args(db, "40"), "cli-run2").status, 0);
    Outcome list = kvscope({"sessions", "list", "--db", db}, "list");
    ASSERT_EQ(list.status, 0) << list.err;
    EXPECT_NE(list.out.find("h2o(recent=0.5)"), std::string::npos) << list.out;
    EXPECT_NE(list.out.find("method-model-4l.gguf"), std::string::npos) << list.out;

    const Outcome show = kvscope({"sessions", "show", "2", "--steps", "--db", db}, "show");
    ASSERT_EQ(show.status, 0) << show.err;
    for (const char* word : {"run 2 (ok)", "sha256:", "decisions at", "token match", "policy ms"})
        EXPECT_NE(show.out.find(word), std::string::npos) << word << " in\n" << show.out;

    const Outcome removed = kvscope({"sessions", "delete", "1", "--db", db}, "delete");
    ASSERT_EQ(removed.status, 0) << removed.err;
    list = kvscope({"sessions", "list", "--db", db}, "list-after");
    EXPECT_EQ(list.out.find("\n    1  "), std::string::npos) << list.out;
    EXPECT_NE(list.out.find("\n    2  "), std::string::npos) << list.out;

    const Outcome missing = kvscope({"sessions", "delete", "2", "7", "--db", db}, "delete-missing");
    EXPECT_EQ(missing.status, 1);
    EXPECT_EQ(missing.err, "kvscope: error: " + db + ": run 7: no such run\n");
    EXPECT_EQ(kvscope({"sessions", "show", "2", "--db", db}, "still-there").status, 0) << "all or nothing";
}

// `compare` stores each of its runs, and the set of them as a named comparison.
TEST_F(SessionsKill, CompareStoresItsRunsAsAComparison) {
    const std::string db = path("compare.db"), text = path("essay.txt");
    std::ofstream essay(text);
    for (int i = 0; i < 40; ++i) essay << "the world is in the hello and the cat is there. ";
    essay.close();
    const Outcome o = kvscope({"compare", "-m", path("method-model-4l.gguf"), "--task", text, "--length", "40", "--steps",
                               "8", "--methods", "h2o,tova", "--budgets", "16,24", "--db", db},
                              "compare");
    ASSERT_EQ(o.status, 0) << o.err;
    auto sessions = open_session_db(db, SessionAccess::read);
    const std::vector<StoredRun> runs = list_runs(*sessions);
    ASSERT_EQ(runs.size(), 4u);
    for (const StoredRun& run : runs) {
        EXPECT_EQ(run.status, "ok");
        EXPECT_EQ(run.stored_steps, 8);
        EXPECT_EQ(run.record.prompt_tokens.size(), 40u);
    }
    sql::Statement q = sessions->prepare("SELECT name FROM comparisons", "test");
    ASSERT_TRUE(q.step());
    EXPECT_EQ(comparison_runs(*sessions, q.text(0)), (std::vector<int64_t>{1, 2, 3, 4}));
}

// ---- sweeps ------------------------------------------------------------------------------

// A 2-shard sweep (h2o and tova at two budgets and the full cache, two seeds: 10 cells),
// one shard killed with SIGKILL once it has finished a cell, then run again: it skips the
// cells it has and redoes the one it was in. The shards merge into one database that
// equals the whole grid run in one process (the same tokens and decisions per cell), a
// second merge adds nothing, and `compare --sweep` prints its table.
TEST_F(SessionsKill, ShardedSweepResumesAfterAKillAndMergesIntoTheWholeGrid) {
    const std::string text = path("sweep-essay.txt");
    std::ofstream essay(text);
    for (int i = 0; i < 100; ++i) essay << "the world is in the hello and the cat is there. ";
    essay.close();
    // 400 steps make a run long enough (~0.1 s) that the kill lands before the last cell.
    const auto sweep = [&](const std::string& shard, const std::string& db) {
        return std::vector<std::string>{"sweep", "-m", path("method-model-4l.gguf"), "--tasks", text, "--seeds", "0,1",
                                        "--methods", "full,h2o,tova", "--budgets", "16,24", "--length", "40", "--steps",
                                        "400", "--threads", "1", "--name", "grid", "--shard", shard, "--db", db};
    };
    const std::string a = path("sweep-a.db"), b = path("sweep-b.db"), whole = path("sweep-whole.db");
    const std::string merged = path("sweep-merged.db");
    for (const std::string& db : {a, b, whole, merged}) std::remove(db.c_str());

    const Outcome first = kvscope(sweep("0/2", a), "sweep-a");
    ASSERT_EQ(first.status, 0) << first.err;
    EXPECT_NE(first.out.find("grid, shard 0/2: 5 of its 5 cells to run (0 done before)"), std::string::npos) << first.out;

    // Shard 1, killed once a cell of it is done.
    const pid_t pid = spawn_kvscope(sweep("1/2", b), path("sweep-b-killed.out"), path("sweep-b-killed.err"));
    ASSERT_GT(pid, 0);
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    size_t done_before_kill = 0;
    while (done_before_kill == 0 && Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        try {
            done_before_kill = done_cells(*open_session_db(b, SessionAccess::read), "grid").size();
        } catch (const Error&) { // not created yet
        }
    }
    kill(pid, SIGKILL);
    EXPECT_EQ(wait_for(pid), 128 + SIGKILL) << "the shard ended before it could be killed";
    ASSERT_GE(done_before_kill, 1u);
    const size_t done_at_kill = done_cells(*open_session_db(b, SessionAccess::read), "grid").size();
    ASSERT_LT(done_at_kill, 5u) << "the shard finished before the kill";

    const Outcome resumed = kvscope(sweep("1/2", b), "sweep-b");
    ASSERT_EQ(resumed.status, 0) << resumed.err;
    const std::string skipped = std::to_string(5 - done_at_kill) + " of its 5 cells to run (" +
                                std::to_string(done_at_kill) + " done before)";
    EXPECT_NE(resumed.out.find(skipped), std::string::npos) << resumed.out;
    EXPECT_EQ(test::cell_runs(b, "grid").size(), 5u);

    ASSERT_EQ(kvscope(sweep("0/1", whole), "sweep-whole").status, 0);
    const Outcome merge = kvscope({"sessions", "merge", "--db", merged, a, b}, "sweep-merge");
    ASSERT_EQ(merge.status, 0) << merge.err;
    EXPECT_NE(merge.out.find("sweep grid: 10 of 10 cells done"), std::string::npos) << merge.out;
    test::expect_same_cells(whole, merged, 10, 400);

    const Outcome again = kvscope({"sessions", "merge", "--db", merged, a, b}, "sweep-merge-again");
    EXPECT_NE(again.out.find("copied 0 runs, 5 there already"), std::string::npos) << again.out;
    EXPECT_EQ(test::cell_runs(merged, "grid").size(), 10u);

    const Outcome table = kvscope({"compare", "--sweep", "grid", "--db", merged}, "sweep-compare");
    ASSERT_EQ(table.status, 0) << table.err;
    EXPECT_NE(table.out.find("10 runs from " + merged), std::string::npos) << table.out;
    for (const char* row : {"\nfull ", "\nh2o(recent=0.5) ", "\ntova(every=1) "})
        EXPECT_NE(table.out.find(row), std::string::npos) << row << " in\n" << table.out;
}

// The disk fills up in the middle of a run: a file-size limit (RLIMIT_FSIZE, with SIGXFSZ
// ignored, so writes past it fail with EFBIG as they would with ENOSPC) lets no file grow
// past the database's size + 16 KiB: the write-ahead log, which a run fills, soon hits it.
// The run goes on to its end, the command fails in one line naming the
// file and the reason, and the database keeps the earlier run and the steps committed
// before the limit.
TEST_F(SessionsKill, DiskFullingUpMidRunFailsTheCommandButKeepsTheDatabase) {
    const std::string db = path("full.db");
    ASSERT_EQ(kvscope(run_args(db, "4"), "full-first").status, 0);
    std::string command = "trap '' XFSZ; ulimit -f " + std::to_string(file_size(db) / 1024 + 16) + "; exec " KVSCOPE_EXE;
    for (const std::string& a : run_args(db)) command += " '" + a + "'";
    const int status = test::run("bash -c \"" + command + "\" > " + path("full.out") + " 2> " + path("full.err"));
    const std::string err = read_text(path("full.err"));
    EXPECT_EQ(status, 1) << err;
    const size_t line = err.find("kvscope: error: " + db + ": ");
    ASSERT_NE(line, std::string::npos) << err;
    EXPECT_NE(err.find("could not be written, the disk may be full", line), std::string::npos) << err;
    EXPECT_EQ(err.find('\n', line), err.size() - 1) << "the error is the last line, and one line: " << err;
    EXPECT_GT(file_size(path("full.out")), 100) << "the run stopped instead of going on";

    auto sessions = open_session_db(db, SessionAccess::write);
    sql::Statement q = sessions->prepare("PRAGMA integrity_check", "checking");
    ASSERT_TRUE(q.step());
    EXPECT_EQ(q.text(0), "ok");
    const std::vector<StoredRun> runs = list_runs(*sessions);
    ASSERT_EQ(runs.size(), 2u);
    EXPECT_EQ(runs[0].status, "ok");
    EXPECT_EQ(runs[0].stored_steps, 4);
    EXPECT_EQ(runs[1].status, "unfinished");
    EXPECT_GT(runs[1].stored_steps, 0);
    check_run(*sessions, runs[1]);
}

// A --db that cannot serve fails before the model loads, in one line naming the file.
TEST_F(SessionsKill, BadDatabaseFailsTheRunBeforeItStarts) {
    const std::string notes = path("notes.txt");
    std::ofstream(notes) << "not a database\n" << std::string(4096, 'x');
    const Outcome o = kvscope(run_args(notes), "bad-db");
    EXPECT_EQ(o.status, 1);
    EXPECT_EQ(o.out, "");
    EXPECT_EQ(o.err.rfind("kvscope: error: " + notes + ": ", 0), 0u) << o.err;
    EXPECT_NE(o.err.find("is not a SQLite database"), std::string::npos) << o.err;
    EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
}

} // namespace
} // namespace kvscope
