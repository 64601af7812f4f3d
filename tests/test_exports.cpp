// The exports of stored runs (sessions/export.h, issue 6 item 5) on synthetic runs stored
// through SessionWriter (no model): JSON export -> import -> export gives the same bytes,
// a bad document stores nothing, the CSV tables parse back (RFC 4180) to what was stored,
// the Chrome trace has the fields each event type needs and no overlapping slices, a file
// is written all or nothing, and the `export` and `sessions import` commands.
#include "core/error.h"
#include "core/policy.h"
#include "sessions/base64.h"
#include "sessions/export.h"
#include "sessions/queries.h"
#include "sessions/schema.h"
#include "sessions/writer.h"
#include "session_samples.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

namespace kvscope {
namespace {

using Json = nlohmann::json;

std::string scratch(const std::string& name) { return test::scratch_dir("exports/" + name); }

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

using test::expect_error;

bool holds(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// ---- synthetic runs -------------------------------------------------------------------

// Token text that CSV must quote and JSON must escape; the last is half a UTF-8 character.
const std::vector<std::string> kTexts = {"plain", " a, b", "say \"hi\"", "two\nlines", "crlf\r\n", "\xc3"};

StepEvent step_event(int64_t k, bool reference) {
    StepEvent e;
    e.step = k;
    e.token = int32_t(200 + k);
    e.reference_token = reference ? int32_t(200 + k + (k == 2)) : -1;
    e.logprob = k == 4 ? -HUGE_VAL : -0.1 * double(k + 1); // a token the method gave no probability
    e.reference_logprob = reference ? -0.3 : 0;
    e.kl = reference ? 0.001 * double(k * k) : 0;
    e.top1 = !reference || k != 3;
    e.kv_bytes = 1000 * (k + 1);
    e.reference_kv_bytes = reference ? 2000 * (k + 1) : -1;
    e.kv_slots = 10 * (k + 1);
    e.step_seconds = k == 0 ? 0.0123456789 : 0.001 + 1e-7 * double(k);
    e.policy_seconds = k % 2 ? 0.00025 : 0; // a step where the policy did nothing
    return e;
}

// The attention a viewer recorded at step k: 2 layers x 3 query heads x 4 columns of 5
// positions, with the floats a text format could lose (-0, a subnormal, the largest).
AttentionStep step_attention(int64_t k) {
    AttentionStep a{k, 2, 3, 4, 5, {}};
    for (int i = 0; i < 24; ++i) a.mass.push_back(float(i + k) / 7.0f);
    a.mass[1] = -0.0f, a.mass[2] = 1e-40f, a.mass[3] = std::numeric_limits<float>::max();
    return a;
}

std::vector<Decision> step_decisions(int64_t k) {
    return {Decision{0, 1, {0, 1, int32_t(5 + k)}, {2, 3}}, Decision{3, 0, {}, {7}}};
}

RunRecord record(const std::string& method, const std::string& budget) {
    RunRecord r;
    r.model_path = "/models/tiny, \"v2\".gguf";
    r.model_hash = "sha256:abc";
    r.method = method;
    r.budget = budget;
    r.prompt_text = "Line one,\nline \"two\"\t\xc3\xa9";
    r.prompt_tokens = {1, 2, 3};
    r.seed = ~uint64_t(0);
    r.device = "cpu";
    r.dtype = "f32";
    return r;
}

RunSummary summary(const std::string& method, int64_t n_steps, bool reference) {
    RunSummary s = test::sample_summary(n_steps);
    s.method = method;
    s.has_reference = reference;
    return s;
}

// Stores a run of kTexts.size() steps (decisions at odd steps; with a reference, as the
// workbench runs it, attention at even ones); `end` null leaves it unfinished.
int64_t store_run(SessionWriter& writer, const RunRecord& r, bool reference, const RunSummary* end) {
    const int64_t id = writer.begin_run(r, [](int32_t token) { return kTexts[size_t(token - 200)]; });
    for (int64_t k = 0; k < int64_t(kTexts.size()); ++k) {
        if (k % 2) writer.on_decisions(k, step_decisions(k));
        else if (reference) writer.on_attention_rows(step_attention(k));
        writer.on_step(step_event(k, reference));
    }
    if (end) writer.end_run(*end);
    return id;
}

// Runs 1-4: with a reference; without; failed; unfinished. Runs 1 and 2 form a comparison.
std::string make_sessions(const std::string& name) {
    const std::string path = scratch(name) + "/s.db";
    {
        SessionWriter writer(path);
        const int64_t n = int64_t(kTexts.size());
        const RunSummary with = summary("snapkv(window=32,kernel=7)+pyramid", n, true);
        RunSummary without = summary("h2o", n, false);
        RunSummary failed = summary("faulty", 2, true);
        failed.status = "failed";
        failed.error = "plugin faulty: score: \"boom\", at step 2";
        store_run(writer, record("snapkv(window=32,kernel=7)+pyramid", "50%"), true, &with);
        store_run(writer, record("h2o", "32"), false, &without);
        store_run(writer, record("faulty", "32"), true, &failed);
        store_run(writer, record("window", "16"), true, nullptr);
    }
    store_comparison(*open_session_db(path, SessionAccess::write), "compare text, runs 1-2", {1, 2});
    return path;
}

std::string exported(sql::Connection& db, const std::vector<int64_t>& runs,
                     void (*format)(sql::Connection&, const std::vector<int64_t>&, std::ostream&)) {
    std::ostringstream out;
    format(db, runs, out);
    return out.str();
}

// ---- JSON -----------------------------------------------------------------------------

TEST(ExportJson, ImportThenExportGivesTheSameBytes) {
    const std::string path = make_sessions("json_roundtrip");
    auto db = open_session_db(path, SessionAccess::write);
    const std::string json = exported(*db, {1, 2, 3, 4}, export_json);

    // Into another database: the same document, the same run identities.
    auto other = open_session_db(scratch("json_roundtrip_other") + "/s.db", SessionAccess::write);
    const ImportResult there = import_json(*other, json, "runs.json");
    EXPECT_EQ(there.stored, (std::vector<int64_t>{1, 2, 3, 4}));
    EXPECT_TRUE(there.existing.empty());
    EXPECT_EQ(exported(*other, there.stored, export_json), json);
    EXPECT_EQ(comparison_runs(*other, "compare text, runs 1-2"), (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(load_run(*other, 4).status, "unfinished");
    EXPECT_EQ(load_decisions(*other, 1, 3)[0].kept, step_decisions(3)[0].kept);
    const std::vector<AttentionStep> attention = load_attention(*other, 1);
    ASSERT_EQ(attention.size(), 3u);
    EXPECT_EQ(attention[2].step, 4);
    EXPECT_EQ(attention[2].key_stride, 5);
    EXPECT_EQ(std::memcmp(attention[2].mass.data(), step_attention(4).mass.data(), 24 * sizeof(float)), 0)
        << "the floats, bit for bit";
    for (int64_t id : {1, 2, 3, 4}) EXPECT_EQ(load_run(*other, id).record.uuid, load_run(*db, id).record.uuid);

    // Into the same one, or again: nothing, since every run is there already.
    for (sql::Connection* target : {db.get(), other.get()}) {
        const ImportResult again = import_json(*target, json, "runs.json");
        EXPECT_TRUE(again.stored.empty());
        EXPECT_EQ(again.existing, (std::vector<int64_t>{1, 2, 3, 4}));
        EXPECT_EQ(list_runs(*target).size(), 4u);
    }
}

// A version 1 document (before run identities and the steps' reference KV bytes) imports,
// each run with a new uuid.
TEST(ExportJson, ImportsVersionOneDocuments) {
    auto db = open_session_db(make_sessions("json_v1"), SessionAccess::write);
    Json doc = Json::parse(exported(*db, {1, 2}, export_json));
    doc["version"] = 1;
    for (Json& run : doc["runs"]) {
        for (const char* key : {"uuid", "task", "answer", "sweep", "cell"}) run.erase(key);
        for (Json& step : run["steps"]) step.erase("reference_kv_bytes");
    }
    auto fresh = open_session_db(scratch("json_v1_into") + "/s.db", SessionAccess::write);
    const ImportResult imported = import_json(*fresh, doc.dump(), "v1.json");
    ASSERT_EQ(imported.stored.size(), 2u);
    for (int64_t id : imported.stored) {
        const std::string uuid = load_run(*fresh, id).record.uuid;
        EXPECT_EQ(uuid.size(), 32u);
        EXPECT_NE(uuid, load_run(*db, id).record.uuid);
    }
    EXPECT_EQ(load_steps(*fresh, 2).size(), load_steps(*db, 2).size());
}

TEST(ExportJson, HoldsEveryFieldWithoutDatabaseIds) {
    const std::string path = make_sessions("json_fields");
    auto db = open_session_db(path, SessionAccess::read);
    const std::string text = exported(*db, {1, 2, 4}, export_json);
    // A line for the header, each run's settings, each step and each closing bracket.
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3 * (int64_t(kTexts.size()) + 2) + 2);
    const Json doc = Json::parse(text);
    EXPECT_EQ(doc["format"], "kvscope-runs");
    EXPECT_EQ(doc["version"], 4);
    const Json& run = doc["runs"][0];
    EXPECT_FALSE(run.contains("id"));
    EXPECT_EQ(run["method"], "snapkv(window=32,kernel=7)+pyramid"); // canonical, from the summary
    EXPECT_EQ(run["prompt_text"], record("", "").prompt_text);
    EXPECT_EQ(run["seed"].get<uint64_t>(), ~uint64_t(0));
    EXPECT_EQ(run["comparisons"], Json::array({"compare text, runs 1-2"}));
    EXPECT_EQ(run["summary"]["mean_kl"], 0.125);
    EXPECT_EQ(run["summary"]["prefill_seconds"], 0.01);
    const Json& steps = run["steps"];
    ASSERT_EQ(steps.size(), kTexts.size());
    EXPECT_EQ(steps[2]["match"], false);
    EXPECT_EQ(steps[3]["top1"], false);
    EXPECT_EQ(steps[4]["logprob"], "-inf");
    EXPECT_EQ(steps[4]["reference_kv_bytes"], 10000);
    EXPECT_EQ(steps[1]["text"], " a, b");
    EXPECT_EQ(steps[5]["text"], "\xEF\xBF\xBD"); // half a character: U+FFFD, and the byte exactly
    EXPECT_EQ(steps[5]["text_hex"], "c3");
    EXPECT_FALSE(steps[0].contains("decisions"));
    EXPECT_FALSE(steps[1].contains("attention"));
    EXPECT_EQ(steps[2]["attention"]["n_layer"], 2);
    EXPECT_EQ(steps[2]["attention"]["n_head"], 3);
    EXPECT_EQ(steps[2]["attention"]["n_keys"], 4);
    EXPECT_EQ(steps[2]["attention"]["key_stride"], 5);
    EXPECT_TRUE(steps[2]["attention"]["zlib_float32_base64"].is_string());
    EXPECT_EQ(steps[1]["decisions"][0], (Json{{"layer", 0}, {"head", 1}, {"kept", {0, 1, 6}}, {"evicted", {2, 3}}}));

    const Json& no_reference = doc["runs"][1];
    EXPECT_TRUE(no_reference["summary"]["mean_kl"].is_null());
    EXPECT_TRUE(no_reference["steps"][0]["reference_token"].is_null());
    EXPECT_TRUE(no_reference["steps"][0]["kl"].is_null());
    EXPECT_TRUE(no_reference["steps"][0]["reference_kv_bytes"].is_null());
    const Json& unfinished = doc["runs"][2];
    EXPECT_TRUE(unfinished["summary"].is_null());
    EXPECT_TRUE(unfinished["ended_at"].is_null());
    EXPECT_EQ(unfinished["status"], "unfinished");
}

// Every bad document names the file and the field, and stores nothing: not even the runs
// before the bad one.
TEST(ExportJson, ImportRefusesBadDocumentsAndStoresNothing) {
    const std::string path = make_sessions("json_bad");
    auto db = open_session_db(path, SessionAccess::write);
    const std::string good = exported(*db, {1, 2}, export_json);
    const Json doc = Json::parse(good);
    const auto broken = [&](const std::function<void(Json&)>& edit) {
        Json d = doc;
        edit(d);
        return d.dump();
    };
    const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
        {good.substr(0, good.size() / 2), {"JSON", "parse error"}},
        {"[1, 2]", {"format", "not a KVScope runs export"}},
        {broken([](Json& d) { d["version"] = 5; }), {"version", "newer"}},
        {broken([](Json& d) { d["runs"][0]["steps"][2]["attention"]["zlib_float32_base64"] = "a*=="; }),
         {"runs[0].steps[2].attention.zlib_float32_base64", "not base64"}},
        {broken([](Json& d) { d["runs"][0]["steps"][2]["attention"]["n_keys"] = 5; }),
         {"runs[0].steps[2].attention.zlib_float32_base64", "does not hold the shape's values"}},
        {broken([](Json& d) { d["runs"][0]["steps"][2]["attention"]["n_head"] = 1 << 30; }),
         {"runs[0].steps[2].attention", "over 2^28 values"}},
        {broken([](Json& d) { d["runs"][1]["uuid"] = "ABC"; }), {"runs[1].uuid", "32 lowercase hex digits"}},
        {broken([](Json& d) { d["runs"][1]["steps"][3].erase("token"); }), {"runs[1].steps[3].token", "missing"}},
        {broken([](Json& d) { d["runs"][1]["steps"][3]["step"] = 1; }), {"runs[1].steps[3].step", "integer from 3"}},
        {broken([](Json& d) { d["runs"][0]["steps"][1]["decisions"][0]["kept"] = {3, 2}; }),
         {"runs[0].steps[1].decisions[0].kept[1]", "integer from 4"}},
        {broken([](Json& d) { d["runs"][1]["status"] = "done"; }), {"runs[1].status", "unfinished, ok or failed"}},
        {broken([](Json& d) { d["runs"][1]["steps"][0]["text_hex"] = "zz"; }), {"runs[1].steps[0].text_hex", "hex"}},
        {broken([](Json& d) { d["runs"][1]["seed"] = -1; }), {"runs[1].seed", "unsigned"}},
        {broken([](Json& d) { d["runs"][1]["summary"]["kv_bytes"] = "many"; }), {"runs[1].summary.kv_bytes", "integer"}},
    };
    // Into a database without these runs, where the good ones would be stored.
    auto empty = open_session_db(scratch("json_bad_into") + "/s.db", SessionAccess::write);
    for (auto [text, words] : cases) {
        words.push_back("bad.json: ");
        expect_error([&] { import_json(*empty, text, "bad.json"); }, words);
    }
    EXPECT_TRUE(list_runs(*empty).empty());
}

// RFC 4648's test vectors both ways; what is not padded base64 is refused.
TEST(Base64, RoundTripsTheRfcVectorsAndRefusesBadText) {
    const std::pair<const char*, const char*> vectors[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                           {"foo", "Zm9v"},  {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
                                                           {"foobar", "Zm9vYmFy"}};
    for (const auto& [bytes, text] : vectors) {
        EXPECT_EQ(base64_encode(bytes), text);
        EXPECT_EQ(base64_decode(text), std::optional<std::string>(bytes)) << text;
    }
    const std::string all_bytes = [] {
        std::string b;
        for (int i = 0; i < 256; ++i) b += char(i);
        return b;
    }();
    EXPECT_EQ(base64_decode(base64_encode(all_bytes)), all_bytes);
    for (const char* bad : {"Zg=", "Zg===", "Z===", "Zm9v!A==", "Zg==Zm8=", "=Zm8"}) EXPECT_FALSE(base64_decode(bad)) << bad;
}

// ---- CSV ------------------------------------------------------------------------------

// An independent RFC 4180 reader: CRLF after every record, quotes doubled inside quotes.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
    std::vector<std::vector<std::string>> rows(1, std::vector<std::string>(1));
    bool quoted = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        std::string& field = rows.back().back();
        if (quoted && c == '"' && i + 1 < text.size() && text[i + 1] == '"') field += text[i++];
        else if (c == '"') quoted = !quoted;
        else if (quoted) field += c;
        else if (c == ',') rows.back().emplace_back();
        else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n' && ++i) rows.emplace_back(1);
        else if (c == '\r' || c == '\n') ADD_FAILURE() << "a bare line break outside quotes at byte " << i;
        else field += c;
    }
    EXPECT_FALSE(quoted) << "a quote left open";
    EXPECT_EQ(rows.back(), std::vector<std::string>(1)) << "the last record ends with CRLF";
    rows.pop_back();
    return rows;
}

// Rows as column name -> value, checking every row has the header's width.
std::vector<std::map<std::string, std::string>> csv_records(const std::string& text) {
    const std::vector<std::vector<std::string>> rows = parse_csv(text);
    std::vector<std::map<std::string, std::string>> out;
    for (size_t r = 1; r < rows.size(); ++r) {
        EXPECT_EQ(rows[r].size(), rows[0].size()) << "row " << r;
        std::map<std::string, std::string>& record = out.emplace_back();
        for (size_t c = 0; c < rows[r].size() && c < rows[0].size(); ++c) record[rows[0][c]] = rows[r][c];
    }
    return out;
}

TEST(ExportCsv, StepsOfEveryRunParseBackToWhatWasStored) {
    const std::string path = make_sessions("csv_steps");
    auto db = open_session_db(path, SessionAccess::read);
    const auto records = csv_records(exported(*db, {1, 2}, export_steps_csv));
    ASSERT_EQ(records.size(), 2 * kTexts.size());
    for (size_t i = 0; i < records.size(); ++i) {
        const int64_t run = int64_t(i / kTexts.size()) + 1, k = int64_t(i % kTexts.size());
        const StepEvent want = step_event(k, run == 1);
        const auto& got = records[i];
        SCOPED_TRACE("run " + std::to_string(run) + " step " + std::to_string(k));
        EXPECT_EQ(got.at("run"), std::to_string(run));
        EXPECT_EQ(got.at("step"), std::to_string(k));
        EXPECT_EQ(got.at("text"), k == 5 ? "\xEF\xBF\xBD" : kTexts[size_t(k)]);
        EXPECT_EQ(std::stod(got.at("logprob")), want.logprob); // the shortest text of the same double
        EXPECT_EQ(std::stod(got.at("step_seconds")), want.step_seconds);
        EXPECT_EQ(got.at("kv_bytes"), std::to_string(want.kv_bytes));
        EXPECT_EQ(got.at("reference_kv_bytes"), run == 1 ? std::to_string(want.reference_kv_bytes) : "");
        EXPECT_EQ(got.at("reference_token"), run == 1 ? std::to_string(want.reference_token) : "");
        if (run == 1) EXPECT_EQ(std::stod(got.at("kl")), want.kl);
        else EXPECT_EQ(got.at("kl"), "");
        EXPECT_EQ(got.at("match"), run == 1 ? (k == 2 ? "0" : "1") : "");
    }
}

TEST(ExportCsv, SummaryHasOneRowPerRun) {
    const std::string path = make_sessions("csv_summary");
    auto db = open_session_db(path, SessionAccess::read);
    const auto records = csv_records(exported(*db, {1, 2, 3, 4}, export_summary_csv));
    ASSERT_EQ(records.size(), 4u);
    const auto& with = records[0];
    EXPECT_EQ(with.at("method"), "snapkv(window=32,kernel=7)+pyramid");
    EXPECT_EQ(with.at("budget"), "50%");
    EXPECT_EQ(with.at("status"), "ok");
    EXPECT_EQ(with.at("steps"), std::to_string(kTexts.size()));
    EXPECT_EQ(with.at("token_match"), "0.75");
    EXPECT_EQ(with.at("mean_kl"), "0.125");
    EXPECT_EQ(with.at("kv_fraction"), "0.25");
    EXPECT_EQ(std::stod(with.at("policy_share")), 0.02 / (0.01 + 0.1));
    EXPECT_EQ(std::stod(with.at("decode_tokens_per_second")), 5 / 0.1);
    EXPECT_EQ(with.at("model"), "/models/tiny, \"v2\".gguf");
    EXPECT_EQ(with.at("seed"), "18446744073709551615");
    EXPECT_EQ(records[1].at("mean_kl"), "") << "no reference: not measured";
    EXPECT_EQ(records[1].at("kv_bytes"), "4096");
    EXPECT_EQ(records[2].at("error"), "plugin faulty: score: \"boom\", at step 2");
    EXPECT_EQ(records[3].at("status"), "unfinished");
    EXPECT_EQ(records[3].at("kv_bytes"), "") << "an unfinished run has no summary";
}

// ---- Chrome trace ---------------------------------------------------------------------

int64_t ns(const Json& microseconds) { return std::llround(microseconds.get<double>() * 1000); } // as Perfetto reads it

// The fields each event type needs (Trace Event Format; STYLE.md has what Perfetto reads).
void check_event(const Json& e) {
    SCOPED_TRACE(e.dump());
    ASSERT_TRUE(e.is_object());
    ASSERT_TRUE(e.contains("ph") && e["ph"].is_string() && e["ph"].get<std::string>().size() == 1);
    ASSERT_TRUE(e.contains("name") && e["name"].is_string());
    ASSERT_TRUE(e.contains("pid") && e["pid"].is_number_integer());
    ASSERT_TRUE(e.contains("tid") && e["tid"].is_number_integer());
    ASSERT_TRUE(e.contains("args") && e["args"].is_object());
    const std::string ph = e["ph"];
    if (ph == "X") {
        ASSERT_TRUE(e["ts"].is_number() && e["dur"].is_number());
        EXPECT_GE(e["ts"].get<double>(), 0);
        EXPECT_GT(e["dur"].get<double>(), 0);
    } else if (ph == "C") {
        ASSERT_TRUE(e["ts"].is_number());
        ASSERT_EQ(e["args"].size(), 1u) << "one series per counter";
        for (const Json& value : e["args"]) EXPECT_TRUE(value.is_number());
    } else if (ph == "M") {
        const std::string name = e["name"];
        if (name == "process_name" || name == "thread_name") EXPECT_TRUE(e["args"]["name"].is_string());
        else if (name == "process_labels") EXPECT_TRUE(e["args"]["labels"].is_string());
        else if (name == "process_sort_index" || name == "thread_sort_index")
            EXPECT_TRUE(e["args"]["sort_index"].is_number_integer());
        else ADD_FAILURE() << "unknown metadata event";
    } else {
        ADD_FAILURE() << "phase " << ph << " is not one this export writes";
    }
}

TEST(ExportTrace, EventsHaveTheirRequiredFieldsAndSlicesNeverOverlapOnATrack) {
    const std::string path = make_sessions("trace");
    auto db = open_session_db(path, SessionAccess::read);
    const Json trace = Json::parse(exported(*db, {1, 2, 4}, export_trace));
    ASSERT_TRUE(trace["traceEvents"].is_array());
    EXPECT_EQ(trace["displayTimeUnit"], "ms");

    std::map<std::pair<int64_t, int64_t>, int64_t> track_end;      // (pid, tid) -> where its last slice ended
    std::map<std::pair<int64_t, std::string>, int64_t> counter_at; // (pid, counter) -> its last time
    std::map<std::pair<int64_t, int64_t>, std::string> thread_names;
    std::map<int64_t, std::string> process_names;
    std::map<std::string, int64_t> slice_ns, counters;
    for (const Json& e : trace["traceEvents"]) {
        check_event(e);
        const std::string ph = e["ph"], name = e["name"];
        const int64_t pid = e["pid"], tid = e["tid"];
        if (ph == "M" && name == "process_name") process_names[pid] = e["args"]["name"];
        if (ph == "M" && name == "thread_name") thread_names[{pid, tid}] = e["args"]["name"];
        if (ph == "X") {
            EXPECT_TRUE(thread_names.count({pid, tid})) << "a slice on a track named later, or never: " << e.dump();
            const auto [end, fresh] = track_end.try_emplace({pid, tid}, 0);
            EXPECT_GE(ns(e["ts"]), end->second) << "overlaps the slice before it: " << e.dump();
            end->second = ns(e["ts"]) + ns(e["dur"]);
            if (pid == 1) slice_ns[name] += ns(e["dur"]);
        }
        if (ph == "C") {
            const auto [at, fresh] = counter_at.try_emplace({pid, name}, 0);
            EXPECT_GE(ns(e["ts"]), at->second) << "counter time goes back: " << e.dump();
            at->second = ns(e["ts"]);
            counters[std::to_string(pid) + " " + name] += 1;
        }
    }
    EXPECT_EQ(process_names.size(), 3u);
    EXPECT_EQ(process_names[1], "run 1: snapkv(window=32,kernel=7)+pyramid @ 50%");
    EXPECT_EQ((thread_names[{1, 2}]), "forward");
    EXPECT_EQ((thread_names[{1, 3}]), "policy");
    // The stored seconds, laid end to end: prefill, decode, policy, and the whole run.
    EXPECT_EQ(slice_ns["prefill"], 12345679);
    EXPECT_EQ(slice_ns["decode"], 5 * 1000000 + 1500);
    EXPECT_EQ(slice_ns["policy"], 3 * 250000);
    EXPECT_EQ(slice_ns[process_names[1].substr(7)], 12345679 + 5001500 + 750000);
    EXPECT_EQ((track_end[{1, 1}]), std::max(track_end[{1, 2}], track_end[{1, 3}]));
    const int64_t n = int64_t(kTexts.size());
    EXPECT_EQ(counters["1 KV"], n);
    EXPECT_EQ(counters["1 reference KV"], n);
    EXPECT_EQ(counters["1 KL"], n);
    EXPECT_EQ(counters["1 top-1"], n);
    EXPECT_EQ(counters["1 decode"], n - 1);
    EXPECT_EQ(counters["2 KV"], n);
    EXPECT_EQ(counters["2 KL"], 0) << "no reference, no fidelity";
    EXPECT_EQ(counters["2 reference KV"], 0);
}

// ---- files and errors -----------------------------------------------------------------

TEST(ExportFile, IsWrittenAllOrNothing) {
    const std::string dir = scratch("file");
    const std::string path = dir + "/out.json";
    std::ofstream(path) << "the previous export";
    expect_error(
        [&] {
            write_file_atomically(path, [](std::ostream& out) {
                out << "half of it";
                throw Error("s.db", "run 9", "no such run");
            });
        },
        {"run 9"});
    EXPECT_EQ(slurp(path), "the previous export");
    write_file_atomically(path, [](std::ostream& out) { out << "new"; });
    EXPECT_EQ(slurp(path), "new");
    const std::string missing = dir + "/no/such/folder/out.json";
    expect_error([&] { write_file_atomically(missing, [](std::ostream& out) { out << "x"; }); },
                 {missing + ": export: cannot be written"});
    expect_error([&] { write_file_atomically(dir, [](std::ostream&) {}); }, {dir + ": export: cannot be written"});
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1) << "a temporary file was left behind";
}

TEST(ExportFile, UnknownRunIsAnErrorNamingTheDatabaseAndTheRun) {
    const std::string path = make_sessions("unknown");
    auto db = open_session_db(path, SessionAccess::read);
    for (auto format : {export_json, export_steps_csv, export_summary_csv, export_trace})
        expect_error([&] { exported(*db, {1, 99}, format); }, {path + ": run 99: no such run"});
}

// ---- the commands ---------------------------------------------------------------------

struct Outcome {
    int status;
    std::string out, err;
};

Outcome kvscope(const std::string& args, const std::string& dir) {
    const int status = test::run(std::string(KVSCOPE_EXE) + " " + args + " > " + dir + "/out 2> " + dir + "/err");
    return {status, slurp(dir + "/out"), slurp(dir + "/err")};
}

TEST(ExportCommand, ExportsImportsAndFailsWithOneLine) {
    const std::string db = make_sessions("command");
    const std::string dir = scratch("command_files");
    const std::string copy = dir + "/copy.db";
    EXPECT_EQ(kvscope("export 1 2 --format json --out " + dir + "/a.json --db " + db, dir).status, 0);
    const Outcome imported = kvscope("sessions import " + dir + "/a.json --db " + copy, dir);
    EXPECT_EQ(imported.status, 0) << imported.err;
    EXPECT_EQ(imported.out, "imported run 1: snapkv(window=32,kernel=7)+pyramid\nimported run 2: h2o\n");
    EXPECT_EQ(kvscope("export --comparison 'compare text, runs 1-2' --format json --out " + dir + "/b.json --db " + copy,
                      dir)
                  .status,
              0);
    EXPECT_EQ(slurp(dir + "/b.json"), slurp(dir + "/a.json"));
    const Outcome trace = kvscope("export 1 --format trace --out " + dir + "/t.json --db " + db, dir);
    EXPECT_EQ(trace.err, "exported 1 run to " + dir + "/t.json\n");

    // Each a second of start-up: the rest of the errors are the library's, tested above.
    const std::vector<std::pair<std::string, std::string>> failures = {
        {"export 1 99 --format json --out " + dir + "/c.json --db " + db, db + ": run 99: no such run"},
        {"export 1 --format csv --out " + dir + "/none/c.csv --db " + db, dir + "/none/c.csv: export: cannot be written"},
        {"export --comparison nope --format csv --out " + dir + "/c.csv --db " + db, "comparison \"nope\": no such"},
    };
    for (const auto& [args, message] : failures) {
        const Outcome o = kvscope(args, dir);
        EXPECT_EQ(o.status, 1) << args;
        EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
        EXPECT_TRUE(holds(o.err, "kvscope: error: ") && holds(o.err, message)) << o.err;
    }
    EXPECT_FALSE(std::filesystem::exists(dir + "/c.json"));
    EXPECT_FALSE(std::filesystem::exists(dir + "/c.csv"));
}

} // namespace
} // namespace kvscope
