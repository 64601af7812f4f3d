#include "app/gui_scenario.h"

#include "app/gui_shell.h"

#include <imgui.h>

#include <GLFW/glfw3.h>

#include <algorithm>
#include <cstdio>

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
            sel = Selection{int(snap.runs.size()) - 1, int(run.steps.size()) / 2, 0, 0, int(run.n_prompt)};
            phase_ = Phase::Last;
        }
        return;
    }
    case Phase::Last: phase_ = Phase::Done; return;
    case Phase::Done: return;
    }
}

int Scenario::Finish(const Shell& shell) {
    const Snapshot& snap = shell.snapshot();
    if (!snap.runs.empty()) {
        const RunView& run = snap.runs.back();
        std::printf("run #%zu %s @ %s: %s, %lld prompt tokens, %zu steps, %zu evictions\n", snap.runs.size(),
                    run.method.c_str(), run.budget.c_str(), StatusName(run.status), (long long)run.n_prompt,
                    run.steps.size(), run.evictions.size());
        std::printf("tokens");
        for (const StepRow& s : run.steps) std::printf(" %d", s.token);
        std::printf("\nreference");
        for (const StepRow& s : run.steps) std::printf(" %d", s.reference_token);
        std::printf("\n");
    }
    std::printf("palette %s by Ctrl+P, %s by Esc\n", palette_opened_ ? "opened" : "NOT opened",
                palette_closed_ ? "closed" : "NOT closed");
    PrintFrames("decoding", decoding_ms_);
    PrintFrames("viewing", viewing_ms_);
    std::fflush(stdout);
    if (!failure_.empty()) {
        std::fprintf(stderr, "kvscope gui: scenario failed: %s\n", failure_.c_str());
        return 1;
    }
    return 0;
}

} // namespace kvscope
