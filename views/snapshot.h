// What the views draw: a plain copy of the workbench's state (no tensors, no locks).
//
// The worker thread (app/gui_worker.cpp) fills a shared Snapshot as the engine's events
// arrive; the UI thread copies what is new into its own Snapshot once per frame and the
// views read only that copy. Every per-run list is append-only while the run is live, so
// the copy can take just the tail (SyncSnapshot).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvscope {

// One method parameter's schema (plugins/sdk/kvscope_plugin.h kvs_param_def).
struct ParamSchema {
    enum Type { Int, Float, Bool } type = Float;
    std::string name, help;
    double default_value = 0, min_value = 0, max_value = 0;
};

struct MethodSchema {
    std::string name, family, help, plugin; // family: "scorer" or "allocator"
    std::vector<ParamSchema> params;
};

// One decode step of a run (core/engine.h StepEvent, without its tensors' home).
struct StepRow {
    int32_t token = -1, reference_token = -1;
    double kl = 0;
    bool top1 = true;
    int64_t kv_bytes = 0;
    double step_ms = 0, policy_ms = 0;
};

// A position leaving the cache of one (layer, KV head) at a decode step.
struct Eviction {
    int32_t step = 0, layer = 0, head = 0, position = 0;
};

struct RunView {
    enum class Status { Queued, Reference, Running, Done, Failed, Stopped } status = Status::Queued;
    std::string method, budget, error;
    int64_t n_prompt = 0;
    std::vector<std::string> prompt_text;      // each prompt token's text
    std::vector<StepRow> steps;
    std::vector<std::string> token_text;       // each step's token as text
    std::vector<std::string> reference_text;   // the reference's token at each step
    std::vector<int64_t> reference_kv_bytes;   // after each reference step
    double reference_step_ms = 0;              // the reference's mean decode step
    std::vector<Eviction> evictions;           // in step order
    bool has_reference = false;
    int64_t reference_steps = 0;               // steps the reference will take (0: none)
    int64_t stored_id = -1;                    // its id in the session database (-1: not stored)
    bool opened = false;                       // opened from the database, not run here
    bool live() const { return status == Status::Queued || status == Status::Reference || status == Status::Running; }
};

struct ModelInfo {
    std::string path, name, device = "cpu";
    int32_t n_layer = 0, n_head = 0, n_head_kv = 0;
    double load_progress = 0; // 0..1
    std::string load_stage;
    bool ready = false;
};

// A run kept in the session database, as the session browser lists it.
struct StoredRunRow {
    int64_t id = 0;
    std::string method, budget, task, status, started_at, model, prompt;
    double token_match = -1; // fraction of steps matching the reference (-1: not measured)
    int64_t kv_bytes = -1;   // at the end (-1: unfinished)
    int64_t steps = 0;
};

// One loaded plugin, as the plugin manager lists it (its methods' schemas are in
// Snapshot::methods, under the plugin's name).
struct PluginInfo {
    std::string name, origin, build_tag; // origin: "built-in" or the .so's path
    int32_t abi_version = 0;
};

// An export format (app/export_formats.h): its name and what the file holds.
struct FormatInfo {
    std::string name, what;
};

// What the worker keeps besides the runs; `version` is bumped when any of it (or
// Snapshot::methods, after a plugin load) changes, so the UI copies it only then.
struct Catalog {
    std::vector<PluginInfo> plugins;
    std::vector<std::string> plugin_errors;  // loads that failed, oldest first
    int plugin_loads = 0;                    // load requests done (loaded or failed)
    std::string db_path, db_error;           // the session database; why it cannot be used
    std::vector<StoredRunRow> stored_runs;   // oldest first
    std::vector<FormatInfo> export_formats;
    std::string export_result;               // the last export: what was written, or why not
    bool export_ok = false;
    int exports = 0;                         // exports finished (written or failed)
    uint64_t version = 0;
};

struct Snapshot {
    ModelInfo model;
    std::vector<MethodSchema> methods;
    Catalog catalog;
    std::vector<RunView> runs;
    std::vector<std::string> errors; // for the banner, oldest first
    bool paused = false;             // the run in progress waits before its next decode step
    uint64_t version = 0;            // bumped on every change
};

// Brings `ui` up to `shared`: scalars copied, per-run lists extended by their new tail.
void SyncSnapshot(Snapshot& ui, const Snapshot& shared);

// The one selection every view reads and sets (UI.md: hover shows, click selects, Esc clears).
struct Selection {
    int run = -1;       // index into Snapshot::runs
    int step = -1;      // decode step
    int layer = 0, head = 0; // layer and KV head
    int position = -1;  // token position in the context
};

const char* StatusName(RunView::Status status);

} // namespace kvscope
