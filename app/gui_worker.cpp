// The worker thread of the workbench (gui_worker.h). Everything that may be slow or may
// fail - the model, the plugins, the engine, the disk - happens here; the UI sees only
// what Publish() appends to the shared Snapshot.
#include "app/gui_worker.h"

#include "core/engine.h"
#include "core/error.h"
#include "core/model.h"
#include "core/plugin_registry.h"
#include "core/tasks.h"
#include "core/utf8.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

namespace kvscope {

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

} // namespace

struct GuiWorker::Impl : RunObserver {
    ModelOptions model_options;
    std::vector<std::string> plugin_paths;
    std::unique_ptr<Model> model;
    std::unique_ptr<PluginRegistry> registry;

    std::mutex mu; // guards shared
    Snapshot shared;
    std::mutex queue_mu; // guards queue and quit
    std::condition_variable wake;
    std::deque<RunRequest> queue;
    bool quit = false;
    std::atomic<bool> stop{false};
    size_t run = 0; // index of the run in progress in shared.runs
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

    void Main() {
        if (!Load()) return;
        for (;;) {
            RunRequest request;
            {
                std::unique_lock<std::mutex> lock(queue_mu);
                wake.wait(lock, [&] { return quit || !queue.empty(); });
                if (quit) return;
                request = queue.front();
                queue.pop_front();
            }
            stop = false;
            Execute(request);
        }
    }

    bool Load() {
        try {
            registry = make_registry(plugin_paths);
            Publish([&](Snapshot& s) { s.methods = Schemas(*registry); s.model.path = model_path(model_options); });
            model = load_model(model_options, [this](double fraction, const std::string& what) {
                Publish([&](Snapshot& s) { s.model.load_progress = fraction; s.model.load_stage = what; });
            });
            const ModelConfig& c = model->config();
            Publish([&](Snapshot& s) {
                s.model.name = c.name;
                s.model.device = model->device().str();
                s.model.n_layer = int32_t(c.n_layer);
                s.model.n_head = int32_t(c.n_head);
                s.model.n_head_kv = int32_t(c.n_head_kv);
                s.model.ready = true;
            });
            return true;
        } catch (const std::exception& e) {
            Publish([&](Snapshot& s) {
                s.model.load_stage = "failed";
                s.errors.push_back("loading the model: " + ErrorText(e));
            });
            return false;
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

    void Execute(const RunRequest& r) {
        Publish([&](Snapshot& s) {
            run = s.runs.size();
            RunView v;
            v.method = r.method;
            v.budget = r.budget;
            v.has_reference = r.reference;
            s.runs.push_back(std::move(v));
        });
        try {
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
            SetStatus(RunView::Status::Running);
            const RunSummary summary =
                run_method(*model, *registry, task.prompt, options, r.reference ? &reference : nullptr, this);
            Publish([&](Snapshot& s) { s.runs[run].method = summary.method; });
            if (summary.status == "ok") SetStatus(RunView::Status::Done);
            else if (stop) SetStatus(RunView::Status::Stopped);
            else SetStatus(RunView::Status::Failed, summary.error);
        } catch (const std::exception& e) {
            SetStatus(RunView::Status::Failed, ErrorText(e));
        }
    }

    void RunReference(const TaskInstance& task, int64_t n_predict, ReferenceRun& reference) {
        SetStatus(RunView::Status::Reference);
        Publish([&](Snapshot& s) { s.runs[run].reference_steps = n_predict; });
        ReferenceOptions ro;
        ro.n_predict = n_predict;
        ro.forced = task.forced;
        ro.record_future = true; // oracle methods need it; cheap at the workbench's lengths
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

    // RunObserver, on this thread while run_method runs.
    void on_step(const StepEvent& ev) override {
        StepRow row{ev.token, ev.reference_token, ev.kl, ev.top1, ev.kv_bytes, ev.step_seconds * 1e3,
                    ev.policy_seconds * 1e3};
        std::string text = DisplayText(model->tokenizer(), ev.token);
        Publish([&](Snapshot& s) {
            s.runs[run].steps.push_back(row);
            s.runs[run].token_text.push_back(std::move(text));
        });
        if (stop) throw StopRequested();
    }
    void on_decisions(int64_t step, const std::vector<Decision>& decisions) override {
        std::vector<Eviction> evictions;
        for (const Decision& d : decisions)
            for (int32_t pos : d.evicted) evictions.push_back({int32_t(step), int32_t(d.layer), int32_t(d.head), pos});
        Publish([&](Snapshot& s) {
            auto& to = s.runs[run].evictions;
            to.insert(to.end(), evictions.begin(), evictions.end());
        });
    }
};

GuiWorker::GuiWorker(const ModelOptions& model, const std::vector<std::string>& plugins) : impl_(new Impl) {
    impl_->model_options = model;
    impl_->plugin_paths = plugins;
    impl_->thread = std::thread([this] { impl_->Main(); });
}

GuiWorker::~GuiWorker() {
    {
        std::lock_guard<std::mutex> lock(impl_->queue_mu);
        impl_->quit = true;
    }
    impl_->stop = true;
    impl_->wake.notify_one();
    impl_->thread.join();
}

void GuiWorker::Run(const RunRequest& request) {
    {
        std::lock_guard<std::mutex> lock(impl_->queue_mu);
        impl_->queue.push_back(request);
    }
    impl_->wake.notify_one();
}

void GuiWorker::Stop() { impl_->stop = true; }

bool GuiWorker::Sync(Snapshot& ui) {
    std::unique_lock<std::mutex> lock(impl_->mu, std::try_to_lock);
    if (!lock) return false;
    SyncSnapshot(ui, impl_->shared);
    return true;
}

void GuiWorker::ReportError(const std::string& message) { impl_->AddError(message); }

} // namespace kvscope
