// The scripted scenario of `kvscope gui --bench` and the GUI tests: drives the Shell as a
// user would (load a model with the model picker and a plugin with the plugin manager, set
// up a run, press Run, pause, step, stop or reload a plugin while it runs, export the
// stored run from the export dialog, open it again from the session browser, move the
// selection about, with the arrows too, delete the run), times every frame, and says when
// to take which screenshot and stop.
#pragma once

#include "app/gui.h"
#include "views/snapshot.h"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace kvscope {

class Shell;
struct RunView;

class Scenario {
public:
    explicit Scenario(const GuiOptions& options);
    // Before each frame's Shell::Frame; `last_frame_ms` is the previous frame's time.
    void Advance(Shell& shell, double last_frame_ms);
    // The PNG to write of this frame, once drawn (empty: none): the --screenshot, a tab
    // view's beside it, or a tour's shot. The app saves it once the frame's images are
    // built (views/image_builder.h); until ShotSaved(), Advance waits.
    const std::string& screenshot() const { return shot_; }
    void ShotSaved() { shot_.clear(); }
    bool done() const { return phase_ == Phase::Done; }
    // Prints what happened and the frame times; the exit status.
    int Finish(const Shell& shell);

private:
    enum class Phase {
        WaitModel, LoadingModel, LoadingPlugin, Running, Exporting, Reopening, Viewing, Deleting,
        SecondRun, Analyzing, Rereading, HeadMap, Touring, MainShot, TabShots, PopOutShot, Done
    } phase_ = Phase::WaitModel;
    void Fail(const std::string& why);
    void Press(std::vector<int> keys); // GLFW key codes, down for this frame
    void ReleaseKeys();
    void PressKeys(); // the viewing frames' keys
    void ExercisePause(const RunView& run, bool paused);
    void LoadPlugin(Shell& shell);
    void ReloadDuringRun(Shell& shell);
    void StartRun(Shell& shell, const std::string& method);
    void RunEnded(Shell& shell);
    void View(Shell& shell);
    void Delete(Shell& shell);
    void AfterViewing(Shell& shell); // the tour when asked for, else the main screenshot
    void StartTour(Shell& shell);
    void AdvanceTour(Shell& shell, double last_frame_ms);
    void TabShot(Shell& shell);
    void PopOutShot(Shell& shell);

    GuiOptions options_;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    std::vector<double> decoding_ms_, viewing_ms_, touring_ms_;
    int viewed_ = 0;
    std::vector<int> held_;          // keys down since the last frame
    bool palette_opened_ = false, palette_closed_ = false;
    Selection arrows_from_;          // the selection as Right and Down were pressed
    bool arrows_moved_ = false;      // to the next step and layer
    int plugin_loads_ = 0;           // plugin loads done when one was asked for
    int exports_ = 0;                // exports finished when one was asked for
    size_t errors_ = 0;              // banner errors when a model load was asked for
    size_t live_run_ = 0;            // the run started here, in Snapshot::runs
    int64_t stored_id_ = -1;         // its id in the session database
    size_t current_run_ = 0;         // the run in progress: the first, or one of --then's
    size_t then_ = 0;                // --then's runs started
    std::vector<int64_t> stored_ids_; // every run's id in the session database, in order
    size_t tab_ = 0;                 // TabShots: the ViewTable entry shown
    int tab_frames_ = 0;             // and PopOutShot's
    int delete_frames_ = 0;
    bool deleted_ = false;
    enum class ReloadTest { Start, Requested, DuringRun, AfterRun } reload_ = ReloadTest::Start;
    enum class PauseTest { Start, Pausing, Paused, Stepped, Resumed, Failed } pause_ = PauseTest::Start;
    int pause_frames_ = 0;
    size_t paused_at_ = 0, stepped_to_ = 0; // steps shown while paused, and after one Step
    bool running_shot_ = false;      // the frame of the run in progress is saved
    size_t tour_runs_ = 0;           // runs before the tour's second run
    size_t tour_shot_ = 0;           // the tour's shot in progress
    int shot_frame_ = 0;
    std::string shot_;
    std::string failure_;
};

} // namespace kvscope
