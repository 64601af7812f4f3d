// The worker thread of the workbench (gui_worker.h). Everything that may be slow or may
// fail - the model, the plugins, the engine, the disk - happens here; the UI sees only
// what Publish() appends to the shared Snapshot.
// [SECTION] index: helpers · the thread and its jobs · model and plugins · runs · the
// session database · pausing · the observer · the public calls
#include "app/gui_worker.h"

#include "app/export_formats.h"
#include "core/attention_recorder.h"
#include "core/engine.h"
#include "core/error.h"
#include "core/head_roles.h"
#include "core/model.h"
#include "core/plugin_registry.h"
#include "core/policy.h"
#include "core/tasks.h"
#include "core/utf8.h"
#include "sessions/export.h"
#include "sessions/model_hash.h"
#include "sessions/queries.h"
#include "sessions/report.h"
#include "sessions/schema.h"
#include "sessions/writer.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>

namespace kvscope {

// ---- [SECTION] helpers
namespace {

// Thrown from the observer to end a run the user stopped (run_method reports it failed).
struct StopRequested : std::runtime_error {
    StopRequested() : std::runtime_error("stopped") {}
};

// A token as the views show it: control bytes as escapes, a partial UTF-8 sequence as hex.
std::string DisplayText(const Tokenizer& tok, int32_t id) {
    if (id < 0) return "";
    const std::string bytes = tok.token_bytes(id);
    if (find_invalid_utf8(bytes) != std::string::npos) {
        std::string hex;
        for (unsigned char c : bytes) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "<%02X>", c);
            hex += buf;
        }
        return hex;
    }
    std::string out;
    for (char c : bytes) out += c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : std::string(1, c);
    return out;
}

std::string ErrorText(const std::exception& e) {
    if (auto* c10 = dynamic_cast<const c10::Error*>(&e)) return std::string("libtorch: ") + c10->what_without_backtrace();
    return e.what();
}

std::vector<MethodSchema> Schemas(const PluginRegistry& registry) {
    std::vector<MethodSchema> out;
    for (const MethodRef& ref : registry.methods()) {
        MethodSchema m{ref.method->name, ref.method->family, ref.method->help ? ref.method->help : "", ref.plugin->name, {}};
        for (int32_t i = 0; i < ref.method->n_params; ++i) {
            const kvs_param_def& p = ref.method->params[i];
            m.params.push_back({p.type == KVS_PARAM_INT    ? ParamSchema::Int
                                : p.type == KVS_PARAM_BOOL ? ParamSchema::Bool
                                                           : ParamSchema::Float,
                                p.name, p.help ? p.help : "", p.default_value, p.min_value, p.max_value});
        }
        out.push_back(std::move(m));
    }
    return out;
}

std::vector<PluginInfo> Plugins(const PluginRegistry& registry) {
    std::vector<PluginInfo> out;
    for (const auto& p : registry.plugins())
        out.push_back({p->name, p->origin, p->descriptor->build_tag ? p->descriptor->build_tag : "",
                       int32_t(p->descriptor->abi_version), p->crash()});
    return out;
}

StoredRunRow ListRow(const StoredRun& r) {
    StoredRunRow row;
    row.id = r.id;
    row.method = r.record.method;
    row.budget = r.record.budget;
    row.task = r.record.task.empty() ? "prompt" : r.record.task;
    row.status = r.status;
    row.started_at = r.started_at.substr(0, 19);
    if (row.started_at.size() > 10) row.started_at[10] = ' ';
    row.model = std::filesystem::path(r.record.model_path).filename().string();
    row.prompt = valid_utf8(r.record.prompt_text);
    if (r.summary && r.summary->has_reference) row.token_match = r.summary->token_match;
    if (r.summary) row.kv_bytes = r.summary->kv_bytes;
    row.steps = r.stored_steps;
    return row;
}

RunView::Status StoredStatus(const StoredRun& r) {
    if (r.status == "ok") return RunView::Status::Done;
    if (r.status == "failed" && r.error != "stopped") return RunView::Status::Failed;
    return RunView::Status::Stopped; // stopped by the user, or its process died ('unfinished')
}
// A run's attention trace: at most this many equal bins of key positions per row, and the
// memory it may take before old steps are thinned (the UI holds a second copy).
constexpr int64_t kAttentionBins = 256;
constexpr size_t kAttentionBytes = size_t(32) << 20;

// A stored run's attention as its live trace held it: the rows are the steps the trace
// kept, so appending them again under the same cap gives the same rows, and the stride
// they share is the one it had reached (or a multiple, for a run of few steps).
AttentionTrace StoredTrace(const std::vector<AttentionStep>& stored) {
    if (stored.empty()) return {};
    const AttentionStep& first = stored.front();
    AttentionTrace t;
    t.n_layer = first.n_layer, t.n_head = first.n_head, t.bins = first.n_keys;
    t.n_positions = int64_t(first.n_keys) * first.key_stride;
    t.stride = 0;
    for (const AttentionStep& s : stored) t.stride = std::gcd(t.stride, int32_t(s.step));
    t.stride = std::max(1, t.stride);
    for (const AttentionStep& s : stored) t.Append(int32_t(s.step), s.mass.data(), kAttentionBytes);
    return t;
}

// The probe that defines `role` (head_roles.h): retrieval reads a needle (the middle
// depth's), induction and echo the repeat, the rest natural text.
const Probe* DefiningProbe(const std::vector<Probe>& probes, const std::string& role) {
    const Probe::Kind kind = role == "retrieval"                     ? Probe::Kind::needle
                             : role == "induction" || role == "echo" ? Probe::Kind::repeat
                                                                     : Probe::Kind::text;
    std::vector<const Probe*> of_kind;
    for (const Probe& p : probes)
        if (p.kind == kind && (kind != Probe::Kind::needle || p.name.rfind("needle depth", 0) == 0)) of_kind.push_back(&p);
    return of_kind.empty() ? nullptr : of_kind[of_kind.size() / 2];
}

// Thrown from the recorder's observer once the layer asked for is captured: the layers
// after it are not needed.
struct LayerCaptured {};

} // namespace

struct GuiWorker::Impl : RunObserver {
    ModelOptions model_options;
    std::vector<std::string> plugin_paths;
    std::unique_ptr<Model> model;
    std::unique_ptr<PluginRegistry> registry;

    std::mutex mu; // guards shared
    Snapshot shared;
    std::mutex queue_mu; // guards jobs and quit
    std::condition_variable wake;
    std::deque<std::function<void()>> jobs; // done in order on this thread
    bool quit = false;
    std::atomic<bool> stop{false};
    std::mutex pause_mu; // guards paused and steps_allowed
    std::condition_variable unpause;
    bool paused = false;
    int steps_allowed = 0;   // decode steps to take while paused
    size_t run = 0;          // index of the run in progress in shared.runs

    std::string db_path;
    std::unique_ptr<SessionWriter> writer; // null until the first run, and after a failure
    std::unique_ptr<sql::Connection> db;   // the browser's reads, deletes and exports
    std::optional<RunRecord> model_record; // the model's part of every stored run (its hash, once)
    HeadAttentionRequest head_request; // the latest head map asked for (head -1: none queued)
    bool record_attention = false;     // the run in progress's
    ProbeOptions probe_options;        // the head analysis's: the defaults, as `kvscope heads` uses
    std::vector<Probe> probes;         // made from them once per model
    std::string hash;                  // the model's, for the sessions database (made once per model)
    std::optional<HeadRoles> head_roles; // the analysis's, for head-aware methods
    std::thread thread;

    // Changes the shared snapshot under the lock, briefly.
    template <typename F>
    void Publish(F&& change) {
        std::lock_guard<std::mutex> lock(mu);
        change(shared);
        ++shared.version;
    }
    void AddError(const std::string& message) {
        Publish([&](Snapshot& s) { s.errors.push_back(message); });
    }

    // ---- [SECTION] the thread and its jobs
    void Post(std::function<void()> job) {
        {
            std::lock_guard<std::mutex> lock(queue_mu);
            jobs.push_back(std::move(job));
        }
        wake.notify_one();
    }

    void Main() {
        Publish([](Snapshot& s) {
            for (const ExportFormat& f : export_formats()) s.catalog.export_formats.push_back({f.name, f.what});
            ++s.catalog.version;
        });
        LoadPlugins();
        ListStoredRuns();
        Load(model_options); // without a model, the database and the plugins still work
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock<std::mutex> lock(queue_mu);
                wake.wait(lock, [&] { return quit || !jobs.empty(); });
                if (quit) return;
                job = std::move(jobs.front());
                jobs.pop_front();
            }
            try {
                job();
            } catch (const std::exception& e) { // each job reports its own; this is the last net
                AddError(ErrorText(e));
            }
        }
    }

    // ---- [SECTION] model and plugins
    // The built-in methods, then each plugin: one that fails to load is reported and skipped.
    void LoadPlugins() {
        registry = make_registry({});
        for (const std::string& path : plugin_paths) LoadPlugin(path);
        PublishPlugins();
    }

    void PublishPlugins() {
        Publish([&](Snapshot& s) {
            s.methods = Schemas(*registry);
            s.catalog.plugins = Plugins(*registry);
            ++s.catalog.plugin_loads;
            ++s.catalog.version;
        });
    }

    // Loads or reloads: only between runs (this thread's jobs run one at a time), so no
    // method instance of the old library is alive when the registry drops it.
    void LoadPlugin(const std::string& path) {
        try {
            registry->load(path);
        } catch (const std::exception& e) {
            Publish([&](Snapshot& s) {
                s.catalog.plugin_errors.push_back(ErrorText(e));
                s.errors.push_back("loading a plugin: " + ErrorText(e));
                ++s.catalog.version;
            });
        }
    }

    // Loads the model of `options` in place of the current one. The current one stays, and
    // stays shown, when the new one fails: a bad file costs one line in the banner.
    void Load(const ModelOptions& options) {
        const std::string path = model_path(options);
        ModelInfo before;
        Publish([&](Snapshot& s) {
            before = s.model;
            s.model = ModelInfo{};
            s.model.path = path;
        });
        try {
            std::unique_ptr<Model> loaded = load_model(options, [this](double fraction, const std::string& what) {
                Publish([&](Snapshot& s) { s.model.load_progress = fraction; s.model.load_stage = what; });
            });
            model = std::move(loaded);
            model_options = options;
            model_record.reset(); // the next stored run hashes the new model's files
            hash.clear(), probes.clear(), head_roles.reset(); // the last model's
            const ModelConfig& c = model->config();
            Publish([&](Snapshot& s) {
                const uint32_t revision = s.heads.revision;
                s.heads = HeadAnalysis{}; // the grid empties
                s.heads.revision = revision + 1;
                s.model.name = c.name;
                s.model.device = model->device().str();
                s.model.n_layer = int32_t(c.n_layer);
                s.model.n_head = int32_t(c.n_head);
                s.model.n_head_kv = int32_t(c.n_head_kv);
                s.model.ready = true;
            });
        } catch (const std::exception& e) {
            Publish([&](Snapshot& s) {
                if (model) s.model = before;
                else s.model.load_stage = "failed";
                s.errors.push_back("loading the model " + path + ": " + ErrorText(e));
            });
        }
    }

    // The prompt, forced continuation and step count the request asks for.
    TaskInstance Task(const RunRequest& r) {
        const Tokenizer& tok = model->tokenizer();
        if (r.source == PromptSource::Passkey) return passkey_task(tok, 400, 1, r.seed)[0];
        if (r.source == PromptSource::NaturalText) {
            const std::string path = assets_dir() + "/prompts/natural_text.txt";
            return text_task(tok, read_text_file(path, "task text"), path, 256, r.n_predict);
        }
        TaskInstance t;
        t.prompt = encode_prompt(tok, r.prompt, r.source == PromptSource::Chat);
        t.n_predict = r.n_predict;
        return t;
    }

    void SetStatus(RunView::Status status, const std::string& error = "") {
        Publish([&](Snapshot& s) {
            s.runs[run].status = status;
            s.runs[run].error = error;
            if (status == RunView::Status::Failed) s.errors.push_back("run #" + std::to_string(run + 1) + ": " + error);
        });
    }

    // ---- [SECTION] runs
    void Execute(const RunRequest& r) {
        stop = false;
        RunAndStore(r);
        SetPaused(false); // a pause belongs to the run it paused
        // A plugin that crashed in the run is off now: the plugin manager says so.
        Publish([&](Snapshot& s) {
            s.catalog.plugins = Plugins(*registry);
            ++s.catalog.version;
        });
    }

    void RunAndStore(const RunRequest& r) {
        Publish([&](Snapshot& s) {
            run = s.runs.size();
            RunView v;
            v.method = r.method;
            v.budget = r.budget;
            v.has_reference = r.reference;
            s.runs.push_back(std::move(v));
        });
        try {
            if (!model) throw Error("no model is loaded (see the banner)");
            RunOptions options;
            options.method = r.method;
            options.budget = Budget::parse(r.budget);
            options.seed = r.seed;
            // A bad spec fails before the reference runs; a head-aware method gets the profile first.
            if (Policy(resolve_method_spec(*registry, r.method), options.budget, 0).needs_head_roles()) {
                if (!head_roles) AnalyzeHeads(false);
                if (!head_roles) throw Error("method spec", r.method, "reads the model's head roles, and none could be had");
                options.head_roles = &*head_roles;
            }
            const TaskInstance task = Task(r);
            options.n_predict = task.forced.empty() ? task.n_predict : int64_t(task.forced.size());
            std::vector<std::string> prompt_text;
            for (int32_t id : task.prompt) prompt_text.push_back(DisplayText(model->tokenizer(), id));
            Publish([&](Snapshot& s) {
                s.runs[run].n_prompt = int64_t(task.prompt.size());
                s.runs[run].prompt_text = std::move(prompt_text);
            });
            ReferenceRun reference;
            options.stop_at_end_of_generation = r.stop_at_end;
            if (r.reference) RunReference(task, options.n_predict, r.stop_at_end, reference);
            record_attention = r.record_attention;
            StartTrace(int64_t(task.prompt.size()) + (r.reference ? int64_t(reference.tokens.size()) : options.n_predict));
            if (stop) return SetStatus(RunView::Status::Stopped);
            BeginStoring(r, task, options);
            SetStatus(RunView::Status::Running);
            RunSummary summary =
                run_method(*model, *registry, task.prompt, options, r.reference ? &reference : nullptr, this);
            if (stop && summary.status != "ok") summary.error = "stopped"; // as the database knows it
            Publish([&](Snapshot& s) { s.runs[run].method = summary.method; });
            EndStoring(summary);
            if (summary.status == "ok") SetStatus(RunView::Status::Done);
            else if (stop) SetStatus(RunView::Status::Stopped);
            else SetStatus(RunView::Status::Failed, summary.error);
        } catch (const std::exception& e) {
            SetStatus(RunView::Status::Failed, ErrorText(e));
        }
    }

    // ---- [SECTION] the session database
    // A failing database costs the run its record, never the run: the error goes to the
    // banner, the run goes on in memory, and the next run tries the database afresh.
    void DatabaseFailed(const std::string& doing, const std::exception& e) {
        writer.reset();
        db.reset();
        Publish([&](Snapshot& s) {
            s.catalog.db_error = ErrorText(e);
            s.errors.push_back(doing + ": " + ErrorText(e));
            ++s.catalog.version;
        });
    }

    // Stores the run's row as `kvscope run --db` does: the model's record, the method and
    // budget as given, the prompt (and the task's name and answer).
    void BeginStoring(const RunRequest& r, const TaskInstance& task, const RunOptions& options) {
        try {
            if (!writer) writer = std::make_unique<SessionWriter>(db_path);
            if (!model_record) model_record = model_run_record(*model, model_options);
            RunRecord record = *model_record;
            record.method = r.method;
            record.budget = options.budget.text();
            record.prompt_text = r.source == PromptSource::Chat || r.source == PromptSource::Plain ? r.prompt : "";
            record.prompt_tokens = task.prompt;
            record.seed = r.seed;
            record.task = r.source == PromptSource::Passkey ? "passkey" : task.name;
            record.answer = task.answer;
            const Tokenizer& tok = model->tokenizer();
            const int64_t id = writer->begin_run(record, [&tok](int32_t t) { return tok.token_bytes(t); });
            Publish([&](Snapshot& s) { s.runs[run].stored_id = id; });
        } catch (const std::exception& e) {
            DatabaseFailed("storing run #" + std::to_string(run + 1), e);
        }
    }

    void EndStoring(const RunSummary& summary) {
        if (!writer) return;
        try {
            writer->end_run(summary);
        } catch (const std::exception& e) {
            return DatabaseFailed("storing run #" + std::to_string(run + 1), e);
        }
        ListStoredRuns();
    }

    // The browser's connection, opened on first use: for writing (deletes) where it can be,
    // else for reading, so that a read-only database can still be browsed and exported.
    sql::Connection& Database() {
        if (db) return *db;
        try {
            db = open_session_db(db_path, SessionAccess::write);
        } catch (const std::exception&) {
            db = open_session_db(db_path, SessionAccess::read); // or the reason it cannot be read either
        }
        return *db;
    }

    void ListStoredRuns() {
        try {
            std::vector<StoredRunRow> rows;
            const bool stored_yet = db || std::filesystem::exists(db_path); // listing creates nothing
            if (stored_yet)
                for (const StoredRun& r : list_runs(Database())) rows.push_back(ListRow(r));
            Publish([&](Snapshot& s) {
                s.catalog.db_path = db_path;
                s.catalog.db_error.clear();
                s.catalog.stored_runs = std::move(rows);
                ++s.catalog.version;
            });
        } catch (const std::exception& e) {
            DatabaseFailed("reading the session database", e);
        }
    }

    // A stored run as the views show a live one: its steps, tokens, reference KV bytes,
    // evictions and attention.
    void OpenStoredRun(int64_t id) {
        try {
            sql::Connection& d = Database();
            const StoredRun stored = load_run(d, id);
            RunView v;
            v.method = stored.record.method;
            v.budget = stored.record.budget;
            v.status = StoredStatus(stored);
            v.error = stored.error;
            v.stored_id = id;
            v.opened = true;
            v.n_prompt = int64_t(stored.record.prompt_tokens.size());
            // Token text from the tokenizer when the run is the loaded model's, else as stored.
            const bool same_model = model && stored.record.model_path == model_path(model_options);
            const Tokenizer* tok = same_model ? &model->tokenizer() : nullptr;
            for (int32_t t : stored.record.prompt_tokens) v.prompt_text.push_back(tok ? DisplayText(*tok, t) : "");
            for (const StoredStep& st : load_steps(d, id)) {
                const StepEvent& ev = st.event;
                v.steps.push_back({ev.token, ev.reference_token, ev.kl, ev.top1, ev.kv_bytes, ev.step_seconds * 1e3,
                                   ev.policy_seconds * 1e3});
                v.token_text.push_back(tok ? DisplayText(*tok, ev.token) : valid_utf8(st.text));
                if (ev.reference_token >= 0) v.reference_text.push_back(tok ? DisplayText(*tok, ev.reference_token) : "");
                if (ev.reference_kv_bytes >= 0) v.reference_kv_bytes.push_back(ev.reference_kv_bytes);
            }
            v.has_reference = stored.summary ? stored.summary->has_reference : !v.reference_text.empty();
            v.reference_steps = int64_t(v.reference_text.size());
            for (int64_t step : steps_with_decisions(d, id))
                for (const Decision& dec : load_decisions(d, id, step))
                    for (int32_t pos : dec.evicted)
                        v.evictions.push_back({int32_t(step), int32_t(dec.layer), int32_t(dec.head), pos});
            v.attention = StoredTrace(load_attention(d, id));
            Publish([&](Snapshot& s) { s.runs.push_back(std::move(v)); });
        } catch (const std::exception& e) {
            AddError("opening stored run " + std::to_string(id) + ": " + ErrorText(e));
        }
    }

    // All or none, as `kvscope sessions delete` does.
    void DeleteStoredRuns(const std::vector<int64_t>& ids) {
        try {
            sql::Connection& d = Database();
            sql::Transaction transaction(d, "deleting runs");
            for (int64_t id : ids) delete_run(d, id);
            transaction.commit();
        } catch (const std::exception& e) {
            AddError("deleting runs: " + ErrorText(e));
        }
        Publish([&](Snapshot& s) {
            for (RunView& v : s.runs)
                if (std::find(ids.begin(), ids.end(), v.stored_id) != ids.end()) v.stored_id = -1;
        });
        ListStoredRuns();
    }

    // As `kvscope export` does: every run checked first, then the file written all or nothing.
    void Export(const ExportRequest& request) {
        std::string result;
        bool ok = false;
        try {
            if (request.runs.empty()) throw Error("choose the runs to export");
            if (request.path.empty()) throw Error("give the file to write");
            const ExportFormat& format = export_format_named(request.format);
            sql::Connection& d = Database();
            for (int64_t id : request.runs) load_run(d, id);
            format.write(d, request.runs, ReportOptions{}, request.path);
            result = "exported " + std::to_string(request.runs.size()) + " run" + (request.runs.size() == 1 ? "" : "s") +
                     " as " + request.format + " to " + request.path;
            ok = true;
        } catch (const std::exception& e) {
            result = "export failed: " + ErrorText(e);
        }
        Publish([&](Snapshot& s) {
            s.catalog.export_result = result;
            s.catalog.export_ok = ok;
            ++s.catalog.exports;
            ++s.catalog.version;
            if (!ok) s.errors.push_back(result);
        });
    }

    // ---- [SECTION] pausing
    void SetPaused(bool value) {
        {
            std::lock_guard<std::mutex> lock(pause_mu);
            paused = value;
            steps_allowed = 0;
        }
        unpause.notify_all();
        Publish([&](Snapshot& s) { s.paused = value; });
    }

    // On the engine's thread after each step: waits while paused, unless a step is allowed
    // or the run is stopped.
    void WaitWhilePaused() {
        std::unique_lock<std::mutex> lock(pause_mu);
        unpause.wait(lock, [&] { return !paused || steps_allowed > 0 || stop; });
        if (paused && steps_allowed > 0) --steps_allowed;
    }

    void RunReference(const TaskInstance& task, int64_t n_predict, bool stop_at_end, ReferenceRun& reference) {
        SetStatus(RunView::Status::Reference);
        Publish([&](Snapshot& s) { s.runs[run].reference_steps = n_predict; });
        ReferenceOptions ro;
        ro.n_predict = n_predict;
        ro.forced = task.forced;
        ro.stop_at_end_of_generation = stop_at_end;
        ro.record_future = true; // oracle methods need it; cheap at the workbench's lengths
        ro.stop = [this] { return bool(stop); };
        reference = run_reference(*model, task.prompt, ro);
        std::vector<std::string> text;
        for (int32_t id : reference.tokens) text.push_back(DisplayText(model->tokenizer(), id));
        const double step_ms =
            reference.tokens.size() > 1 ? 1e3 * reference.decode_seconds / double(reference.tokens.size() - 1) : 0;
        Publish([&](Snapshot& s) {
            s.runs[run].reference_text = std::move(text);
            s.runs[run].reference_kv_bytes = reference.kv_bytes;
            s.runs[run].reference_step_ms = step_ms;
            s.runs[run].reference_steps = int64_t(reference.tokens.size());
        });
    }

    void StartTrace(int64_t n_positions) {
        const ModelConfig& c = model->config();
        Publish([&](Snapshot& s) {
            AttentionTrace& t = s.runs[run].attention;
            t = AttentionTrace{};
            if (record_attention && n_positions > 0)
                t = AttentionTrace::Shaped(int32_t(c.n_layer), int32_t(c.n_head), n_positions, kAttentionBins);
        });
    }

    // ---- the head-role analysis
    void MakeProbes() {
        if (!probes.empty()) return;
        probe_options.text = probe_text();
        probes = make_probes(model->tokenizer(), probe_options);
    }

    const std::string& ModelHash() {
        if (hash.empty()) hash = model_hash(model_path(model_options));
        return hash;
    }

    // The profile stored for this model and probe set (by `kvscope heads`, or an earlier
    // analysis here) in the analysis' role order; none when absent or of another shape.
    std::optional<HeadRoles> StoredRoles() {
        if (!std::filesystem::exists(db_path)) return std::nullopt;
        const ModelConfig& c = model->config();
        std::optional<HeadRoles> stored = load_head_roles(Database(), ModelHash(), probe_options.describe());
        if (!stored || stored->n_layer != c.n_layer || stored->n_head != c.n_head) return std::nullopt;
        HeadRoles r = *stored;
        r.n_head_kv = c.n_head_kv;
        r.roles.clear(), r.scores.clear();
        for (const std::string& name : role_names()) {
            const auto it = std::find(stored->roles.begin(), stored->roles.end(), name);
            if (it == stored->roles.end()) return std::nullopt;
            r.roles.push_back(name);
            r.scores.push_back(stored->scores[size_t(it - stored->roles.begin())]);
        }
        return r;
    }

    void PublishHeads(const std::function<void(HeadAnalysis&)>& change) {
        Publish([&](Snapshot& s) {
            change(s.heads);
            ++s.heads.revision;
        });
    }

    // The scores stored for this model when there are (unless `fresh`), else analyzed on the
    // probes and stored as `kvscope heads` stores them, so that reports include them.
    void AnalyzeHeads(bool fresh) {
        PublishHeads([](HeadAnalysis& h) { h.status = HeadAnalysis::Status::Running, h.progress = 0, h.stage = "probes"; });
        try {
            MakeProbes();
            std::optional<HeadRoles> stored;
            std::string origin = "read from " + db_path;
            try {
                if (!fresh) stored = StoredRoles();
            } catch (const std::exception& e) {
                AddError("reading stored head roles: " + ErrorText(e)); // then analyze
            }
            HeadRoles roles = stored ? std::move(*stored) : HeadRoles{};
            if (!stored) {
                size_t done = 0;
                roles = analyze_heads(*model, probes, [&](const Probe& p) {
                    if (stop) throw StopRequested();
                    const double progress = double(done++) / double(probes.size());
                    PublishHeads([&](HeadAnalysis& h) { h.progress = progress, h.stage = p.name; });
                });
                origin = "analyzed now, stored in " + db_path;
                try {
                    store_head_roles(Database(), ModelHash(), probe_options.describe(), roles);
                } catch (const std::exception& e) {
                    origin = "analyzed now";
                    AddError("storing head roles: " + ErrorText(e));
                }
            }
            head_roles = roles;
            PublishHeads([&](HeadAnalysis& h) {
                h.status = HeadAnalysis::Status::Done, h.progress = 1, h.stage = origin;
                h.n_layer = int32_t(roles.n_layer), h.n_head = int32_t(roles.n_head), h.n_head_kv = int32_t(roles.n_head_kv);
                h.roles = roles.roles;
                h.scores.clear();
                for (const std::vector<double>& role : roles.scores) h.scores.emplace_back(role.begin(), role.end());
                h.layer_preference.assign(roles.layer_preference.begin(), roles.layer_preference.end());
            });
        } catch (const std::exception& e) {
            const std::string why = stop ? "stopped" : ErrorText(e);
            PublishHeads([&](HeadAnalysis& h) { h.status = HeadAnalysis::Status::Failed, h.stage = why; });
            if (!stop) AddError("head analysis: " + why);
        }
    }

    // One query head's attention on its role's probe: a prefill up to that layer with the
    // attention recorded densely, the head's T x T map copied out and max-pooled.
    void ShowHeadAttention(const HeadAttentionRequest& r) {
        PublishHeads([](HeadAnalysis& h) { h.map_pending = true; });
        AttentionMap map;
        try {
            MakeProbes();
            const ModelConfig& c = model->config();
            const Probe* probe = DefiningProbe(probes, r.role);
            if (!probe) throw Error("head attention", r.role, "no probe defines this role");
            if (int64_t(probe->tokens.size()) > c.n_ctx)
                throw Error("head attention", probe->name, "longer than the model's context");
            if (r.layer < 0 || r.layer >= c.n_layer || r.head < 0 || r.head >= c.n_head)
                throw Error("head attention", "L" + std::to_string(r.layer) + ".H" + std::to_string(r.head), "no such head");
            AttentionRecorder recorder(c, [&](int64_t layer, const at::Tensor& p) {
                if (layer != r.layer) return;
                const at::Tensor head = p[r.head].to(at::kCPU, at::kFloat).contiguous();
                const int64_t T = head.size(0), S = head.size(1);
                map.rows = int32_t(std::min(T, kMaxMapCells)), map.cols = int32_t(std::min(S, kMaxMapCells));
                map.cells = PoolMatrix(head.data_ptr<float>(), T, S, map.rows, map.cols, Pool::Max);
                map.n_query = T, map.n_key = S;
                throw LayerCaptured{};
            });
            try {
                model->forward(probe->tokens, recorder);
            } catch (const LayerCaptured&) {
            }
            map.layer = r.layer, map.head = r.head, map.role = r.role, map.probe = probe->name;
            for (int32_t id : probe->tokens) map.token_text.push_back(DisplayText(model->tokenizer(), id));
        } catch (const std::exception& e) {
            AddError("head attention: " + ErrorText(e));
        }
        PublishHeads([&](HeadAnalysis& h) {
            h.map_pending = false;
            if (!map.cells.empty()) h.map = std::move(map);
        });
    }

    // RunObserver, on this thread while run_method runs.

    // ---- [SECTION] the observer: on this thread while run_method runs; the writer first,
    // so a step the views show is already queued for the database.
    void on_step(const StepEvent& ev) override {
        if (writer) writer->on_step(ev);
        StepRow row{ev.token, ev.reference_token, ev.kl, ev.top1, ev.kv_bytes, ev.step_seconds * 1e3,
                    ev.policy_seconds * 1e3};
        std::string text = DisplayText(model->tokenizer(), ev.token);
        Publish([&](Snapshot& s) {
            s.runs[run].steps.push_back(row);
            s.runs[run].token_text.push_back(std::move(text));
        });
        WaitWhilePaused();
        if (stop) throw StopRequested();
    }
    void on_decisions(int64_t step, const std::vector<Decision>& decisions) override {
        if (writer) writer->on_decisions(step, decisions);
        std::vector<Eviction> evictions;
        for (const Decision& d : decisions)
            for (int32_t pos : d.evicted) evictions.push_back({int32_t(step), int32_t(d.layer), int32_t(d.head), pos});
        Publish([&](Snapshot& s) {
            auto& to = s.runs[run].evictions;
            to.insert(to.end(), evictions.begin(), evictions.end());
        });
    }
    bool wants_attention() const override { return record_attention; }
    // Sums each row's mass into position bins on the device: one small copy per step.
    void on_attention(int64_t step, const at::Tensor& mass, const at::Tensor& positions) override {
        AttentionTrace shape;
        {
            std::lock_guard<std::mutex> lock(mu);
            const AttentionTrace& t = shared.runs[run].attention;
            shape.n_layer = t.n_layer, shape.n_head = t.n_head, shape.bins = t.bins;
            shape.n_positions = t.n_positions, shape.stride = t.stride;
        }
        const int64_t L = mass.size(0), H = mass.size(1), R = mass.size(2), G = positions.size(1);
        if (shape.bins == 0 || step % shape.stride != 0 || L != shape.n_layer || H != shape.n_head || G == 0 ||
            H % G != 0 || positions.size(2) != R)
            return;
        const at::Tensor pos = positions.to(at::kLong).repeat_interleave(H / G, 1);
        const at::Tensor bin = pos.clamp_min(0).div(shape.key_stride(), "floor").clamp_max(shape.bins - 1);
        const at::Tensor binned = at::zeros({L, H, shape.bins}, mass.options().dtype(at::kFloat))
                                      .scatter_add_(2, bin, mass.to(at::kFloat).mul(pos.ge(0)))
                                      .to(at::kCPU)
                                      .contiguous();
        const float* data = binned.data_ptr<float>();
        bool thinned = false, appended = false;
        int32_t stride = 1;
        Publish([&](Snapshot& s) {
            AttentionTrace& t = s.runs[run].attention;
            const uint32_t generation = t.generation;
            t.Append(int32_t(step), data, kAttentionBytes);
            thinned = t.generation != generation;
            appended = !t.steps.empty() && t.steps.back() == step;
            stride = t.stride;
        });
        if (!writer) return;
        // The database holds what the trace keeps: its thinning, then the step's rows.
        if (thinned) writer->thin_attention(stride);
        if (appended)
            writer->on_attention_rows({step, shape.n_layer, shape.n_head, shape.bins, int32_t(shape.key_stride()),
                                       std::vector<float>(data, data + shape.row_size())});
    }
};

// ---- [SECTION] the public calls: the UI thread's side
GuiWorker::GuiWorker(const ModelOptions& model, const std::vector<std::string>& plugins, const std::string& db)
    : impl_(new Impl) {
    impl_->model_options = model;
    impl_->plugin_paths = plugins;
    impl_->db_path = db.empty() ? default_session_db_path() : db;
    impl_->thread = std::thread([this] { impl_->Main(); });
}

GuiWorker::~GuiWorker() {
    {
        std::lock_guard<std::mutex> lock(impl_->queue_mu);
        impl_->quit = true;
    }
    impl_->stop = true;
    impl_->wake.notify_one();
    impl_->unpause.notify_all();
    impl_->thread.join();
}

void GuiWorker::Run(const RunRequest& request) {
    impl_->Post([this, request] { impl_->Execute(request); });
}

void GuiWorker::AnalyzeHeads(bool fresh) {
    impl_->Post([this, fresh] { impl_->AnalyzeHeads(fresh); });
}

void GuiWorker::ShowHeadAttention(const HeadAttentionRequest& request) {
    // One job for any number of clicks before it starts: it maps the latest head asked for,
    // so clicking down a table does not queue a prefill per row.
    std::lock_guard<std::mutex> lock(impl_->queue_mu);
    const bool queued = impl_->head_request.head >= 0;
    impl_->head_request = request;
    if (queued) return;
    impl_->jobs.push_back([this] {
        HeadAttentionRequest latest;
        {
            std::lock_guard<std::mutex> lock(impl_->queue_mu);
            std::swap(latest, impl_->head_request);
        }
        impl_->ShowHeadAttention(latest);
    });
    impl_->wake.notify_one();
}

void GuiWorker::Stop() {
    impl_->stop = true;
    impl_->unpause.notify_all();
}

void GuiWorker::Pause(bool paused) { impl_->SetPaused(paused); }

void GuiWorker::Step() {
    {
        std::lock_guard<std::mutex> lock(impl_->pause_mu);
        ++impl_->steps_allowed;
    }
    impl_->unpause.notify_all();
}

void GuiWorker::RefreshStoredRuns() {
    impl_->Post([this] { impl_->ListStoredRuns(); });
}

void GuiWorker::OpenStoredRun(int64_t id) {
    impl_->Post([this, id] { impl_->OpenStoredRun(id); });
}

void GuiWorker::DeleteStoredRuns(const std::vector<int64_t>& ids) {
    impl_->Post([this, ids] { impl_->DeleteStoredRuns(ids); });
}

void GuiWorker::Export(const ExportRequest& request) {
    impl_->Post([this, request] { impl_->Export(request); });
}

void GuiWorker::LoadModel(const std::string& path) {
    impl_->Post([this, path] {
        ModelOptions options = impl_->model_options;
        options.model = path;
        impl_->Load(options);
    });
}

void GuiWorker::LoadPlugin(const std::string& path) {
    impl_->Post([this, path] {
        impl_->LoadPlugin(path);
        impl_->PublishPlugins();
    });
}

bool GuiWorker::Sync(Snapshot& ui) {
    std::unique_lock<std::mutex> lock(impl_->mu, std::try_to_lock);
    if (!lock) return false;
    SyncSnapshot(ui, impl_->shared);
    return true;
}

void GuiWorker::ReportError(const std::string& message) { impl_->AddError(message); }

} // namespace kvscope
