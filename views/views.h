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
};

// One query head's attention on the probe that defines `role` (HeadAnalysis::map).
struct HeadAttentionRequest {
    int layer = -1, head = -1;
    std::string role;
};

// What the views ask the app to do this frame.
struct Commands {
    bool run = false, stop = false;
    RunRequest request;
    bool analyze_heads = false;        // score every head's role (stored scores when there are)
    bool fresh_analysis = false;       // on the probe suite, even when scores are stored
    HeadAttentionRequest head_attention; // when head >= 0
};

// The run setup's editable fields, owned by the app so that a script can fill them.
struct MethodStage {
    int method = -1;             // index into Snapshot::methods
    std::vector<double> values;  // one per parameter
};
struct RunSetupState {
    PromptSource source = PromptSource::Chat;
    std::string prompt = "What is the capital of France? Answer in one sentence.";
    std::vector<MethodStage> stages; // scorer first, then allocators
    int budget = 64;
    bool budget_fraction = false;    // budget is a percentage of the context
    int seed = 0;
    bool reference = true;
    int n_predict = 32;
};

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
    ViewSettings& settings;
    Commands& commands;
    UploadTextureFn upload_texture;
};

struct ViewEntry {
    const char* name;    // window title and View menu entry
    const char* tooltip; // what it shows, one sentence
    void (*draw)(ViewContext&);
};

// Every view, in the View menu's order.
const std::vector<ViewEntry>& ViewTable();

void DrawRunSetupView(ViewContext& ctx);
void DrawTokenStripView(ViewContext& ctx);
void DrawMemoryView(ViewContext& ctx);
void DrawEvictionRasterView(ViewContext& ctx);
void DrawHeadGridView(ViewContext& ctx);
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
