#include "views/snapshot.h"

namespace kvscope {

namespace {

template <typename T>
void extend(std::vector<T>& to, const std::vector<T>& from) {
    if (to.size() > from.size()) to.clear(); // not a prefix any more: start over
    to.insert(to.end(), from.begin() + std::ptrdiff_t(to.size()), from.end());
}

void sync_run(RunView& ui, const RunView& shared) {
    ui.status = shared.status;
    ui.method = shared.method;
    ui.budget = shared.budget;
    ui.error = shared.error;
    ui.n_prompt = shared.n_prompt;
    ui.has_reference = shared.has_reference;
    ui.stored_id = shared.stored_id;
    ui.opened = shared.opened;
    ui.reference_steps = shared.reference_steps;
    ui.reference_step_ms = shared.reference_step_ms;
    extend(ui.prompt_text, shared.prompt_text);
    extend(ui.steps, shared.steps);
    extend(ui.token_text, shared.token_text);
    extend(ui.reference_text, shared.reference_text);
    extend(ui.reference_kv_bytes, shared.reference_kv_bytes);
    extend(ui.evictions, shared.evictions);
}

} // namespace

void SyncSnapshot(Snapshot& ui, const Snapshot& shared) {
    if (ui.version == shared.version) return;
    ui.model = shared.model;
    if (ui.catalog.version != shared.catalog.version || ui.methods.size() != shared.methods.size()) {
        ui.methods = shared.methods;
        ui.catalog = shared.catalog;
    }
    ui.paused = shared.paused;
    ui.errors = shared.errors;
    ui.runs.resize(shared.runs.size());
    for (size_t i = 0; i < shared.runs.size(); ++i) sync_run(ui.runs[i], shared.runs[i]);
    ui.version = shared.version;
}

const char* StatusName(RunView::Status status) {
    switch (status) {
    case RunView::Status::Queued: return "queued";
    case RunView::Status::Reference: return "reference";
    case RunView::Status::Running: return "running";
    case RunView::Status::Done: return "done";
    case RunView::Status::Failed: return "failed";
    case RunView::Status::Stopped: return "stopped";
    }
    return "?";
}

} // namespace kvscope
