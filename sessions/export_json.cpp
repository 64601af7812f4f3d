// [SECTION] export: a run as JSON, one line per step
// [SECTION] import: reading a document back, every field checked
// [SECTION] import: storing the runs, all in one transaction
#include "sessions/export.h"

#include "core/error.h"
#include "core/policy.h"
#include "core/utf8.h"
#include "sessions/attention_blob.h"
#include "sessions/base64.h"
#include "sessions/queries.h"
#include "sessions/run_rows.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <ostream>

namespace kvscope {

namespace {

using Json = nlohmann::ordered_json; // keys in the order written: the bytes are the format

constexpr const char* kFormat = "kvscope-runs";
constexpr int64_t kVersion = 4; // 2: uuid, task, answer, sweep, cell (schema version 3); 3: a step's
                                // reference_kv_bytes (schema version 4); 4: a step's attention rows

// ---- [SECTION] export -----------------------------------------------------------------

std::string to_hex(std::string_view bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (char c : bytes) out.append({digits[uint8_t(c) >> 4], digits[uint8_t(c) & 15]});
    return out;
}

// Text as UTF-8 under `key`, and its exact bytes under `key`_hex when they are not UTF-8.
void put_text(Json& object, const std::string& key, std::string_view bytes) {
    object[key] = valid_utf8(bytes);
    if (find_invalid_utf8(bytes) != std::string_view::npos) object[key + "_hex"] = to_hex(bytes);
}

// Empty text (an unfinished run's end, a run without error) is null.
void put_text_or_null(Json& object, const std::string& key, std::string_view bytes) {
    if (bytes.empty()) object[key] = nullptr;
    else put_text(object, key, bytes);
}

// JSON has no infinity (nlohmann would write null); SQLite stores no NaN.
Json number(double value) {
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    return value;
}

Json measured(bool is_measured, double value) { return is_measured ? number(value) : Json(nullptr); }

// The summary's columns as bind_summary() stores them: null where it stores NULL.
Json summary_json(const RunSummary& s) {
    const bool ref = s.has_reference;
    return Json{{"has_reference", ref},
                {"n_steps", s.n_steps},
                {"token_match", measured(ref && s.token_match >= 0, s.token_match)},
                {"first_divergence", ref && s.first_divergence >= 0 ? Json(s.first_divergence) : Json(nullptr)},
                {"mean_kl", measured(ref, s.mean_kl)},
                {"max_kl", measured(ref, s.max_kl)},
                {"top1", measured(ref, s.top1)},
                {"ppl_method", measured(ref, s.ppl_method)},
                {"ppl_reference", measured(ref, s.ppl_reference)},
                {"kv_bytes", s.kv_bytes},
                {"peak_kv_bytes", s.peak_kv_bytes},
                {"reference_kv_bytes", ref ? Json(s.reference_kv_bytes) : Json(nullptr)},
                {"final_context", s.final_context},
                {"prefill_seconds", number(s.prefill_seconds)},
                {"decode_seconds", number(s.decode_seconds)},
                {"policy_seconds", number(s.policy_seconds)}};
}

Json run_json(const StoredRun& run, const std::vector<std::string>& comparisons) {
    const RunRecord& r = run.record;
    Json j = Json::object();
    j["uuid"] = r.uuid;
    put_text(j, "model_path", r.model_path);
    put_text(j, "model_hash", r.model_hash);
    put_text(j, "method", r.method);
    put_text(j, "budget", r.budget);
    put_text(j, "prompt_text", r.prompt_text);
    j["prompt_tokens"] = r.prompt_tokens;
    j["seed"] = r.seed;
    put_text(j, "device", r.device);
    put_text(j, "dtype", r.dtype);
    put_text_or_null(j, "task", r.task);
    put_text_or_null(j, "answer", r.answer);
    put_text_or_null(j, "sweep", r.sweep);
    put_text_or_null(j, "cell", r.cell);
    put_text(j, "build_version", run.build_version);
    put_text(j, "started_at", run.started_at);
    put_text_or_null(j, "ended_at", run.ended_at);
    put_text(j, "status", run.status);
    put_text_or_null(j, "error", run.error);
    j["summary"] = run.summary ? summary_json(*run.summary) : Json(nullptr);
    j["comparisons"] = comparisons;
    return j;
}

// A step's attention samples: their shape, and the [n_layer][n_head][n_keys] values as the
// database's blob (zlib over float32 little-endian, sessions/attention_blob.h) in base64.
Json attention_json(const AttentionStep& a) {
    return Json{{"n_layer", a.n_layer},
                {"n_head", a.n_head},
                {"n_keys", a.n_keys},
                {"key_stride", a.key_stride},
                {"zlib_float32_base64", base64_encode(encode_attention(a.mass.data(), a.mass.size()))}};
}

Json decision_json(const Decision& d) {
    return Json{{"layer", d.layer}, {"head", d.head}, {"kept", d.kept}, {"evicted", d.evicted}};
}

Json step_json(const StoredStep& s) {
    const StepEvent& e = s.event;
    const bool ref = e.reference_token >= 0;
    Json j{{"step", e.step}, {"token", e.token}};
    put_text(j, "text", s.text);
    j["logprob"] = number(e.logprob);
    j["reference_token"] = ref ? Json(e.reference_token) : Json(nullptr);
    j["reference_logprob"] = measured(ref, e.reference_logprob);
    j["kl"] = measured(ref, e.kl);
    j["top1"] = ref ? Json(e.top1) : Json(nullptr);
    j["match"] = ref ? Json(e.token == e.reference_token) : Json(nullptr); // derived: import ignores it
    j["kv_bytes"] = e.kv_bytes;
    j["reference_kv_bytes"] = e.reference_kv_bytes >= 0 ? Json(e.reference_kv_bytes) : Json(nullptr);
    j["kv_slots"] = e.kv_slots;
    j["step_seconds"] = number(e.step_seconds);
    j["policy_seconds"] = number(e.policy_seconds);
    return j;
}

// The run's object with its steps spliced in one per line, so that a long run stays
// readable and diffable line by line.
void write_run(sql::Connection& db, const StoredRun& run, std::ostream& out) {
    std::string head = run_json(run, run_comparisons(db, run.id)).dump();
    head.back() = ','; // the object goes on with its steps
    out << head << "\"steps\":[";
    const std::vector<int64_t> with_decisions = steps_with_decisions(db, run.id);
    const std::vector<AttentionStep> attention = load_attention(db, run.id); // in step order, as the steps
    auto next_attention = attention.begin();
    const char* separator = "\n";
    for (const StoredStep& s : load_steps(db, run.id)) {
        Json step = step_json(s);
        if (std::binary_search(with_decisions.begin(), with_decisions.end(), s.event.step)) {
            step["decisions"] = Json::array();
            for (const Decision& d : load_decisions(db, run.id, s.event.step)) step["decisions"].push_back(decision_json(d));
        }
        while (next_attention != attention.end() && next_attention->step < s.event.step) ++next_attention;
        if (next_attention != attention.end() && next_attention->step == s.event.step)
            step["attention"] = attention_json(*next_attention);
        out << separator << step.dump();
        separator = ",\n";
    }
    out << "\n]}";
}

} // namespace

void export_json(sql::Connection& db, const std::vector<int64_t>& runs, std::ostream& out) {
    out << R"({"format":")" << kFormat << R"(","version":)" << kVersion << R"(,"runs":[)";
    const char* separator = "\n";
    for (int64_t id : runs) {
        out << separator;
        write_run(db, load_run(db, id), out);
        separator = ",\n";
    }
    out << "\n]}\n";
}

namespace {

// ---- [SECTION] import: reading --------------------------------------------------------

// A value of the document with its path ("runs[2].steps[5].token") for errors that name
// the file (`where`) and the field.
class Node {
public:
    Node(const Json& json, std::string path, const std::string& where)
        : json_(json), path_(std::move(path)), where_(where) {}

    Node operator[](const std::string& key) const {
        if (!json_.is_object()) fail("is not an object");
        const auto it = json_.find(key);
        if (it == json_.end()) throw Error(where_, child(key), "is missing");
        return Node(*it, child(key), where_);
    }
    bool has(const std::string& key) const { return json_.contains(key); }
    bool is_null() const { return json_.is_null(); }

    std::vector<Node> items() const {
        if (!json_.is_array()) fail("is not an array");
        std::vector<Node> out;
        for (size_t i = 0; i < json_.size(); ++i) out.emplace_back(json_[i], path_ + "[" + std::to_string(i) + "]", where_);
        return out;
    }

    int64_t integer(int64_t lo, int64_t hi) const {
        const bool fits = json_.is_number_integer() &&
                          (!json_.is_number_unsigned() || json_.get<uint64_t>() <= uint64_t(hi));
        if (!fits || json_.get<int64_t>() < lo || json_.get<int64_t>() > hi)
            fail("is not an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
        return json_.get<int64_t>();
    }
    int64_t count() const { return integer(0, std::numeric_limits<int64_t>::max()); }
    int32_t int32(int64_t lo = std::numeric_limits<int32_t>::min()) const {
        return int32_t(integer(lo, std::numeric_limits<int32_t>::max()));
    }
    uint64_t unsigned64() const {
        if (!json_.is_number_unsigned()) fail("is not an unsigned 64-bit integer");
        return json_.get<uint64_t>();
    }
    double real() const {
        if (json_.is_number()) return json_.get<double>();
        if (json_ == "inf" || json_ == "-inf") return json_ == "inf" ? HUGE_VAL : -HUGE_VAL;
        fail("is not a number");
    }
    bool boolean() const {
        if (!json_.is_boolean()) fail("is not true or false");
        return json_.get<bool>();
    }
    std::string string() const {
        if (!json_.is_string()) fail("is not a string");
        return json_.get<std::string>();
    }

    [[noreturn]] void fail(const std::string& what) const { throw Error(where_, path_, what); }

private:
    std::string child(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

    const Json& json_;
    std::string path_;
    const std::string& where_;
};

std::string from_hex(const Node& node) {
    const std::string hex = node.string();
    if (hex.size() % 2 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
        node.fail("is not lowercase hex bytes");
    std::string out;
    for (size_t i = 0; i < hex.size(); i += 2) out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
    return out;
}

// put_text()'s inverse: the exact bytes when given, else the text.
std::string text(const Node& object, const std::string& key) {
    return object.has(key + "_hex") ? from_hex(object[key + "_hex"]) : object[key].string();
}

std::string text_or_empty(const Node& object, const std::string& key) {
    return object[key].is_null() ? "" : text(object, key);
}

// measured()'s inverse: `otherwise` for null.
double real_or(const Node& value, double otherwise) { return value.is_null() ? otherwise : value.real(); }

// Increasing, non-negative positions: what the decision blob can hold.
std::vector<int32_t> positions(const Node& list) {
    std::vector<int32_t> out;
    for (const Node& p : list.items()) {
        out.push_back(p.int32(out.empty() ? 0 : int64_t(out.back()) + 1));
    }
    return out;
}

std::vector<Decision> read_decisions(const Node& list) {
    std::vector<Decision> out;
    for (const Node& d : list.items())
        out.push_back(Decision{d["layer"].int32(0), d["head"].int32(0), positions(d["kept"]), positions(d["evicted"])});
    return out;
}

// attention_json()'s inverse, its blob checked to hold exactly the shape's values.
AttentionStep read_attention(const Node& j, int64_t step) {
    AttentionStep a;
    a.step = step;
    a.n_layer = j["n_layer"].int32(1), a.n_head = j["n_head"].int32(1), a.n_keys = j["n_keys"].int32(1);
    a.key_stride = j["key_stride"].int32(1);
    const Node blob = j["zlib_float32_base64"];
    const double count = double(a.n_layer) * double(a.n_head) * double(a.n_keys);
    if (count > double(1 << 28)) j.fail("has a shape of over 2^28 values");
    const std::optional<std::string> bytes = base64_decode(blob.string());
    if (!bytes) blob.fail("is not base64");
    try {
        a.mass = decode_attention(*bytes, size_t(count), "the document");
    } catch (const std::exception& e) {
        blob.fail(std::string("does not hold the shape's values: ") + e.what());
    }
    return a;
}

struct ImportedStep {
    StoredStep step;
    std::optional<std::vector<Decision>> decisions; // present in the document, even if empty
    std::optional<AttentionStep> attention;
};

struct ImportedRun {
    StoredRun run;
    std::vector<std::string> comparisons;
    std::vector<ImportedStep> steps;
};

ImportedStep read_step(const Node& j, int64_t min_step, int64_t version) {
    ImportedStep out;
    StepEvent& e = out.step.event;
    e.step = j["step"].integer(min_step, std::numeric_limits<int64_t>::max());
    e.token = j["token"].int32();
    out.step.text = text(j, "text");
    e.logprob = j["logprob"].real();
    if (!j["reference_token"].is_null()) { // without a reference the engine sends kl 0, top1 true
        e.reference_token = j["reference_token"].int32(0);
        e.reference_logprob = j["reference_logprob"].real();
        e.kl = j["kl"].real();
        e.top1 = j["top1"].boolean();
    }
    e.kv_bytes = j["kv_bytes"].count();
    if (version >= 3 && !j["reference_kv_bytes"].is_null()) e.reference_kv_bytes = j["reference_kv_bytes"].count();
    e.kv_slots = j["kv_slots"].count();
    e.step_seconds = j["step_seconds"].real();
    e.policy_seconds = j["policy_seconds"].real();
    if (j.has("decisions")) out.decisions = read_decisions(j["decisions"]);
    if (version >= 4 && j.has("attention")) out.attention = read_attention(j["attention"], e.step);
    return out;
}

RunSummary read_summary(const Node& j) {
    RunSummary s;
    s.has_reference = j["has_reference"].boolean();
    s.n_steps = j["n_steps"].count();
    s.token_match = real_or(j["token_match"], -1);
    s.first_divergence = j["first_divergence"].is_null() ? -1 : j["first_divergence"].count();
    s.mean_kl = real_or(j["mean_kl"], 0);
    s.max_kl = real_or(j["max_kl"], 0);
    s.top1 = real_or(j["top1"], 0);
    s.ppl_method = real_or(j["ppl_method"], 0);
    s.ppl_reference = real_or(j["ppl_reference"], 0);
    s.kv_bytes = j["kv_bytes"].count();
    s.peak_kv_bytes = j["peak_kv_bytes"].count();
    s.reference_kv_bytes = j["reference_kv_bytes"].is_null() ? 0 : j["reference_kv_bytes"].count();
    s.final_context = j["final_context"].count();
    s.prefill_seconds = j["prefill_seconds"].real();
    s.decode_seconds = j["decode_seconds"].real();
    s.policy_seconds = j["policy_seconds"].real();
    return s;
}

// A run's identity as the schema keeps it: 32 lowercase hex digits.
std::string uuid(const Node& node) {
    const std::string id = node.string();
    if (id.size() != 32 || id.find_first_not_of("0123456789abcdef") != std::string::npos)
        node.fail("is not 32 lowercase hex digits");
    return id;
}

// Version 1 documents predate run identities, tasks and sweeps: their runs get a new uuid.
RunRecord read_record(const Node& j, int64_t version) {
    RunRecord r;
    r.uuid = version >= 2 ? uuid(j["uuid"]) : rows::new_run_uuid();
    r.model_path = text(j, "model_path");
    r.model_hash = text(j, "model_hash");
    r.method = text(j, "method");
    r.budget = text(j, "budget");
    r.prompt_text = text(j, "prompt_text");
    for (const Node& t : j["prompt_tokens"].items()) r.prompt_tokens.push_back(t.int32());
    r.seed = j["seed"].unsigned64();
    r.device = text(j, "device");
    r.dtype = text(j, "dtype");
    if (version >= 2) {
        r.task = text_or_empty(j, "task");
        r.answer = text_or_empty(j, "answer");
        r.sweep = text_or_empty(j, "sweep");
        r.cell = text_or_empty(j, "cell");
    }
    return r;
}

ImportedRun read_run(const Node& j, int64_t version) {
    ImportedRun out;
    StoredRun& run = out.run;
    run.record = read_record(j, version);
    run.build_version = text(j, "build_version");
    run.started_at = text(j, "started_at");
    run.ended_at = text_or_empty(j, "ended_at");
    run.status = text(j, "status");
    if (run.status != "unfinished" && run.status != "ok" && run.status != "failed")
        j["status"].fail("is not unfinished, ok or failed");
    run.error = text_or_empty(j, "error");
    if (!j["summary"].is_null()) run.summary = read_summary(j["summary"]);
    for (const Node& name : j["comparisons"].items()) out.comparisons.push_back(name.string());
    for (const Node& step : j["steps"].items())
        out.steps.push_back(read_step(step, out.steps.empty() ? 0 : out.steps.back().step.event.step + 1, version));
    return out;
}

std::vector<ImportedRun> read_document(const std::string& text, const std::string& where) {
    Json doc;
    try {
        doc = Json::parse(text);
    } catch (const Json::exception& e) { // parse_error, or out_of_range for a number too large
        const std::string what = e.what();
        throw Error(where, "JSON", what.substr(what.find(']') + 2)); // without nlohmann's "[json.exception...]"
    }
    const Node root(doc, "", where);
    if (!doc.is_object() || !root.has("format") || root["format"].string() != kFormat)
        throw Error(where, "format", std::string("is not a KVScope runs export (\"format\": \"") + kFormat + "\")");
    const int64_t version = root["version"].integer(1, std::numeric_limits<int64_t>::max());
    if (version > kVersion)
        throw Error(where, "version", "is newer than this build reads (" + std::to_string(kVersion) + ")");
    std::vector<ImportedRun> runs;
    for (const Node& run : root["runs"].items()) runs.push_back(read_run(run, version));
    return runs;
}

// ---- [SECTION] import: storing --------------------------------------------------------

int64_t store_run(sql::Connection& db, const ImportedRun& imported) {
    constexpr int kRunColumns = rows::kRecordColumnCount + 5 + rows::kSummaryColumnCount;
    const StoredRun& run = imported.run;
    sql::Statement q = db.prepare(std::string("INSERT INTO runs (") + rows::kRecordColumns +
                                      ", build_version, started_at, ended_at, status, error, " + rows::kSummaryColumns +
                                      ") VALUES (" + rows::placeholders(1, kRunColumns) + ")",
                                  "importing a run");
    rows::bind_record(q, 1, run.record);
    const int next = rows::kRecordColumnCount + 1;
    q.bind_text(next, run.build_version).bind_text(next + 1, run.started_at).bind_text(next + 3, run.status);
    if (!run.ended_at.empty()) q.bind_text(next + 2, run.ended_at);
    if (!run.error.empty()) q.bind_text(next + 4, run.error);
    if (run.summary) rows::bind_summary(q, next + 5, *run.summary);
    q.execute();
    return db.last_insert_id();
}

void store_steps(sql::Connection& db, int64_t run_id, const std::vector<ImportedStep>& steps) {
    sql::Statement step = rows::prepare_step(db);
    sql::Statement decisions = rows::prepare_decisions(db);
    sql::Statement attention = rows::prepare_attention(db);
    for (const ImportedStep& s : steps) {
        rows::insert_step(step, run_id, s.step.event, s.step.text);
        if (s.decisions) rows::insert_decisions(decisions, run_id, s.step.event.step, *s.decisions);
        if (s.attention) rows::insert_attention(attention, run_id, *s.attention);
    }
}

} // namespace

ImportResult import_json(sql::Connection& db, const std::string& text, const std::string& where) {
    const std::vector<ImportedRun> runs = read_document(text, where); // all checked before anything is stored
    sql::Transaction transaction(db, "importing runs from " + where);
    ImportResult result;
    for (const ImportedRun& run : runs) {
        if (const std::optional<int64_t> there = find_run(db, run.run.record.uuid)) {
            result.existing.push_back(*there);
            continue;
        }
        result.stored.push_back(store_run(db, run));
        store_steps(db, result.stored.back(), run.steps);
        for (const std::string& name : run.comparisons) add_to_comparison(db, name, result.stored.back());
    }
    transaction.commit();
    return result;
}

} // namespace kvscope
