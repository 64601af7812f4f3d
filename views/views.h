// The workbench views: one file each (views/<name>_view.cpp), listed once in ViewTable().
// A view draws the UI thread's Snapshot copy and the shared Selection, and asks for work
// only through Commands; it never touches the engine, a tensor or the database.
#pragma once

#include "views/snapshot.h"

#include <imgui.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kvscope {

// Where a run's prompt comes from (the worker builds the task prompts with core/tasks.h).
enum class PromptSource { Chat, Plain, Passkey, NaturalText };

struct RunRequest {
    PromptSource source = PromptSource::Chat;
    std::string prompt;          // Chat and Plain
    std::string method = "full"; // a run spec (core/method_spec.h)
    std::string budget = "64";
    uint64_t seed = 0;
    bool reference = true;
    int64_t n_predict = 32;
    bool record_attention = true; // each decode step's attention, binned (AttentionTrace)
    bool stop_at_end = true;      // at the model's end-of-generation token (else all n_predict steps)
};

// One query head's attention on the probe that defines `role` (HeadAnalysis::map).
struct HeadAttentionRequest {
    int layer = -1, head = -1;
    std::string role;
};

// Stored runs written to a file by one of the export formats (app/export_formats.h).
struct ExportRequest {
    std::vector<int64_t> runs; // ids in the session database
    std::string format = "json";
    std::string path;
};

// What the views ask the app to do this frame; the worker does each in its turn, behind
// a run in progress.
struct Commands {
    bool run = false, stop = false;
    bool pause = false, step = false; // toggle pausing before the next decode step; one step while paused
    RunRequest request;
    bool refresh_runs = false;        // read the session database's run list again
    std::vector<int64_t> open_runs;   // stored runs to open into the views
    std::vector<int64_t> delete_runs; // from the session database
    bool export_runs = false;
    ExportRequest export_request;
    std::string load_plugin;          // load (or reload) the plugin at this path
    std::string load_model;           // an HF folder or a GGUF file, in place of the current model
    const char* show_view = nullptr;   // a tab view's name: its tab selected, or its window raised when popped out
    bool analyze_heads = false;        // score every head's role (stored scores when there are)
    bool fresh_analysis = false;       // on the probe suite, even when scores are stored
    HeadAttentionRequest head_attention; // when head >= 0
};

constexpr size_t kRecentModels = 8; // the model picker remembers this many

// The run setup's editable fields, owned by the app so that a script can fill them.
struct MethodStage {
    int method = -1;             // index into Snapshot::methods
    std::string name;            // its name: a plugin load can move it in the list
    std::vector<double> values;  // one per parameter
};
struct RunSetupState {
    std::string model_path;                 // the model picker's field
    std::vector<std::string> recent_models; // most recent first; kept in the ini file
    PromptSource source = PromptSource::Chat;
    std::string prompt = "What is the capital of France? Answer in one sentence.";
    std::vector<MethodStage> stages; // scorer first, then allocators
    int budget = 64;
    bool budget_fraction = false;    // budget is a percentage of the context
    int seed = 0;
    bool reference = true;
    int n_predict = 32;
    bool stop_at_end = true;         // end the run at the model's end-of-generation token
};

// The session browser's, export dialog's and plugin manager's fields, owned by the app so
// that a script can fill them. The browser's chosen runs are the ones the dialog exports.
struct DialogState {
    std::string run_filter;            // session browser: only rows holding this text
    std::vector<int64_t> chosen_runs;  // stored run ids
    bool ask_delete = false;           // open the delete confirmation
    ExportRequest export_request;      // the dialog's format and path (runs: chosen_runs)
    std::string plugin_path;           // plugin manager: "Load .so..."
};

// What the export dialog's Export button asks: the chosen runs, in its format, to its file.
void RequestExport(const DialogState& dialogs, Commands& commands);

// What the views show, beyond the selection: owned by the app, so that one view can
// steer another (a head clicked in the grid opens its probe map in the heatmap) and a
// script can set it.
struct ViewSettings {
    int head_role = 0;           // head grid: 0 the kept share, i > 0 HeadAnalysis::roles[i - 1]
    bool head_kv_means = false;  // head grid: a role per KV head (the mean of its query heads)
    bool attention_probe = false; // heatmap: the probe map of HeadAnalysis, not the run's steps
    int compare_a = -1, compare_b = -1; // compare: the runs whose kept sets are diffed (-1: the last two)
};

// Makes (reuse == 0) or refills an RGBA texture for ImGui::Image; the app implements it
// with OpenGL, so that views stay free of any graphics API. Nearest-pixel sampling.
using UploadTextureFn = ImTextureID (*)(ImTextureID reuse, int width, int height, const uint32_t* rgba);

struct ViewContext {
    const Snapshot& snapshot;
    Selection& selection;
    RunSetupState& setup;
    DialogState& dialogs;
    ViewSettings& settings;
    Commands& commands;
    UploadTextureFn upload_texture;
};

struct ViewEntry {
    const char* name;    // window title and View menu entry
    const char* tooltip; // what it shows, one sentence
    void (*draw)(ViewContext&);
    const char* tab = nullptr; // its tab's label beside the centre area (it can pop out); nullptr: in the layout
};

// Every view, in the View menu's order.
const std::vector<ViewEntry>& ViewTable();

void DrawRunSetupView(ViewContext& ctx);
void DrawTokenStripView(ViewContext& ctx);
void DrawMemoryView(ViewContext& ctx);
void DrawEvictionRasterView(ViewContext& ctx);
void DrawHeadGridView(ViewContext& ctx);
void DrawSessionBrowserView(ViewContext& ctx);
void DrawExportView(ViewContext& ctx);
void DrawPluginManagerView(ViewContext& ctx);
void DrawAttentionHeatmapView(ViewContext& ctx);
void DrawCompareView(ViewContext& ctx);

// The run spec the stages describe, e.g. "snapkv(window=16)+pyramid": parameters left at
// their defaults are omitted.
std::string MethodSpecText(const std::vector<MethodSchema>& methods, const std::vector<MethodStage>& stages);
// The request for the fields as they stand.
RunRequest MakeRunRequest(const Snapshot& snapshot, const RunSetupState& setup);
// Sets the stages to `method` with its default parameters (false if unknown).
bool SelectMethod(const Snapshot& snapshot, RunSetupState& setup, const std::string& method);

} // namespace kvscope
