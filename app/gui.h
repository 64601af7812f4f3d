// The workbench: `kvscope` with no subcommand opens it; `kvscope gui` takes options, and
// `kvscope gui --bench` / `--screenshot` run a scripted scenario (gui_scenario.cpp)
// for benchmarks and headless tests. No torch here.
#pragma once

#include "app/cli_common.h"

#include <string>
#include <vector>

namespace kvscope {

struct GuiOptions {
    ModelOptions model;
    std::vector<std::string> plugins;
    std::string db;          // the session database every run is stored in (empty: the default)
    int width = 1600, height = 900;
    // The scripted scenario: load the model, run `method` at `budget` for `steps` steps on
    // `prompt` next to the reference, then view it for `view_frames` frames.
    bool bench = false;      // print frame-time percentiles at the end
    std::string screenshot;  // write a PNG of the last frame
    std::string running_screenshot; // and one while the run decodes, halfway through its steps
    std::string method = "snapkv";
    int budget = 16;
    std::string prompt = "Write a short story about a lighthouse keeper who finds a message in a bottle.";
    int steps = 24, view_frames = 120;
    bool ignore_eos = false; // take all the steps, past the model's end-of-generation token
    double timeout_s = 300;
    // ... and, through the views as a user would: load a model with the model picker and a
    // plugin with the plugin manager before the run; export the stored run from the export
    // dialog; open it again from the session browser; write a PNG of each tab view (compare,
    // sessions, plugins, export), then of the export view popped out, beside `screenshot`.
    std::string load_model, load_plugin, export_path, export_format = "json";
    bool pause = false;             // pause the run at its first step (Space), step once ("."), resume
    bool stop_in_reference = false; // stop the run (Shift+F5) while its reference runs
    std::string reload_plugin;      // press this plugin's Reload as the run starts
    bool delete_run = false;        // delete the stored run from the session browser at the end
    // Run these methods after the first, one after another at the same budget (the README's
    // story: SnapKV, then H2O and StreamingLLM beside it); the export then holds every run.
    std::vector<std::string> then_methods;
    // Then, when set: a second run at twice the budget, the head analysis (then its scores
    // read back from the sessions database), the top retrieval head's probe map, and each view alone in the window, saved as
    // <tour>/<view>.png (the heatmap twice: attention-run, attention-probe; the head grid
    // per query head and per KV head: head-grid, head-grid-kv).
    std::string tour;
    bool scripted() const { return bench || !screenshot.empty() || !tour.empty(); }
};

void add_gui_options(CLI::App& command, GuiOptions& options);
void add_gui_command(CLI::App& app, GuiOptions& options);
// Opens the window and runs until it closes (or the scenario ends); the exit status.
int run_gui(const GuiOptions& options);

} // namespace kvscope
