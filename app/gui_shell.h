// The workbench's main window: menu, status, error banner, command palette, and the
// views laid out per UI.md in child regions with draggable splitters (Dear ImGui 1.86
// has no docking), the tab views beside them, each of which can pop out into its own
// window. The splitters' positions and the popped-out views persist in the ImGui ini file.
#pragma once

#include "views/views.h"

#include <imgui.h>

#include <functional>
#include <string>
#include <vector>

namespace kvscope {

class GuiWorker;

// Everything the user can do: the menus, the palette and the keys all come from Actions().
struct Action {
    std::string name; // "<Menu>: what it does", as the menu and the palette show it
    std::function<void()> run;
    bool enabled = true;
    int key = 0;      // a GLFW key code (0: none), with Ctrl or Shift held when set
    bool ctrl = false, shift = false;
};
std::string ShortcutText(const Action& action);

class Shell {
public:
    // After ImGui::CreateContext, before the first frame.
    Shell(GuiWorker& worker, UploadTextureFn upload_texture);
    void Frame();                      // between ImGui::NewFrame and ImGui::Render

    bool quit() const { return quit_; }
    // Whether the worker is changing what is shown (the model loading, a run live).
    bool animating() const;
    const Snapshot& snapshot() const { return snapshot_; }
    Selection& selection() { return selection_; }
    RunSetupState& setup() { return setup_; }
    DialogState& dialogs() { return dialogs_; }
    ViewSettings& settings() { return settings_; }
    Commands& commands() { return commands_; } // this frame's, applied at its end
    void RunNow(); // as the Run button does
    // Selects the tab of the view called `name` (views.h ViewEntry::tab; "": the workbench's
    // tab), or raises its window when it is popped out.
    void ShowView(const std::string& name);
    void PopOut(const std::string& name); // as the view's "Pop out" button does
    // Shows the view named so alone in the window ("": every view again); false if unknown.
    bool Focus(const std::string& view);
    std::vector<Action> Actions();

private:
    void HandleKeys();
    void MenuBar();
    void Banner();
    void Palette();
    void Layout();
    void Tabs();
    void Workbench();
    void Column(int top, int bottom, float& fraction, const char* splitter);
    void DrawView(int view, ImVec2 size);
    void PopOutButton(const ViewEntry& entry);
    void Windows();
    void ApplyCommands();

    GuiWorker& worker_;
    UploadTextureFn upload_texture_;
    Snapshot snapshot_;
    Selection selection_;
    RunSetupState setup_;
    DialogState dialogs_;
    ViewSettings settings_;
    Commands commands_;
    std::vector<bool> shown_;
    std::string select_tab_; // the tab label ShowView asked for, selected by the next Tabs()
    int raise_ = -1;         // the popped-out view ShowView brings to the front
    bool arrows_move_selection_ = true; // this frame's plain arrows: the selection's, not ImGui's (RouteArrows)
    size_t errors_seen_ = 0; // the banner shows errors after this many
    int alone_ = -1;         // the view shown alone, or -1
    bool quit_ = false, palette_open_ = false, about_open_ = false;
    std::string palette_filter_;
    int palette_cursor_ = 0;
};

} // namespace kvscope
