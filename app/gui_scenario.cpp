#include "app/gui_scenario.h"

#include "app/gui_shell.h"

#include <imgui.h>

#include <GLFW/glfw3.h>

#include <algorithm>
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

} // namespace

Scenario::Scenario(const GuiOptions& options) : options_(options) {}

void Scenario::Fail(const std::string& why) {
    failure_ = why;
    phase_ = Phase::Last;
}

// As the GLFW backend would on key events: Ctrl+P opens the palette on viewing frame 5,
// Esc closes it on frame 15; the state between shows whether the keys reached it.
void Scenario::PressKeys() {
    ImGuiIO& io = ImGui::GetIO();
    for (int key : held_) io.KeysDown[key] = false;
    held_.clear();
    io.KeyCtrl = false;
    const bool open = ImGui::IsPopupOpen("", ImGuiPopupFlags_AnyPopupId);
    if (viewed_ == 10) palette_opened_ = open;
    if (viewed_ == 20) palette_closed_ = !open;
    if (viewed_ == 5) held_ = {GLFW_KEY_LEFT_CONTROL, GLFW_KEY_P};
    if (viewed_ == 15) held_ = {GLFW_KEY_ESCAPE};
    for (int key : held_) io.KeysDown[key] = true;
    io.KeyCtrl = io.KeysDown[GLFW_KEY_LEFT_CONTROL];
}

void Scenario::Advance(Shell& shell, double last_frame_ms) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (phase_ != Phase::Last && phase_ != Phase::Done && elapsed > options_.timeout_s)
        return Fail("timed out after " + std::to_string(int(elapsed)) + " s");
    const Snapshot& snap = shell.snapshot();
    switch (phase_) {
    case Phase::WaitModel:
        if (!snap.errors.empty()) return Fail(snap.errors.back());
        if (!snap.model.ready) return;
        if (!SelectMethod(snap, shell.setup(), options_.method)) return Fail("no method named " + options_.method);
        shell.setup().source = PromptSource::Chat;
        shell.setup().prompt = options_.prompt;
        shell.setup().budget = options_.budget;
        shell.setup().n_predict = options_.steps;
        shell.setup().reference = true;
        shell.RunNow();
        phase_ = Phase::Running;
        return;
    case Phase::Running:
        if (snap.runs.empty()) return; // the request is on its way
        decoding_ms_.push_back(last_frame_ms);
        if (snap.runs.back().live()) return;
        if (snap.runs.back().status != RunView::Status::Done) return Fail("the run ended " + std::string(StatusName(snap.runs.back().status)) + ": " + snap.runs.back().error);
        phase_ = Phase::Viewing;
        return;
    case Phase::Viewing: {
        viewing_ms_.push_back(last_frame_ms);
        PressKeys();
        // Sweep the selection through the steps and layers, as a user scrubbing would.
        const RunView& run = snap.runs.back();
        Selection& sel = shell.selection();
        sel.step = int(int64_t(viewed_) * int64_t(run.steps.size()) / std::max(1, options_.view_frames));
        sel.position = int(run.n_prompt) + sel.step;
        sel.layer = viewed_ * std::max(1, snap.model.n_layer) / std::max(1, options_.view_frames);
        if (++viewed_ >= options_.view_frames) {
            sel = Selection{0, int(run.steps.size()) / 2, 0, 0, int(run.n_prompt)};
            if (options_.tour.empty()) phase_ = Phase::Last;
            else StartTour(shell);
        }
        return;
    }
    case Phase::SecondRun:
    case Phase::Analyzing:
    case Phase::Rereading:
    case Phase::HeadMap:
    case Phase::Touring: return AdvanceTour(shell, last_frame_ms);
    case Phase::Last: phase_ = Phase::Done; return;
    case Phase::Done: return;
    }
}

std::string Scenario::screenshot() const {
    if (phase_ == Phase::Last) return options_.screenshot;
    if (phase_ == Phase::Touring && shot_frame_ == kShotFrames) return options_.tour + "/" + kShots[shot_].file + ".png";
    return "";
}

void Scenario::StartTour(Shell& shell) {
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
        if (snap.runs.size() < 2 || snap.runs.back().live()) return;
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
        if (++shot_ == std::size(kShots)) {
            shell.Focus("");
            sel = Selection{0, int(snap.runs.front().steps.size()) / 2, 0, 0, int(snap.runs.front().n_prompt)};
            phase_ = Phase::Last;
            return;
        }
    }
    if (shot_frame_ > 1) touring_ms_.push_back(last_frame_ms); // a shot's first frame builds its textures
    if (!shell.Focus(kShots[shot_].view)) return Fail(std::string("no view named ") + kShots[shot_].view);
    shell.settings().attention_probe = kShots[shot_].probe;
    shell.settings().head_kv_means = kShots[shot_].kv_means;
    sel.run = -1; // the latest run: the second
    ++shot_frame_;
}

int Scenario::Finish(const Shell& shell) {
    const Snapshot& snap = shell.snapshot();
    if (!snap.runs.empty()) {
        const RunView& run = snap.runs.front(); // the scenario's run (a tour adds a second)
        std::printf("run #1 %s @ %s: %s, %lld prompt tokens, %zu steps, %zu evictions\n",
                    run.method.c_str(), run.budget.c_str(), StatusName(run.status), (long long)run.n_prompt,
                    run.steps.size(), run.evictions.size());
        std::printf("tokens");
        for (const StepRow& s : run.steps) std::printf(" %d", s.token);
        std::printf("\nreference");
        for (const StepRow& s : run.steps) std::printf(" %d", s.reference_token);
        std::printf("\n");
    }
    if (!options_.tour.empty())
        std::printf("tour: %zu runs, %zu head roles %s, probe map %dx%d of L%d.H%d on \"%s\", %zu shots\n",
                    snap.runs.size(), snap.heads.roles.size(),
                    snap.heads.stage.rfind("read from", 0) == 0 ? "read back" : "NOT read back",
                    snap.heads.map.rows, snap.heads.map.cols,
                    snap.heads.map.layer, snap.heads.map.head, snap.heads.map.probe.c_str(), shot_);
    std::printf("palette %s by Ctrl+P, %s by Esc\n", palette_opened_ ? "opened" : "NOT opened",
                palette_closed_ ? "closed" : "NOT closed");
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
