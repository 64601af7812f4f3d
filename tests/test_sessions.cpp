// The sessions library (sessions/): the schema and its migrations, the decision blobs, the
// writer's round trip and commit interval, model hashes, and the bad inputs of issue 6:
// a file that is not SQLite, another program's database, a newer schema, a read-only
// file and a full disk each give an Error naming the file, and lose nothing stored.
#include "core/error.h"
#include "core/head_roles.h"
#include "core/policy.h"
#include "sessions/attention_blob.h"
#include "sessions/decision_blob.h"
#include "sessions/model_hash.h"
#include "sessions/merge.h"
#include "sessions/queries.h"
#include "sessions/schema.h"
#include "sessions/sweeps.h"
#include "sessions/writer.h"
#include "session_samples.h"
#include "test_util.h"

#include <sqlite3.h>
#include <zlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <thread>

namespace kvscope {
namespace {

using Clock = std::chrono::steady_clock;
using test::expect_error;

std::string scratch(const std::string& name) { return test::scratch_dir("sessions/" + name); }

RunRecord sample_record() {
    RunRecord r;
    r.model_path = "/models/tiny.gguf";
    r.model_hash = "sha256:00";
    r.method = "h2o";
    r.budget = "32";
    r.prompt_text = "it's \"quoted\"; DROP TABLE runs; --\n\xc3\xa9"; // bound, never SQL
    r.prompt_tokens = {1, -2, 70000, 3};
    r.seed = ~uint64_t(0) - 1;
    r.device = "cpu";
    r.dtype = "f32";
    return r;
}

StepEvent sample_step(int64_t k, bool reference) {
    StepEvent e;
    e.step = k;
    e.token = int32_t(100 + k);
    e.reference_token = reference ? int32_t(100 + k + (k % 3 == 0)) : -1;
    e.logprob = -0.5 - double(k);
    e.reference_logprob = reference ? -0.25 : 0;
    e.kl = reference ? 0.01 * double(k) : 0;
    e.top1 = !reference || k % 2 == 0;
    e.kv_bytes = 4096 * (k + 1);
    e.reference_kv_bytes = reference ? 8192 * (k + 1) : -1;
    e.kv_slots = 8 * (k + 1);
    e.step_seconds = 0.002;
    e.policy_seconds = 0.0005;
    return e;
}

// Random decisions over 4 layers x 2 heads at context `n`: each head keeps a sorted subset.
std::vector<Decision> sample_decisions(int64_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<Decision> out;
    for (int64_t layer = 0; layer < 4; ++layer)
        for (int64_t head = 0; head < 2; ++head) {
            Decision d{layer, head, {}, {}};
            for (int32_t p = 0; p < n; ++p) (rng() % 3 ? d.kept : d.evicted).push_back(p);
            out.push_back(d);
        }
    return out;
}

// A decode step's attention over 2 layers x 3 query heads in 5 columns of 4 positions,
// with floats whose bits a careless round trip would change (a subnormal, -0, the largest).
AttentionStep sample_attention(int64_t step) {
    AttentionStep a{step, 2, 3, 5, 4, {}};
    std::mt19937 rng{uint32_t(step)};
    std::uniform_real_distribution<float> share(0, 1);
    for (int i = 0; i < 2 * 3 * 5; ++i) a.mass.push_back(share(rng));
    a.mass[0] = std::numeric_limits<float>::denorm_min();
    a.mass[1] = -0.0f;
    a.mass[2] = std::numeric_limits<float>::max();
    return a;
}

std::vector<uint32_t> float_bits(const std::vector<float>& values) {
    std::vector<uint32_t> bits(values.size());
    std::memcpy(bits.data(), values.data(), values.size() * 4);
    return bits;
}

void expect_same_attention(const AttentionStep& got, const AttentionStep& want) {
    EXPECT_EQ(got.step, want.step);
    EXPECT_EQ(got.n_layer, want.n_layer);
    EXPECT_EQ(got.n_head, want.n_head);
    EXPECT_EQ(got.n_keys, want.n_keys);
    EXPECT_EQ(got.key_stride, want.key_stride);
    EXPECT_EQ(float_bits(got.mass), float_bits(want.mass)) << "step " << want.step;
}

using test::sample_summary;

// Writes one run of `n_steps` (decisions at every second step, attention at every decode
// step) as `record`; returns its id. An unfinished run is left without its end, as a
// killed process leaves it.
int64_t store_run(SessionWriter& writer, int64_t n_steps, const RunRecord& record = sample_record(),
                  bool finished = true) {
    const int64_t id = writer.begin_run(record, [](int32_t t) { return "t" + std::to_string(t); });
    for (int64_t k = 0; k < n_steps; ++k) {
        if (k % 2 == 1) writer.on_decisions(k, sample_decisions(16 + k, uint32_t(k)));
        if (k > 0) writer.on_attention_rows(sample_attention(k));
        writer.on_step(sample_step(k, true));
    }
    if (finished) writer.end_run(sample_summary(n_steps));
    return id;
}

std::string pragma_text(sql::Connection& db, const std::string& pragma) {
    sql::Statement q = db.prepare("PRAGMA " + pragma, "test");
    return q.step() ? q.text(0) : "";
}

int64_t count(sql::Connection& db, const std::string& table) {
    sql::Statement q = db.prepare("SELECT count(*) FROM " + table, "test");
    q.step();
    return q.int64(0);
}

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// ---- schema and migrations ------------------------------------------------------------

TEST(SessionSchema, NewDatabaseIsCurrentInWalModeAndMarkedOurs) {
    const std::string path = scratch("new") + "/deeper/folder/sessions.db"; // folders are created
    auto db = open_session_db(path, SessionAccess::write);
    EXPECT_EQ(pragma_text(*db, "user_version"), std::to_string(session_schema_version()));
    EXPECT_EQ(pragma_text(*db, "application_id"), std::to_string(kSessionApplicationId));
    EXPECT_EQ(pragma_text(*db, "journal_mode"), "wal");
    for (const char* table : {"runs", "steps", "decisions", "attention_samples", "head_roles", "comparisons",
                              "comparison_runs"})
        EXPECT_EQ(count(*db, table), 0) << table;
}

TEST(SessionSchema, MigrationsAreNumberedFromOneWithoutGaps) {
    int expected = 1;
    for (const Migration& m : session_migrations()) EXPECT_EQ(m.version, expected++);
}

// A database written by each earlier schema version, holding a run, opens with this build:
// upgraded to the current version, every stored value intact.
TEST(SessionSchema, OpensDatabasesOfEveryEarlierVersion) {
    for (int version = 1; version < session_schema_version(); ++version) {
        SCOPED_TRACE("schema version " + std::to_string(version));
        const std::string path = scratch("v" + std::to_string(version)) + "/old.db";
        {
            sql::Connection old(path, sql::Connection::Access::read_write);
            migrate_session_db(old, version);
            // Version 1's columns, which every later version keeps.
            old.exec("INSERT INTO runs (id, model_path, model_hash, method, budget, prompt_text, prompt_tokens, seed, "
                     "device, dtype, build_version, started_at, ended_at, status) VALUES (7, 'm.gguf', 'sha256:aa', "
                     "'h2o', '32', 'hi', x'0100000002000000', 5, 'cpu', 'f32', '0.0.1', '2024-01-01T00:00:00.000Z', "
                     "'2024-01-01T00:00:01.000Z', 'ok');"
                     "INSERT INTO steps (run_id, step, token, text, logprob, kv_bytes, kv_slots, step_seconds, "
                     "policy_seconds) VALUES (7, 0, 42, x'6869', -1.5, 100, 2, 0.1, 0.01);",
                     "writing an old run");
        }
        auto db = open_session_db(path, SessionAccess::read); // upgrades
        EXPECT_EQ(pragma_text(*db, "user_version"), std::to_string(session_schema_version()));
        EXPECT_EQ(pragma_text(*db, "integrity_check"), "ok");
        const StoredRun run = load_run(*db, 7);
        EXPECT_EQ(run.record.model_path, "m.gguf");
        EXPECT_EQ(run.record.prompt_tokens, (std::vector<int32_t>{1, 2}));
        EXPECT_EQ(run.status, "ok");
        EXPECT_FALSE(run.summary); // written before runs had summaries
        if (version < 3) {
            EXPECT_EQ(run.record.uuid.size(), 32u); // given one by version 3
        }
        const std::vector<StoredStep> steps = load_steps(*db, 7);
        ASSERT_EQ(steps.size(), 1u);
        EXPECT_EQ(steps[0].event.token, 42);
        EXPECT_EQ(steps[0].text, "hi");
        EXPECT_EQ(steps[0].event.reference_token, -1);
        EXPECT_EQ(steps[0].event.reference_kv_bytes, -1); // not stored before version 4
    }
}

// ---- decision blobs -------------------------------------------------------------------

TEST(DecisionBlob, RoundTripsAndCompressesContiguousSets) {
    std::vector<Decision> decisions = sample_decisions(300, 1);
    decisions.push_back(Decision{29, 2, {}, {}});            // empty lists
    decisions.push_back(Decision{3, 1, {0, 1000000}, {5}});  // a far gap
    const DecisionBlob blob = encode_decisions(decisions);
    const std::vector<Decision> back = decode_decisions(blob.data, blob.size, "test");
    ASSERT_EQ(back.size(), decisions.size());
    for (size_t i = 0; i < back.size(); ++i) {
        EXPECT_EQ(back[i].layer, decisions[i].layer);
        EXPECT_EQ(back[i].head, decisions[i].head);
        EXPECT_EQ(back[i].kept, decisions[i].kept);
        EXPECT_EQ(back[i].evicted, decisions[i].evicted);
    }
    // A typical kept set (4 sinks, a recent window of 120 of 4,000 positions) costs a few bytes.
    Decision window{0, 0, {0, 1, 2, 3}, {}};
    for (int32_t p = 3880; p < 4000; ++p) window.kept.push_back(p);
    window.evicted = {2000};
    EXPECT_LT(encode_decisions({window}).data.size(), 30u);
}

TEST(DecisionBlob, DamagedBlobsGiveErrorsNotCrashes) {
    const DecisionBlob good = encode_decisions(sample_decisions(64, 2));
    expect_error([&] { decode_decisions(good.data, good.size + 1, "run 1 step 2"); }, {"run 1 step 2", "decisions"});
    expect_error([&] { decode_decisions(good.data, int64_t(1) << 40, "w"); }, {"implausible size"});
    expect_error([&] { decode_decisions(good.data.substr(0, good.data.size() / 2), good.size, "w"); }, {"zlib"});
    expect_error([&] { decode_decisions("not zlib at all", 10, "w"); }, {"zlib"});
    // Well-compressed but wrong inside: counts past the end, an unknown format, a varint that never ends.
    for (const std::string& raw : {std::string("\x01\x7f", 2), std::string("\x02\x00", 2), std::string(12, '\xff'),
                                   std::string("\x01\x01\x00\x00\x05\x00", 6)}) {
        std::string z(compressBound(uLong(raw.size())), '\0');
        uLongf n = uLongf(z.size());
        compress(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(raw.data()), uLong(raw.size()));
        z.resize(n);
        expect_error([&] { decode_decisions(z, int64_t(raw.size()), "w"); }, {"w: decisions: blob"});
    }
}

TEST(AttentionBlob, DamagedBlobsGiveErrorsNotCrashes) {
    const AttentionStep a = sample_attention(3);
    const std::string good = encode_attention(a.mass.data(), a.mass.size());
    EXPECT_EQ(float_bits(decode_attention(good, a.mass.size(), "w")), float_bits(a.mass));
    expect_error([&] { decode_attention(good, a.mass.size() + 1, "run 1 step 3"); },
                 {"run 1 step 3", "attention_samples", "zlib"});
    expect_error([&] { decode_attention(good, size_t(1) << 40, "w"); }, {"implausible size"});
    expect_error([&] { decode_attention("not zlib at all", 4, "w"); }, {"zlib"});
}

// ---- the writer -----------------------------------------------------------------------

TEST(SessionWriter, StoresRunsStepsAndDecisionsAsGiven) {
    const std::string path = scratch("roundtrip") + "/s.db";
    int64_t id = 0;
    {
        SessionWriter writer(path);
        id = store_run(writer, 12);
    }
    auto db = open_session_db(path, SessionAccess::read);
    const StoredRun run = load_run(*db, id);
    const RunRecord want = sample_record();
    EXPECT_EQ(run.record.prompt_text, want.prompt_text);
    EXPECT_EQ(run.record.prompt_tokens, want.prompt_tokens);
    EXPECT_EQ(run.record.seed, want.seed);
    EXPECT_EQ(run.status, "ok");
    EXPECT_EQ(run.record.method, "h2o(recent=0.5)"); // canonical from the summary
    EXPECT_FALSE(run.ended_at.empty());
    EXPECT_FALSE(run.build_version.empty());
    ASSERT_TRUE(run.summary);
    EXPECT_EQ(run.summary->first_divergence, 3);
    EXPECT_DOUBLE_EQ(run.summary->mean_kl, 0.125);
    EXPECT_EQ(run.summary->peak_kv_bytes, 8192);
    EXPECT_EQ(run.stored_steps, 12);

    const std::vector<StoredStep> steps = load_steps(*db, id);
    ASSERT_EQ(steps.size(), 12u);
    for (int64_t k = 0; k < 12; ++k) {
        const StepEvent want_step = sample_step(k, true);
        EXPECT_EQ(steps[k].event.token, want_step.token);
        EXPECT_EQ(steps[k].event.reference_token, want_step.reference_token);
        EXPECT_DOUBLE_EQ(steps[k].event.kl, want_step.kl);
        EXPECT_EQ(steps[k].event.top1, want_step.top1);
        EXPECT_EQ(steps[k].event.kv_slots, want_step.kv_slots);
        EXPECT_EQ(steps[k].event.reference_kv_bytes, want_step.reference_kv_bytes);
        EXPECT_EQ(steps[k].text, "t" + std::to_string(want_step.token));
        const std::vector<Decision> d = load_decisions(*db, id, k);
        EXPECT_EQ(d.empty(), k % 2 == 0);
        if (!d.empty()) {
            EXPECT_EQ(d[3].kept, sample_decisions(16 + k, uint32_t(k))[3].kept);
        }
    }
    EXPECT_EQ(steps_with_decisions(*db, id).size(), 6u);
    const std::vector<AttentionStep> attention = load_attention(*db, id);
    ASSERT_EQ(attention.size(), 11u);
    for (int64_t k = 1; k < 12; ++k) expect_same_attention(attention[size_t(k - 1)], sample_attention(k));
}

// The writer stores a viewer's attention as it records it: one row per layer x query
// head, one query each, and a thinning drops the stored rows the viewer drops.
TEST(SessionWriter, StoresAttentionRowsBitExactAndThinsThemAsTheViewerDoes) {
    const std::string path = scratch("attention") + "/s.db";
    {
        SessionWriter writer(path);
        writer.begin_run(sample_record(), [](int32_t) { return std::string("x"); });
        for (int64_t k = 1; k <= 5; ++k) writer.on_attention_rows(sample_attention(k));
        writer.thin_attention(2); // the viewer kept steps 2 and 4, records every second step on
        for (int64_t k = 6; k <= 8; k += 2) writer.on_attention_rows(sample_attention(k));
        writer.end_run(sample_summary(0));
    }
    auto db = open_session_db(path, SessionAccess::read);
    EXPECT_EQ(count(*db, "attention_samples"), 4 * 2 * 3);
    sql::Statement q = db->prepare("SELECT count(*) FROM attention_samples WHERE n_queries = 1 AND n_keys = 5 AND "
                                   "key_stride = 4 AND layer < 2 AND head < 3", "t");
    ASSERT_TRUE(q.step());
    EXPECT_EQ(q.int64(0), 4 * 2 * 3);
    const std::vector<AttentionStep> attention = load_attention(*db, 1);
    ASSERT_EQ(attention.size(), 4u);
    for (size_t i = 0; i < attention.size(); ++i) expect_same_attention(attention[i], sample_attention(int64_t(2 * i + 2)));
}

// A damaged row, or a step that misses a head, is an Error naming the run, never a crash
// or a short row.
TEST(SessionQueries, DamagedAttentionSamplesGiveErrors) {
    const std::string path = scratch("attention_damaged") + "/s.db";
    {
        SessionWriter writer(path);
        store_run(writer, 3);
    }
    auto db = open_session_db(path, SessionAccess::write);
    db->exec("DELETE FROM attention_samples WHERE step = 2 AND layer = 1 AND head = 2", "t");
    expect_error([&] { load_attention(*db, 1); }, {path, "run 1", "attention_samples", "step 2 misses"});
    db->exec("UPDATE attention_samples SET n_keys = 6 WHERE step = 1 AND layer = 0 AND head = 0", "t");
    expect_error([&] { load_attention(*db, 1); }, {"step 1 L0.H0", "zlib"});
    db->exec("UPDATE attention_samples SET n_queries = 2 WHERE step = 1", "t");
    expect_error([&] { load_attention(*db, 1); }, {"step 1 L0.H0", "malformed"});
}

TEST(SessionWriter, RunWithoutReferenceStoresNullsAndReadsBackAsTheEngineSendsIt) {
    const std::string path = scratch("noref") + "/s.db";
    {
        SessionWriter writer(path);
        writer.begin_run(sample_record(), [](int32_t) { return std::string(); });
        writer.on_step(sample_step(0, false));
        RunSummary s = sample_summary(1);
        s.has_reference = false;
        writer.end_run(s);
    }
    auto db = open_session_db(path, SessionAccess::read);
    sql::Statement q = db->prepare("SELECT reference_token IS NULL AND kl IS NULL AND match IS NULL AND "
                                   "reference_kv_bytes IS NULL FROM steps", "t");
    ASSERT_TRUE(q.step());
    EXPECT_EQ(q.int64(0), 1);
    const std::vector<StoredStep> steps = load_steps(*db, 1);
    EXPECT_EQ(steps.at(0).event.reference_token, -1);
    EXPECT_EQ(steps.at(0).event.reference_kv_bytes, -1);
    EXPECT_EQ(steps.at(0).text, "");
    EXPECT_FALSE(load_run(*db, 1).summary->has_reference);
}

// Steps reach the disk within the commit interval, without waiting for the run's end.
TEST(SessionWriter, CommitsWithinTheIntervalWhileTheRunGoesOn) {
    const std::string path = scratch("interval") + "/s.db";
    SessionWriter writer(path);
    writer.begin_run(sample_record(), [](int32_t) { return std::string("x"); });
    auto reader = open_session_db(path, SessionAccess::read);
    writer.on_step(sample_step(0, true));
    const auto start = Clock::now();
    while (count(*reader, "steps") == 0 && Clock::now() - start < std::chrono::seconds(5))
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_EQ(count(*reader, "steps"), 1);
    EXPECT_LT(seconds, 0.25 + 0.25) << "a step took " << seconds << " s to be committed"; // interval + slack
    EXPECT_GT(seconds, 0.1) << "steps are batched over the interval, not committed one by one";
}

// The engine's thread only enqueues: while another process holds the write lock for a
// second, a thousand steps still take no time to hand over.
TEST(SessionWriter, EngineNeverWaitsOnTheDatabase) {
    const std::string path = scratch("nowait") + "/s.db";
    SessionWriter writer(path);
    writer.begin_run(sample_record(), [](int32_t) { return std::string("x"); });
    auto blocker = open_session_db(path, SessionAccess::write);
    blocker->exec("BEGIN IMMEDIATE", "holding the write lock");
    const auto start = Clock::now();
    for (int64_t k = 0; k < 1000; ++k) {
        writer.on_decisions(k, sample_decisions(64, uint32_t(k)));
        writer.on_step(sample_step(k, true));
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(600)); // the writer is blocked meanwhile
    blocker->exec("COMMIT", "releasing the write lock");
    writer.end_run(sample_summary(1000));
    EXPECT_LT(seconds, 0.2) << "handing 1,000 steps to the writer took " << seconds << " s";
    EXPECT_EQ(count(*blocker, "steps"), 1000);
}

TEST(SessionQueries, DeleteRemovesTheRunWithItsStepsDecisionsSamplesAndComparisonEntries) {
    const std::string path = scratch("delete") + "/s.db";
    {
        SessionWriter writer(path);
        store_run(writer, 6);
        store_run(writer, 4);
    }
    auto db = open_session_db(path, SessionAccess::write);
    store_comparison(*db, "h2o at two lengths", {1, 2});
    EXPECT_EQ(comparison_runs(*db, "h2o at two lengths"), (std::vector<int64_t>{1, 2}));
    delete_run(*db, 1);
    EXPECT_EQ(list_runs(*db).size(), 1u);
    EXPECT_EQ(count(*db, "steps"), 4);
    EXPECT_EQ(count(*db, "decisions"), 2);
    EXPECT_EQ(count(*db, "attention_samples"), 3 * 2 * 3); // run 2's decode steps x layers x heads
    EXPECT_EQ(comparison_runs(*db, "h2o at two lengths"), (std::vector<int64_t>{2}));
    expect_error([&] { delete_run(*db, 1); }, {path, "run 1", "no such run"});
    expect_error([&] { load_run(*db, 99); }, {path, "run 99", "no such run"});
}

// ---- merging and sweeps ---------------------------------------------------------------

RunRecord cell_record(const std::string& sweep, const std::string& cell) {
    RunRecord r = sample_record();
    r.sweep = sweep;
    r.cell = cell;
    r.task = "passkey";
    r.answer = "12345";
    return r;
}

// One shard's database: the sweep's grid (cells a, b, c, d) and runs of `cells`.
std::string shard_db(const std::string& name, const std::vector<std::string>& cells, const std::string& grid = "{}") {
    const std::string path = scratch("merge_" + name) + "/shard.db";
    std::filesystem::remove(path);
    store_sweep(*open_session_db(path, SessionAccess::write), "s", grid, {"a", "b", "c", "d"});
    SessionWriter writer(path);
    for (const std::string& cell : cells) store_run(writer, 4, cell_record("s", cell));
    return path;
}

std::vector<std::string> uuids(sql::Connection& db) {
    std::vector<std::string> out;
    for (const StoredRun& r : list_runs(db)) out.push_back(r.record.uuid);
    return out;
}

// Two shards and a plain run merge into one database: each run once with everything it
// had, however often merged; a sweep's progress names the missing cell.
TEST(SessionMerge, CopiesEveryRunOnceWithItsRows) {
    const std::string a = shard_db("a", {"a", "b"}), b = shard_db("b", {"c"});
    {
        SessionWriter plain(b);
        store_run(plain, 3); // not a sweep's
        store_comparison(*open_session_db(b, SessionAccess::write), "mine", {1, 2});
    }
    auto target = open_session_db(scratch("merge_target") + "/all.db", SessionAccess::write);
    MergeCounts c = merge_sessions(*target, a);
    EXPECT_EQ(c.copied, 2);
    c = merge_sessions(*target, b);
    EXPECT_EQ(c.copied, 2);
    c = merge_sessions(*target, a); // again: nothing new
    EXPECT_EQ(c.copied, 0);
    EXPECT_EQ(c.already_there, 2);
    EXPECT_EQ(count(*target, "runs"), 4);

    std::vector<std::string> expected = uuids(*open_session_db(a, SessionAccess::read));
    for (const std::string& u : uuids(*open_session_db(b, SessionAccess::read))) expected.push_back(u);
    EXPECT_EQ(uuids(*target), expected);
    for (int64_t id = 1; id <= 4; ++id) {
        const StoredRun run = load_run(*target, id);
        EXPECT_EQ(run.stored_steps, id == 4 ? 3 : 4);
        EXPECT_EQ(steps_with_decisions(*target, id).size(), id == 4 ? 1u : 2u);
        EXPECT_EQ(load_decisions(*target, id, 1)[3].kept, sample_decisions(17, 1)[3].kept);
        const std::vector<AttentionStep> attention = load_attention(*target, id);
        ASSERT_EQ(attention.size(), id == 4 ? 2u : 3u);
        expect_same_attention(attention.back(), sample_attention(id == 4 ? 2 : 3));
        EXPECT_EQ(run.summary->mean_kl, sample_summary(4).mean_kl);
    }
    EXPECT_EQ(load_run(*target, 3).record.cell, "c");
    EXPECT_EQ(load_run(*target, 3).record.answer, "12345");
    EXPECT_EQ(comparison_runs(*target, "mine"), (std::vector<int64_t>{3, 4}));
    EXPECT_EQ(pragma_text(*target, "integrity_check"), "ok");

    const std::vector<SweepProgress> progress = sweep_progress(*target);
    ASSERT_EQ(progress.size(), 1u);
    EXPECT_EQ(progress[0].cells, 4);
    EXPECT_EQ(progress[0].done, 3);
    EXPECT_EQ(progress[0].missing, (std::vector<std::string>{"d"}));
    EXPECT_EQ(sweep_runs(*target, "s"), (std::vector<int64_t>{1, 2, 3}));
}

// A cell keeps one run: a finished run replaces an unfinished one (a killed shard's), and
// a second run of a done cell (the cell run twice) is left out.
TEST(SessionMerge, ACellKeepsOneFinishedRun) {
    const std::string killed = scratch("merge_killed") + "/shard.db";
    std::filesystem::remove(killed);
    store_sweep(*open_session_db(killed, SessionAccess::write), "s", "{}", {"a", "b", "c", "d"});
    {
        SessionWriter writer(killed);
        store_run(writer, 2, cell_record("s", "a"), /*finished=*/false);
    }
    auto target = open_session_db(scratch("merge_cells") + "/all.db", SessionAccess::write);
    EXPECT_EQ(merge_sessions(*target, killed).copied, 1);
    EXPECT_EQ(sweep_progress(*target)[0].done, 0);

    MergeCounts c = merge_sessions(*target, shard_db("redo", {"a", "b"}));
    EXPECT_EQ(c.copied, 2);
    EXPECT_EQ(c.replaced, 1);
    c = merge_sessions(*target, shard_db("twice", {"b"})); // b run again elsewhere
    EXPECT_EQ(c.copied, 0);
    EXPECT_EQ(c.duplicate_cells, 1);
    EXPECT_EQ(count(*target, "runs"), 2);
    for (const StoredRun& r : list_runs(*target)) EXPECT_EQ(r.status, "ok");
    EXPECT_EQ(done_cells(*target, "s"), (std::set<std::string>{"a", "b"}));
}

// A resumed shard drops what its killed run left, and finds the cells it did.
TEST(SessionSweeps, ResumeSeesDoneCellsAndDropsUnfinishedRuns) {
    const std::string path = shard_db("resume", {"a"});
    {
        SessionWriter writer(path);
        store_run(writer, 2, cell_record("s", "b"), /*finished=*/false);
    }
    auto db = open_session_db(path, SessionAccess::write);
    EXPECT_EQ(done_cells(*db, "s"), (std::set<std::string>{"a"}));
    EXPECT_EQ(delete_unfinished_runs(*db, "s", {"b", "c"}), 1);
    EXPECT_EQ(count(*db, "runs"), 1);
    EXPECT_EQ(count(*db, "steps"), 4); // the deleted run's steps went with it
    store_sweep(*db, "s", "{}", {"a", "b", "c", "d"}); // the same grid again: fine
    expect_error([&] { store_sweep(*db, "s", "{\"other\": 1}", {"a"}); }, {"shard.db", "sweep s", "other settings"});
}

// What merge refuses, changing nothing: the target itself, a file that is not a sessions
// database, a sweep of the same name with other settings.
TEST(SessionMerge, RefusesBadSourcesAndChangesNothing) {
    const std::string a = shard_db("bad_a", {"a"});
    const std::string other = shard_db("bad_other", {"b"}, "{\"steps\": 2}");
    const std::string junk = scratch("merge_junk") + "/junk.db";
    write_file(junk, std::string(4096, 'x'));
    auto target = open_session_db(a, SessionAccess::write);
    expect_error([&] { merge_sessions(*target, a); }, {"shard.db", "the target database itself"});
    expect_error([&] { merge_sessions(*target, junk); }, {"junk.db", "not a SQLite database"});
    expect_error([&] { merge_sessions(*target, other); }, {"shard.db", "sweep s", "other settings"});
    EXPECT_EQ(count(*target, "runs"), 1);
    EXPECT_EQ(count(*target, "sweeps"), 1);
    EXPECT_EQ(merge_sessions(*target, shard_db("bad_fine", {"c"})).copied, 1); // still usable
}

// ---- head roles -----------------------------------------------------------------------

// A profile is stored per (layer, query head, role), the layer preference as head -1, and
// storing the same model and probes again replaces it.
TEST(SessionHeadRoles, StoreKeepsOneProfilePerModelAndProbes) {
    auto db = open_session_db(scratch("head_roles") + "/s.db", SessionAccess::write);
    HeadRoles r;
    r.n_layer = 2;
    r.n_head = 3;
    r.n_head_kv = 1;
    r.roles = {"sink", "induction"};
    r.scores = {{0.1, 0.2, 0.3, 0.4, 0.5, 0.6}, {1, 0, 0, 0, 0, 0.75}};
    r.layer_preference = {2.5, 7};
    store_head_roles(*db, "sha256:aa", "seed=0", r);
    r.scores[1][5] = 0.5;
    store_head_roles(*db, "sha256:aa", "seed=0", r); // replaces
    store_head_roles(*db, "sha256:aa", "seed=1", r);
    EXPECT_EQ(count(*db, "head_roles"), 2 * (2 * 6 + 2));
    sql::Statement q = db->prepare("SELECT score FROM head_roles WHERE model_hash = 'sha256:aa' AND probes = 'seed=0' "
                                   "AND layer = 1 AND head = 2 AND role = 'induction'",
                                   "test");
    ASSERT_TRUE(q.step());
    EXPECT_EQ(q.real(0), 0.5);
    sql::Statement p = db->prepare("SELECT score FROM head_roles WHERE probes = 'seed=0' AND layer = 1 AND head = -1 "
                                   "AND role = 'layer_preference'",
                                   "test");
    ASSERT_TRUE(p.step());
    EXPECT_EQ(p.real(0), 7);

    // And back, as the workbench reads a profile instead of analyzing again.
    const std::optional<HeadRoles> back = load_head_roles(*db, "sha256:aa", "seed=0");
    ASSERT_TRUE(back);
    EXPECT_EQ(back->n_layer, 2);
    EXPECT_EQ(back->n_head, 3);
    EXPECT_EQ(back->n_head_kv, 0); // not stored
    EXPECT_EQ(back->roles, (std::vector<std::string>{"induction", "sink"})); // name order
    EXPECT_EQ(back->scores[0], r.scores[1]);
    EXPECT_EQ(back->scores[1], r.scores[0]);
    EXPECT_EQ(back->layer_preference, r.layer_preference);
    EXPECT_FALSE(load_head_roles(*db, "sha256:bb", "seed=0"));
    EXPECT_FALSE(load_head_roles(*db, "sha256:aa", "seed=2"));
}

// ---- model hashes ---------------------------------------------------------------------

TEST(ModelHash, IsTheSha256OfTheFileOrOfADirectorysListing) {
    const std::string dir = scratch("hash");
    write_file(dir + "/abc.gguf", "abc");
    EXPECT_EQ(model_hash(dir + "/abc.gguf"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    std::filesystem::create_directories(dir + "/hf");
    write_file(dir + "/hf/config.json", "abc");
    write_file(dir + "/hf/model.safetensors", "");
    write_file(dir + "/hf/README.md", "not part of the model");
    // sha256sum's lines for the two files, sorted by name, hashed again (`sha256sum * | sha256sum`).
    const std::string listing = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  config.json\n"
                                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  model.safetensors\n";
    write_file(dir + "/listing", listing);
    EXPECT_EQ(model_hash(dir + "/hf"), model_hash(dir + "/listing"));
    expect_error([&] { model_hash(dir + "/missing.gguf"); }, {dir + "/missing.gguf", "cannot be read"});
}

// ---- bad input ------------------------------------------------------------------------

TEST(SessionBadInput, FileThatIsNotSqliteIsRefusedAndLeftAlone) {
    const std::string path = scratch("notsqlite") + "/notes.txt";
    const std::string text = "These are my notes, not a database.\n" + std::string(5000, 'x');
    write_file(path, text);
    expect_error([&] { SessionWriter w(path); }, {path, "is not a SQLite database"});
    expect_error([&] { open_session_db(path, SessionAccess::read); }, {path, "is not a SQLite database"});
    EXPECT_EQ(read_file(path), text);
}

TEST(SessionBadInput, AnotherProgramsDatabaseIsRefusedAndLeftAlone) {
    const std::string path = scratch("foreign") + "/other.db";
    {
        sql::Connection other(path, sql::Connection::Access::read_write);
        other.exec("CREATE TABLE contacts (name TEXT); INSERT INTO contacts VALUES ('Ada')", "test");
    }
    expect_error([&] { SessionWriter w(path); }, {path, "not a KVScope sessions database"});
    sql::Connection other(path, sql::Connection::Access::read_only);
    EXPECT_EQ(count(other, "contacts"), 1);
    EXPECT_EQ(pragma_text(other, "user_version"), "0");
}

TEST(SessionBadInput, NewerSchemaIsRefusedAndLeftAlone) {
    const std::string path = scratch("newer") + "/s.db";
    {
        SessionWriter writer(path);
        store_run(writer, 3);
    }
    const int newer = session_schema_version() + 1;
    sql::Connection(path, sql::Connection::Access::read_write)
        .exec("PRAGMA user_version = " + std::to_string(newer), "test");
    const std::vector<std::string> words{path, "newer KVScope", "schema version " + std::to_string(newer)};
    expect_error([&] { SessionWriter w(path); }, words);
    expect_error([&] { open_session_db(path, SessionAccess::read); }, words);
    sql::Connection db(path, sql::Connection::Access::read_only);
    EXPECT_EQ(count(db, "steps"), 3);
    EXPECT_EQ(pragma_text(db, "user_version"), std::to_string(newer));
}

// A file the process may not write. Root writes anything, so as root the check runs in a
// child that has become `nobody`; the file sits under /tmp, where `nobody` can reach it
// (the build tree may be under a private home).
TEST(SessionBadInputDeathTest, ReadOnlyFileIsRefusedAndLeftAlone) {
    std::string dir = (std::filesystem::temp_directory_path() / "kvscope-readonly-XXXXXX").string();
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
    const std::string path = dir + "/s.db";
    {
        SessionWriter writer(path);
        store_run(writer, 3);
    }
    ASSERT_EQ(chmod(path.c_str(), 0444), 0);
    EXPECT_EXIT(
        {
            if (geteuid() == 0 && setuid(65534) != 0) _exit(2);
            try {
                SessionWriter writer(path);
            } catch (const Error& e) {
                std::fprintf(stderr, "%s\n", e.what());
                _exit(0);
            }
            _exit(1);
        },
        ::testing::ExitedWithCode(0), "s.db: opening the sessions database: cannot be written");
    ASSERT_EQ(chmod(path.c_str(), 0644), 0);
    {
        auto db = open_session_db(path, SessionAccess::read);
        EXPECT_EQ(pragma_text(*db, "integrity_check"), "ok");
        EXPECT_EQ(load_steps(*db, 1).size(), 3u);
    }
    std::filesystem::remove_all(dir);
}

// The disk fills up mid-run: simulated with a page limit that every connection this
// process opens gets (the writer's included), as a full disk makes SQLite report SQLITE_FULL.
int limit_pages(sqlite3* db, char**, const sqlite3_api_routines*) {
    sqlite3_exec(db, "PRAGMA max_page_count = 1", nullptr, nullptr, nullptr); // clamped to the current size
    return SQLITE_OK;
}

TEST(SessionBadInput, FullDiskFailsTheWritesButKeepsWhatWasStored) {
    const std::string path = scratch("full") + "/s.db";
    {
        SessionWriter writer(path);
        store_run(writer, 20);
    }
    sqlite3_auto_extension(reinterpret_cast<void (*)()>(limit_pages));
    try {
        SessionWriter writer(path);
        store_run(writer, 2000);
        ADD_FAILURE() << "2,000 steps fitted in a database that may not grow";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(path), std::string::npos) << what;
        EXPECT_NE(what.find("is full"), std::string::npos) << what;
    }
    sqlite3_cancel_auto_extension(reinterpret_cast<void (*)()>(limit_pages));

    auto db = open_session_db(path, SessionAccess::read);
    EXPECT_EQ(pragma_text(*db, "integrity_check"), "ok");
    const std::vector<StoredRun> runs = list_runs(*db);
    ASSERT_GE(runs.size(), 1u);
    EXPECT_EQ(runs[0].status, "ok");
    EXPECT_EQ(load_steps(*db, runs[0].id).size(), 20u);
    if (runs.size() == 2) { // the second run began before the disk filled: it stays unfinished
        EXPECT_EQ(runs[1].status, "unfinished");
        const std::vector<StoredStep> steps = load_steps(*db, runs[1].id);
        for (size_t k = 0; k < steps.size(); ++k) EXPECT_EQ(steps[k].event.step, int64_t(k));
    }
}

} // namespace
} // namespace kvscope
