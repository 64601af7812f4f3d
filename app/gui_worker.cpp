// The worker thread of the workbench (gui_worker.h). Everything that may be slow or may
// fail - the model, the plugins, the engine, the disk - happens here; the UI sees only
// what Publish() appends to the shared Snapshot.
// [SECTION] index: helpers · the thread and its jobs · model and plugins · runs · the
// session database · pausing · the observer · the public calls
#include "app/gui_worker.h"

#include "app/export_formats.h"
#include "core/engine.h"
#include "core/error.h"
#include "core/model.h"
#include "core/plugin_registry.h"
#include "core/tasks.h"
#include "core/utf8.h"
#include "sessions/export.h"
#include "sessions/queries.h"
#include "sessions/report.h"
#include "sessions/schema.h"
#include "sessions/writer.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
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
                       int32_t(p->descriptor->abi_version)});
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
            const ModelConfig& c = model->config();
            Publish([&](Snapshot& s) {
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
            resolve_method_spec(*registry, r.method); // a bad spec fails before the reference runs
            const TaskInstance task = Task(r);
            options.n_predict = task.forced.empty() ? task.n_predict : int64_t(task.forced.size());
            std::vector<std::string> prompt_text;
            for (int32_t id : task.prompt) prompt_text.push_back(DisplayText(model->tokenizer(), id));
            Publish([&](Snapshot& s) {
                s.runs[run].n_prompt = int64_t(task.prompt.size());
                s.runs[run].prompt_text = std::move(prompt_text);
            });
            ReferenceRun reference;
            if (r.reference) RunReference(task, options.n_predict, reference);
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

    // A stored run as the views show a live one: its steps, tokens and evictions.
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
            }
            v.has_reference = stored.summary ? stored.summary->has_reference : !v.reference_text.empty();
            v.reference_steps = int64_t(v.reference_text.size());
            for (int64_t step : steps_with_decisions(d, id))
                for (const Decision& dec : load_decisions(d, id, step))
                    for (int32_t pos : dec.evicted)
                        v.evictions.push_back({int32_t(step), int32_t(dec.layer), int32_t(dec.head), pos});
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

    void RunReference(const TaskInstance& task, int64_t n_predict, ReferenceRun& reference) {
        SetStatus(RunView::Status::Reference);
        Publish([&](Snapshot& s) { s.runs[run].reference_steps = n_predict; });
        ReferenceOptions ro;
        ro.n_predict = n_predict;
        ro.forced = task.forced;
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
