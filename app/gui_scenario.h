// The scripted scenario of `kvscope gui --bench` and the GUI tests: drives the Shell as a
// user would (set up a run, press Run, watch it, move the selection about), times every
// frame, and says when to take the screenshot and stop.
#pragma once

#include "app/gui.h"

#include <chrono>
#include <string>
#include <vector>

namespace kvscope {

class Shell;

class Scenario {
public:
    explicit Scenario(const GuiOptions& options);
    // Before each frame's Shell::Frame; `last_frame_ms` is the previous frame's time.
    void Advance(Shell& shell, double last_frame_ms);
    bool last_frame() const { return phase_ == Phase::Last; }
    // Where to save this frame as a PNG ("" none): the last frame's --screenshot, a tour's shots.
    std::string screenshot() const;
    bool done() const { return phase_ == Phase::Done; }
    // Prints what happened and the frame times; the exit status.
    int Finish(const Shell& shell);

private:
    enum class Phase { WaitModel, Running, Viewing, SecondRun, Analyzing, Rereading, HeadMap, Touring, Last, Done };
    Phase phase_ = Phase::WaitModel;
    void Fail(const std::string& why);
    void StartTour(Shell& shell);
    void AdvanceTour(Shell& shell, double last_frame_ms);
    void PressKeys(); // this frame's scripted keys (and last frame's released)

    GuiOptions options_;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    std::vector<double> decoding_ms_, viewing_ms_, touring_ms_;
    int viewed_ = 0;
    std::vector<int> held_;          // keys down since the last frame
    bool palette_opened_ = false, palette_closed_ = false;
    size_t shot_ = 0;  // the tour's shot in progress
    int shot_frame_ = 0;
    std::string failure_;
};

} // namespace kvscope
