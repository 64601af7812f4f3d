#include "app/gui_scenario.h"

#include "app/gui_shell.h"

#include <imgui.h>

#include <GLFW/glfw3.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iterator>

namespace kvscope {

namespace {

double Percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, size_t(p / 100.0 * double(v.size())))];
}

void PrintFrames(const char* what, const std::vector<double>& ms) {
    std::printf("frames %-9s %5zu  p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms\n", what, ms.size(), Percentile(ms, 50),
                Percentile(ms, 99), ms.empty() ? 0.0 : *std::max_element(ms.begin(), ms.end()));
}

// "Session browser" -> "scenario-session-browser.png" beside the main screenshot.
std::string TabShotPath(const std::string& screenshot, const char* view) {
    std::string slug;
    for (const char* c = view; *c; ++c) slug += std::isalnum(static_cast<unsigned char>(*c)) ? char(std::tolower(*c)) : '-';
    size_t dot = screenshot.rfind('.');
    if (dot != std::string::npos && screenshot.find('/', dot) != std::string::npos) dot = std::string::npos; // a folder's
    return screenshot.substr(0, dot) + "-" + slug + (dot == std::string::npos ? ".png" : screenshot.substr(dot));
}

void PrintTokens(const char* label, const std::vector<StepRow>& steps, bool reference = false) {
    std::printf("%s", label);
    for (const StepRow& s : steps) std::printf(" %d", reference ? s.reference_token : s.token);
    std::printf("\n");
}

void PrintBytes(const char* label, const std::vector<int64_t>& bytes) {
    std::printf("%s", label);
    for (int64_t b : bytes) std::printf(" %lld", (long long)b);
    std::printf("\n");
}

// FNV-1a (64 bits) over `n` bytes, continuing from `hash`.
uint64_t Fnv1a(const void* data, size_t n, uint64_t hash = 0xcbf29ce484222325ull) {
    for (size_t i = 0; i < n; ++i) hash = (hash ^ static_cast<const unsigned char*>(data)[i]) * 0x100000001b3ull;
    return hash;
}

// The heatmap's rows in one line: their shape and a hash of their steps and values' bits,
// so the test can tell a reopened run's rows from the live run's.
void PrintAttention(const char* label, const AttentionTrace& t) {
    const uint64_t hash = Fnv1a(t.mass.data(), t.mass.size() * sizeof(float),
                                Fnv1a(t.steps.data(), t.steps.size() * sizeof(int32_t)));
    std::printf("%s %zu steps (every %d) x %d layers x %d heads x %d bins of %lld keys, fnv1a %016llx\n", label,
                t.steps.size(), t.stride, t.n_layer, t.n_head, t.bins, (long long)t.key_stride(),
                (unsigned long long)hash);
}
// The tour's shots: each view alone in the window for a few frames (textures are built
// on the first), then saved.
struct Shot {
    const char* file;
    const char* view;
    bool probe = false;    // the heatmap's source
    bool kv_means = false; // the head grid's columns
};
const Shot kShots[] = {{"run-setup", "Run setup"},
                       {"token-strip", "Token strip"},
                       {"eviction-raster", "Eviction raster"},
                       {"head-grid", "Head grid"},
                       {"head-grid-kv", "Head grid", false, true},
                       {"memory", "Memory & latency"},
                       {"attention-run", "Attention heatmap"},
                       {"attention-probe", "Attention heatmap", true},
                       {"compare", "Compare"}};
const int kShotFrames = 8;
// A tab shows its view a frame after it is selected, and its tables fit their columns on
// their first frame: by the fourth, the view is drawn as a user sees it.
const int kTabFrames = 4;
const int kArrowFrame = 22; // the viewing frame whose Right and Down are checked (the palette closed before)

} // namespace

Scenario::Scenario(const GuiOptions& options) : options_(options) {}

void Scenario::Fail(const std::string& why) {
    failure_ = why;
    phase_ = Phase::MainShot; // the frame that shows it (the banner), then stop
}

// As the GLFW backend would on key events: down for this frame, up before the next.
void Scenario::Press(std::vector<int> keys) {
    ImGuiIO& io = ImGui::GetIO();
    held_ = std::move(keys);
    for (int key : held_) io.KeysDown[key] = true;
    io.KeyCtrl = io.KeysDown[GLFW_KEY_LEFT_CONTROL];
    io.KeyShift = io.KeysDown[GLFW_KEY_LEFT_SHIFT];
}

void Scenario::ReleaseKeys() {
    ImGuiIO& io = ImGui::GetIO();
    for (int key : held_) io.KeysDown[key] = false;
    held_.clear();
    io.KeyCtrl = io.KeyShift = false;
}

// Ctrl+P opens the palette on viewing frame 5, Esc closes it on frame 15; the state
// between shows whether the keys reached it.
void Scenario::PressKeys() {
    const bool open = ImGui::IsPopupOpen("", ImGuiPopupFlags_AnyPopupId);
    if (viewed_ == 10) palette_opened_ = open;
    if (viewed_ == 20) palette_closed_ = !open;
    if (viewed_ == 5) Press({GLFW_KEY_LEFT_CONTROL, GLFW_KEY_P});
    if (viewed_ == 15) Press({GLFW_KEY_ESCAPE});
}

// Space as the run starts pauses it at its first decode step; once it has settled, 30
// frames without a step, "." takes exactly one more; 30 frames later Space resumes.
void Scenario::ExercisePause(const RunView& run, bool paused) {
    const size_t steps = run.steps.size();
    const bool settled = ++pause_frames_ > 30;
    switch (pause_) {
    case PauseTest::Start:
        Press({GLFW_KEY_SPACE});
        pause_ = PauseTest::Pausing;
        pause_frames_ = 0;
        return;
    case PauseTest::Pausing:
        if (!paused || steps == 0) pause_frames_ = 0;
        else if (settled) {
            paused_at_ = steps;
            pause_ = PauseTest::Paused;
            pause_frames_ = 0;
        }
        return;
    case PauseTest::Paused:
        if (steps != paused_at_) pause_ = PauseTest::Failed;
        else if (settled) {
            Press({GLFW_KEY_PERIOD});
            pause_ = PauseTest::Stepped;
            pause_frames_ = 0;
        }
        return;
    case PauseTest::Stepped:
        if (!settled) return;
        stepped_to_ = steps;
        Press({GLFW_KEY_SPACE});
        pause_ = PauseTest::Resumed;
        return;
    case PauseTest::Resumed:
    case PauseTest::Failed: return;
    }
}

// The plugin manager's Reload, pressed as the run starts: the worker must reload only
// once the run has ended, as the run's methods use the library being replaced.
void Scenario::ReloadDuringRun(Shell& shell) {
    const Snapshot& snap = shell.snapshot();
    if (reload_ == ReloadTest::Start) {
        if (!snap.runs[current_run_].live()) return; // too late to test anything: reported NOT requested
        shell.commands().load_plugin = options_.reload_plugin;
        plugin_loads_ = snap.catalog.plugin_loads;
        reload_ = ReloadTest::Requested;
    } else if (reload_ == ReloadTest::Requested && snap.catalog.plugin_loads != plugin_loads_) {
        reload_ = snap.runs[current_run_].live() ? ReloadTest::DuringRun : ReloadTest::AfterRun;
    }
}

void Scenario::LoadPlugin(Shell& shell) {
    if (options_.load_plugin.empty()) return StartRun(shell, options_.method);
    shell.ShowView("Plugin manager");
    shell.dialogs().plugin_path = options_.load_plugin;
    shell.commands().load_plugin = options_.load_plugin; // as its "Load .so" button
    plugin_loads_ = shell.snapshot().catalog.plugin_loads;
    phase_ = Phase::LoadingPlugin;
}

void Scenario::StartRun(Shell& shell, const std::string& method) {
    const Snapshot& snap = shell.snapshot();
    if (!SelectMethod(snap, shell.setup(), method)) return Fail("no method named " + method);
    shell.setup().source = PromptSource::Chat;
    shell.setup().prompt = options_.prompt;
    shell.setup().budget = options_.budget;
    shell.setup().n_predict = options_.steps;
    shell.setup().reference = true;
    shell.setup().stop_at_end = !options_.ignore_eos;
    current_run_ = snap.runs.size();
    if (then_ == 0) live_run_ = current_run_;
    shell.ShowView(""); // the run decodes on the workbench
    shell.RunNow();
    phase_ = Phase::Running;
}

// The run is over: the next of --then's runs, or export them all and open the first again
// from the database, when it was stored (a database that fails costs the record, not the
// run: then the live run is viewed).
void Scenario::RunEnded(Shell& shell) {
    const RunView& run = shell.snapshot().runs[current_run_];
    if (run.status != RunView::Status::Done)
        return Fail("the run ended " + std::string(StatusName(run.status)) + ": " + run.error);
    if (run.stored_id >= 0) stored_ids_.push_back(run.stored_id);
    if (current_run_ == live_run_) stored_id_ = run.stored_id;
    if (then_ < options_.then_methods.size()) return StartRun(shell, options_.then_methods[then_++]);
    if (stored_id_ < 0) {
        phase_ = Phase::Viewing;
        return;
    }
    DialogState& d = shell.dialogs();
    d.chosen_runs = stored_ids_;
    if (!options_.export_path.empty()) {
        shell.ShowView("Export");
        d.export_request.format = options_.export_format;
        d.export_request.path = options_.export_path;
        RequestExport(d, shell.commands()); // as the dialog's Export button
        exports_ = shell.snapshot().catalog.exports;
        phase_ = Phase::Exporting;
        return;
    }
    phase_ = Phase::Reopening;
}

void Scenario::View(Shell& shell) {
    const Snapshot& snap = shell.snapshot();
    if (viewed_ == 0) shell.ShowView(""); // the opened run on the workbench, from the session browser's tab
    PressKeys();
    // Sweep the selection through the steps and layers, as a user scrubbing would, but for
    // one frame's plain Right and Down, which must move it one step and one layer on.
    const RunView& run = snap.runs.back();
    Selection& sel = shell.selection();
    if (viewed_ == kArrowFrame + 1)
        arrows_moved_ = sel.step == arrows_from_.step + 1 && sel.layer == arrows_from_.layer + 1;
    sel.step = int(int64_t(viewed_) * int64_t(run.steps.size()) / std::max(1, options_.view_frames));
    sel.position = int(run.n_prompt) + sel.step;
    sel.layer = viewed_ * std::max(1, snap.model.n_layer) / std::max(1, options_.view_frames);
    if (viewed_ == kArrowFrame) {
        arrows_from_ = sel;
        Press({GLFW_KEY_RIGHT, GLFW_KEY_DOWN});
    }
    if (++viewed_ >= options_.view_frames) {
        sel = Selection{int(snap.runs.size()) - 1, int(run.steps.size()) / 2, 0, 0, int(run.n_prompt)};
        if (options_.delete_run && stored_id_ >= 0) phase_ = Phase::Deleting;
        else AfterViewing(shell);
    }
}

void Scenario::AfterViewing(Shell& shell) {
    if (options_.tour.empty()) phase_ = Phase::MainShot;
    else StartTour(shell);
}

// The session browser's Delete... on the stored run, confirmed with Enter once its tab has
// shown the confirmation; done once the browser's list no longer holds it.
void Scenario::Delete(Shell& shell) {
    const auto& rows = shell.snapshot().catalog.stored_runs;
    if (delete_frames_ == 0) {
        shell.ShowView("Session browser");
        shell.dialogs().chosen_runs = {stored_id_};
        shell.dialogs().ask_delete = true;
    }
    if (++delete_frames_ == kTabFrames) Press({GLFW_KEY_ENTER});
    const bool gone = std::none_of(rows.begin(), rows.end(), [&](const StoredRunRow& r) { return r.id == stored_id_; });
    if (delete_frames_ > kTabFrames && gone) {
        deleted_ = true;
        shell.ShowView("");
        AfterViewing(shell);
    }
}

// Each tab view's tab selected in turn, its screenshot once drawn.
void Scenario::TabShot(Shell& shell) {
    const auto& table = ViewTable();
    while (tab_ < table.size() && !table[tab_].tab) ++tab_;
    if (tab_ == table.size()) {
        phase_ = Phase::PopOutShot;
        return;
    }
    if (tab_frames_ == 0) shell.ShowView(table[tab_].name);
    if (++tab_frames_ == kTabFrames) {
        shot_ = TabShotPath(options_.screenshot, table[tab_].name);
        ++tab_;
        tab_frames_ = 0;
    }
}

// The export view popped out of its tab into its own window, over the workbench.
void Scenario::PopOutShot(Shell& shell) {
    if (tab_frames_ == 0) shell.PopOut("Export");
    if (++tab_frames_ == kTabFrames) {
        shot_ = TabShotPath(options_.screenshot, "Export window");
        phase_ = Phase::Done; // after this frame, its shot
    }
}

void Scenario::Advance(Shell& shell, double last_frame_ms) {
    ReleaseKeys();
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (phase_ < Phase::MainShot && elapsed > options_.timeout_s)
        return Fail("timed out after " + std::to_string(int(elapsed)) + " s");
    if (!shot_.empty()) return; // its images are still being built
    const Snapshot& snap = shell.snapshot();
    switch (phase_) {
    case Phase::WaitModel:
        if (snap.model.load_stage == "failed") return Fail(snap.errors.empty() ? "the model failed" : snap.errors.back());
        if (!snap.model.ready) return;
        if (options_.load_model.empty()) return LoadPlugin(shell);
        shell.setup().model_path = options_.load_model;
        shell.commands().load_model = options_.load_model; // as the model picker's Load button
        errors_ = snap.errors.size();
        phase_ = Phase::LoadingModel;
        return;
    case Phase::LoadingModel: // loaded, or an error in the banner
        if (snap.errors.size() > errors_ || (snap.model.ready && snap.model.path == options_.load_model))
            LoadPlugin(shell);
        return;
    case Phase::LoadingPlugin:
        if (snap.catalog.plugin_loads != plugin_loads_) StartRun(shell, options_.method); // loaded, or an error in the banner
        return;
    case Phase::Running:
        if (snap.runs.size() <= current_run_) return; // the request is on its way
        decoding_ms_.push_back(last_frame_ms);
        if (!options_.reload_plugin.empty()) ReloadDuringRun(shell);
        if (!snap.runs[current_run_].live() && reload_ != ReloadTest::Requested) return RunEnded(shell);
        if (options_.pause) ExercisePause(snap.runs[current_run_], snap.paused);
        if (!options_.running_screenshot.empty() && !running_shot_ &&
            int64_t(snap.runs[current_run_].steps.size()) * 2 >= options_.steps) {
            shot_ = options_.running_screenshot;
            running_shot_ = true;
        }
        if (options_.stop_in_reference && snap.runs[current_run_].status == RunView::Status::Reference)
            Press({GLFW_KEY_LEFT_SHIFT, GLFW_KEY_F5}); // Run: stop
        return;
    case Phase::Exporting:
        if (snap.catalog.exports != exports_) phase_ = Phase::Reopening;
        return;
    case Phase::Reopening: // as a double click in the session browser
        shell.ShowView("Session browser");
        shell.commands().open_runs = {stored_id_};
        phase_ = Phase::Viewing;
        return;
    case Phase::Viewing:
        if (stored_id_ >= 0 && snap.runs.size() < current_run_ + 2) return; // the stored run is on its way
        viewing_ms_.push_back(last_frame_ms);
        return View(shell);
    case Phase::Deleting: return Delete(shell);
    case Phase::MainShot:
        shot_ = options_.screenshot;
        phase_ = failure_.empty() && !options_.screenshot.empty() ? Phase::TabShots : Phase::Done;
        return;
    case Phase::TabShots: return TabShot(shell);
    case Phase::PopOutShot: return PopOutShot(shell);
    case Phase::SecondRun:
    case Phase::Analyzing:
    case Phase::Rereading:
    case Phase::HeadMap:
    case Phase::Touring: return AdvanceTour(shell, last_frame_ms);
    case Phase::Done: return;
    }
}

void Scenario::StartTour(Shell& shell) {
    tour_runs_ = shell.snapshot().runs.size();
    shell.setup().budget = options_.budget * 2;
    shell.RunNow();
    phase_ = Phase::SecondRun;
}

// A second run, the head analysis, the best retrieval head's probe map, then the shots.
void Scenario::AdvanceTour(Shell& shell, double last_frame_ms) {
    const Snapshot& snap = shell.snapshot();
    const HeadAnalysis& heads = snap.heads;
    Selection& sel = shell.selection();
    switch (phase_) {
    case Phase::SecondRun:
        if (snap.runs.size() <= tour_runs_ || snap.runs.back().live()) return;
        if (snap.runs.back().status != RunView::Status::Done) return Fail(std::string("the second run ended ") + StatusName(snap.runs.back().status) + ": " + snap.runs.back().error);
        shell.commands().analyze_heads = true;
        shell.commands().fresh_analysis = true; // the analysis itself, whatever the database holds
        phase_ = Phase::Analyzing;
        return;
    case Phase::Analyzing: // then again, reading what it stored
        if (heads.status == HeadAnalysis::Status::Failed) return Fail("head analysis: " + heads.stage);
        if (heads.status != HeadAnalysis::Status::Done) return;
        shell.commands().analyze_heads = true;
        phase_ = Phase::Rereading;
        return;
    case Phase::Rereading: {
        if (heads.status == HeadAnalysis::Status::Failed) return Fail("head analysis: " + heads.stage);
        if (heads.status != HeadAnalysis::Status::Done || heads.stage.rfind("read from", 0) != 0) return;
        const auto role = std::find(heads.roles.begin(), heads.roles.end(), "retrieval");
        if (role == heads.roles.end()) return Fail("no retrieval role");
        const std::vector<float>& scores = heads.scores[size_t(role - heads.roles.begin())];
        const int best = int(std::max_element(scores.begin(), scores.end()) - scores.begin());
        const int group = std::max(1, heads.n_head / std::max(1, heads.n_head_kv));
        shell.settings().head_role = int(role - heads.roles.begin()) + 1;
        sel.layer = best / heads.n_head, sel.query_head = best % heads.n_head, sel.head = sel.query_head / group;
        shell.commands().head_attention = {sel.layer, sel.query_head, "retrieval"};
        phase_ = Phase::HeadMap;
        return;
    }
    case Phase::HeadMap:
        if (!snap.errors.empty()) return Fail(snap.errors.back());
        if (heads.map_pending || heads.map.cells.empty()) return;
        phase_ = Phase::Touring;
        return;
    default: break;
    }
    if (shot_frame_ == kShotFrames) { // the last shot was saved after the previous frame
        shot_frame_ = 0;
        if (++tour_shot_ == std::size(kShots)) {
            shell.Focus("");
            sel = Selection{0, int(snap.runs.front().steps.size()) / 2, 0, 0, int(snap.runs.front().n_prompt)};
            phase_ = Phase::MainShot;
            return;
        }
    }
    if (shot_frame_ > 1) touring_ms_.push_back(last_frame_ms); // a shot's first frame builds its textures
    const Shot& shot = kShots[tour_shot_];
    if (!shell.Focus(shot.view)) return Fail(std::string("no view named ") + shot.view);
    shell.settings().attention_probe = shot.probe;
    shell.settings().head_kv_means = shot.kv_means;
    sel.run = -1; // the latest run: the second
    if (++shot_frame_ == kShotFrames) shot_ = options_.tour + "/" + shot.file + ".png";
}

int Scenario::Finish(const Shell& shell) {
    const Snapshot& snap = shell.snapshot();
    if (snap.runs.size() > live_run_) {
        const RunView& run = snap.runs[live_run_];
        std::printf("run #%zu %s @ %s: %s, %lld prompt tokens, %zu steps (reference %lld), %zu evictions\n",
                    live_run_ + 1, run.method.c_str(), run.budget.c_str(), StatusName(run.status),
                    (long long)run.n_prompt, run.steps.size(), (long long)run.reference_text.size(), run.evictions.size());
        PrintTokens("tokens", run.steps);
        PrintTokens("reference", run.steps, true);
        PrintBytes("reference kv", run.reference_kv_bytes);
        PrintAttention("attention", run.attention);
        if (stored_id_ < 0) std::printf("NOT stored\n"); // as it ended (a delete comes later)
        else std::printf("stored as run %lld in %s\n", (long long)stored_id_, snap.catalog.db_path.c_str());
    }
    for (size_t i = 0; i < options_.then_methods.size() && live_run_ + 1 + i < snap.runs.size(); ++i) {
        const RunView& run = snap.runs[live_run_ + 1 + i];
        std::printf("then run #%zu %s @ %s: %s, %zu steps, %zu evictions\n", live_run_ + 2 + i, run.method.c_str(),
                    run.budget.c_str(), StatusName(run.status), run.steps.size(), run.evictions.size());
    }
    const auto opened = std::find_if(snap.runs.begin(), snap.runs.end(), [](const RunView& r) { return r.opened; });
    if (opened != snap.runs.end()) {
        const RunView& run = *opened;
        std::printf("opened run %lld from the database: %s, %zu steps, %zu evictions\n", (long long)stored_id_,
                    StatusName(run.status), run.steps.size(), run.evictions.size());
        PrintTokens("opened tokens", run.steps);
        PrintBytes("opened reference kv", run.reference_kv_bytes);
        PrintAttention("opened attention", run.attention);
    }
    if (snap.catalog.exports > 0) std::printf("export: %s\n", snap.catalog.export_result.c_str());
    for (const PluginInfo& p : snap.catalog.plugins) std::printf("plugin %s (%s)\n", p.name.c_str(), p.origin.c_str());
    for (const std::string& e : snap.errors) std::printf("banner: %s\n", e.c_str());
    if (deleted_) std::printf("deleted run %lld from the database\n", (long long)stored_id_);
    if (!options_.reload_plugin.empty())
        std::printf("reload: %s\n", reload_ == ReloadTest::AfterRun    ? "done after the run ended"
                                     : reload_ == ReloadTest::DuringRun ? "done DURING the run"
                                                                        : "NOT requested or NOT done");
    if (options_.pause)
        std::printf("pause: %s at step %zu, Step took it to %zu, %s\n",
                    pause_ == PauseTest::Failed ? "NOT held" : "held", paused_at_, stepped_to_,
                    pause_ == PauseTest::Resumed ? "resumed" : "NOT resumed");
    if (!options_.tour.empty())
        std::printf("tour: %zu runs, %zu head roles %s, probe map %dx%d of L%d.H%d on \"%s\", %zu shots\n",
                    snap.runs.size(), snap.heads.roles.size(),
                    snap.heads.stage.rfind("read from", 0) == 0 ? "read back" : "NOT read back",
                    snap.heads.map.rows, snap.heads.map.cols,
                    snap.heads.map.layer, snap.heads.map.head, snap.heads.map.probe.c_str(), tour_shot_);
    std::printf("palette %s by Ctrl+P, %s by Esc\n", palette_opened_ ? "opened" : "NOT opened",
                palette_closed_ ? "closed" : "NOT closed");
    std::printf("arrows %s the selection a step and a layer\n", arrows_moved_ ? "moved" : "did NOT move");
    PrintFrames("decoding", decoding_ms_);
    PrintFrames("viewing", viewing_ms_);
    if (!options_.tour.empty()) PrintFrames("touring", touring_ms_);
    std::fflush(stdout);
    if (!failure_.empty()) {
        std::fprintf(stderr, "kvscope gui: scenario failed: %s\n", failure_.c_str());
        return 1;
    }
    return 0;
}

} // namespace kvscope
