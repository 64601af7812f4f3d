// [SECTION] index: layout settings (ini) · actions and keys · menu, banner, palette ·
// layout and splitters · tabs and pop-out windows · commands
#include "app/gui_shell.h"

#include "app/gui_worker.h"

#include <imgui.h>
#include <imgui_internal.h> // the ini settings handler
#include <imgui_stdlib.h>

#include <GLFW/glfw3.h> // key codes: the 1.86 GLFW backend indexes io.KeysDown by them

#include <algorithm>
#include <cstdio>
#include <iterator>

namespace kvscope {

namespace {

// ---- [SECTION] layout settings: the splitters' fractions and the popped-out views, in the
// ini as [KVScope][Layout], and the model picker's recent models as [KVScope][Models]
struct LayoutSettings {
    float left = 0.22f;   // run setup's share of the width
    float strip = 0.16f;  // token strip's share of the centre's height
    float raster = 0.6f;  // the heatmap and raster column's share of the lower centre's width
    float grid = 0.4f;    // head grid's share of the right column's height
    float heatmap = 0.5f; // attention heatmap's share of its column's height
    std::vector<std::string> popped; // the tab views in their own windows, by name
};
LayoutSettings g_layout;

bool Popped(const ViewEntry& view) {
    return std::find(g_layout.popped.begin(), g_layout.popped.end(), view.name) != g_layout.popped.end();
}
void SetPopped(const ViewEntry& view, bool popped) {
    if (popped == Popped(view)) return;
    if (popped) g_layout.popped.emplace_back(view.name);
    else g_layout.popped.erase(std::find(g_layout.popped.begin(), g_layout.popped.end(), view.name));
    ImGui::MarkIniSettingsDirty();
}

// The handler's UserData is the run setup's recent_models.
std::vector<std::string>& RecentModels(ImGuiSettingsHandler* handler) {
    return *static_cast<std::vector<std::string>*>(handler->UserData);
}

void* ReadOpen(ImGuiContext*, ImGuiSettingsHandler* handler, const char* name) {
    if (std::string_view(name) == "Layout") return &g_layout;
    return std::string_view(name) == "Models" ? handler->UserData : nullptr;
}
void ReadLine(ImGuiContext*, ImGuiSettingsHandler* handler, void* entry, const char* line) {
    if (entry == handler->UserData) {
        const std::string_view text(line);
        if (text.rfind("Model=", 0) == 0 && text.size() > 6 && RecentModels(handler).size() < kRecentModels)
            RecentModels(handler).emplace_back(text.substr(6));
        return;
    }
    auto* l = static_cast<LayoutSettings*>(entry);
    float v = 0;
    const std::string_view text(line);
    if (text.rfind("PopOut=", 0) == 0) l->popped.emplace_back(text.substr(7));
    else if (std::sscanf(line, "Left=%f", &v) == 1) l->left = std::clamp(v, 0.1f, 0.6f);
    else if (std::sscanf(line, "Strip=%f", &v) == 1) l->strip = std::clamp(v, 0.08f, 0.6f);
    else if (std::sscanf(line, "Raster=%f", &v) == 1) l->raster = std::clamp(v, 0.15f, 0.85f);
    else if (std::sscanf(line, "Grid=%f", &v) == 1) l->grid = std::clamp(v, 0.1f, 0.9f);
    else if (std::sscanf(line, "Heatmap=%f", &v) == 1) l->heatmap = std::clamp(v, 0.1f, 0.9f);
}
void WriteAll(ImGuiContext*, ImGuiSettingsHandler* handler, ImGuiTextBuffer* out) {
    out->appendf("[%s][Layout]\nLeft=%.3f\nStrip=%.3f\nRaster=%.3f\nGrid=%.3f\nHeatmap=%.3f\n", handler->TypeName,
                 g_layout.left, g_layout.strip, g_layout.raster, g_layout.grid, g_layout.heatmap);
    for (const std::string& name : g_layout.popped) out->appendf("PopOut=%s\n", name.c_str());
    out->append("\n");
    out->appendf("[%s][Models]\n", handler->TypeName);
    for (const std::string& path : RecentModels(handler))
        if (path.find_first_of("\r\n") == std::string::npos) out->appendf("Model=%s\n", path.c_str());
    out->append("\n");
}

void RegisterSettings(std::vector<std::string>& recent_models) {
    ImGuiSettingsHandler handler;
    handler.TypeName = "KVScope";
    handler.TypeHash = ImHashStr("KVScope");
    handler.ReadOpenFn = ReadOpen;
    handler.ReadLineFn = ReadLine;
    handler.WriteAllFn = WriteAll;
    handler.UserData = &recent_models;
    ImGui::GetCurrentContext()->SettingsHandlers.push_back(handler);
}

const float kBar = 6.0f; // a splitter's thickness

// A bar between two regions that moves `fraction` of `total` as it is dragged.
void Splitter(const char* id, bool vertical, float& fraction, float total, float lo, float hi) {
    const float thickness = kBar;
    ImGui::InvisibleButton(id, vertical ? ImVec2{thickness, -1} : ImVec2{-1, thickness});
    if (ImGui::IsItemHovered() || ImGui::IsItemActive())
        ImGui::SetMouseCursor(vertical ? ImGuiMouseCursor_ResizeEW : ImGuiMouseCursor_ResizeNS);
    const bool active = ImGui::IsItemActive();
    ImGui::GetWindowDrawList()->AddRectFilled(ImGui::GetItemRectMin(), ImGui::GetItemRectMax(),
                                              ImGui::GetColorU32(active ? ImGuiCol_SeparatorActive : ImGuiCol_Separator));
    if (active && total > 0) {
        const float delta = vertical ? ImGui::GetIO().MouseDelta.x : ImGui::GetIO().MouseDelta.y;
        fraction = std::clamp(fraction + delta / total, lo, hi);
        ImGui::MarkIniSettingsDirty();
    }
}

// ViewTable()'s order: the main layout's views, then the tab views (compare, sessions, plugins, export).
enum ViewIndex { kRunSetup, kTokenStrip, kRaster, kHeadGrid, kMemory, kAttention };
const char* const kWorkbenchTab = "Workbench";

bool Pressed(int key) { return ImGui::IsKeyPressed(key, true); }

// ImGui reads the arrows through io.KeyMap, which the 1.86 GLFW backend fills once at its start.
const std::pair<int, int> kArrows[] = {{ImGuiKey_LeftArrow, GLFW_KEY_LEFT},
                                       {ImGuiKey_RightArrow, GLFW_KEY_RIGHT},
                                       {ImGuiKey_UpArrow, GLFW_KEY_UP},
                                       {ImGuiKey_DownArrow, GLFW_KEY_DOWN}};

bool IsArrow(int key) {
    return std::any_of(std::begin(kArrows), std::end(kArrows), [key](const auto& a) { return a.second == key; });
}

// The plain arrows move the selection unless a widget wants them: one in use (text being
// edited: io.WantTextInput would know a frame late), an open popup (a menu, a combo, the
// palette), or ImGui's keyboard navigation while it shows its highlight (Alt starts it, a
// click ends it): there they walk the widgets.
bool ArrowsMoveSelection() {
    const bool popup = ImGui::IsPopupOpen("", ImGuiPopupFlags_AnyPopupId);
    return !ImGui::IsAnyItemActive() && !ImGui::GetIO().NavVisible && !popup;
}

// Unmapped, the arrows reach the selection alone: NewFrame's keyboard navigation would
// otherwise move a widget's focus with them too, and show its highlight from then on.
void RouteArrows(bool to_selection) {
    ImGuiIO& io = ImGui::GetIO();
    for (const auto& [imgui_key, glfw_key] : kArrows) io.KeyMap[imgui_key] = to_selection ? -1 : glfw_key;
}

} // namespace

Shell::Shell(GuiWorker& worker, UploadTextureFn upload_texture) : worker_(worker), upload_texture_(upload_texture) {
    shown_.assign(ViewTable().size(), true);
    RegisterSettings(setup_.recent_models);
    RouteArrows(arrows_move_selection_);
}

// ---- [SECTION] actions and keys
std::string ShortcutText(const Action& a) {
    static const std::pair<int, const char*> names[] = {
        {GLFW_KEY_F5, "F5"},       {GLFW_KEY_LEFT, "Left"},          {GLFW_KEY_RIGHT, "Right"},
        {GLFW_KEY_UP, "Up"},       {GLFW_KEY_DOWN, "Down"},          {GLFW_KEY_LEFT_BRACKET, "["},
        {GLFW_KEY_ESCAPE, "Esc"},  {GLFW_KEY_RIGHT_BRACKET, "]"},    {GLFW_KEY_P, "P"},
        {GLFW_KEY_Q, "Q"},         {GLFW_KEY_E, "E"},                {GLFW_KEY_SPACE, "Space"},
        {GLFW_KEY_PERIOD, "."}};
    std::string text;
    for (const auto& [key, name] : names)
        if (key == a.key) text = std::string(a.ctrl ? "Ctrl+" : "") + (a.shift ? "Shift+" : "") + name;
    return text;
}

std::vector<Action> Shell::Actions() {
    const bool busy = animating() && snapshot_.model.ready;
    Selection& sel = selection_;
    std::vector<Action> actions = {
        {"File: quit", [this] { quit_ = true; }, true, GLFW_KEY_Q, true},
        {"Run: start the run as set up", [this] { RunNow(); }, snapshot_.model.ready && !busy, GLFW_KEY_F5},
        {"Run: stop", [this] { commands_.stop = true; }, busy, GLFW_KEY_F5, false, true},
        {"Run: run, or pause and resume",
         [this, busy] {
             if (busy) commands_.pause = true;
             else RunNow();
         },
         snapshot_.model.ready, GLFW_KEY_SPACE},
        {"Run: one decode step (paused)", [this] { commands_.step = true; }, busy && snapshot_.paused, GLFW_KEY_PERIOD},
        {"File: export runs", [this] { ShowView("Export"); }, true, GLFW_KEY_E, true},
        {"File: session browser", [this] { ShowView("Session browser"); }},
        {"Plugins: plugin manager", [this] { ShowView("Plugin manager"); }},
        {"Run: previous step", [&sel] { sel.step = std::max(0, sel.step - 1); }, true, GLFW_KEY_LEFT},
        {"Run: next step", [&sel] { ++sel.step; }, true, GLFW_KEY_RIGHT},
        {"Run: previous layer", [&sel] { sel.layer = std::max(0, sel.layer - 1); }, true, GLFW_KEY_UP},
        {"Run: next layer", [&sel] { ++sel.layer; }, true, GLFW_KEY_DOWN},
        {"Run: previous KV head", [&sel] { sel.head = std::max(0, sel.head - 1); }, true, GLFW_KEY_LEFT_BRACKET},
        {"Run: next KV head", [&sel] { ++sel.head; }, true, GLFW_KEY_RIGHT_BRACKET},
        {"Run: clear the selection", [&sel] { sel = Selection{}; }, true, GLFW_KEY_ESCAPE},
        {"View: reset layout", [] { g_layout = LayoutSettings{}; ImGui::MarkIniSettingsDirty(); }},
        {"View: every view (leave the focused one)", [this] { alone_ = -1; }, alone_ >= 0},
        {"Help: command palette", [this] { palette_open_ = true; }, true, GLFW_KEY_P, true},
        {"Help: about KVScope", [this] { about_open_ = true; }},
    };
    for (size_t i = 0; i < ViewTable().size(); ++i) {
        actions.push_back({std::string("View: show or hide ") + ViewTable()[i].name, [this, i] { shown_[i] = !shown_[i]; }});
        actions.push_back({std::string("View: focus ") + ViewTable()[i].name + " (it alone, the whole window)",
                           [this, i] { alone_ = int(i); }});
    }
    return actions;
}

void Shell::HandleKeys() {
    const ImGuiIO& io = ImGui::GetIO();
    for (const Action& a : Actions()) {
        // While typing, only chords and function keys act; an open popup (the palette, a
        // menu, a combo) takes the others.
        const bool chord = a.ctrl || a.key == GLFW_KEY_F5;
        const bool popup = ImGui::IsPopupOpen("", ImGuiPopupFlags_AnyPopupId); // Esc and the arrows are its
        if (!a.key || !a.enabled || (!chord && (io.WantTextInput || popup))) continue;
        if (IsArrow(a.key) && !arrows_move_selection_) continue; // ImGui has them this frame
        if (a.ctrl == io.KeyCtrl && a.shift == io.KeyShift && ImGui::IsKeyPressed(a.key, true)) a.run();
    }
    if (selection_.run >= 0 && size_t(selection_.run) < snapshot_.runs.size())
        selection_.step = std::min(selection_.step, int(snapshot_.runs[size_t(selection_.run)].steps.size()) - 1);
}

// ---- [SECTION] menu, banner, palette
void Shell::MenuBar() {
    if (!ImGui::BeginMenuBar()) return;
    const std::vector<Action> actions = Actions();
    // Each menu lists the actions whose name starts with its title, as the palette does.
    for (const char* menu : {"File", "Run", "View", "Plugins", "Help"}) {
        if (!ImGui::BeginMenu(menu)) continue;
        if (std::string_view(menu) == "View")
            for (size_t i = 0; i < ViewTable().size(); ++i) {
                bool shown = shown_[i];
                if (ImGui::MenuItem(ViewTable()[i].name, nullptr, &shown)) shown_[i] = shown;
                if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", ViewTable()[i].tooltip);
            }
        for (const Action& a : actions)
            if (a.name.rfind(menu, 0) == 0 && a.name.find("show or hide") == std::string::npos &&
                a.name.find("View: focus") == std::string::npos &&
                ImGui::MenuItem(a.name.c_str() + std::string_view(menu).size() + 2, ShortcutText(a).c_str(), false, a.enabled))
                a.run();
        ImGui::EndMenu();
    }
    const ModelInfo& m = snapshot_.model;
    char status[256];
    std::snprintf(status, sizeof status, "%s · %s · %.0f fps", m.ready ? m.name.c_str() : "loading model",
                  m.device.c_str(), ImGui::GetIO().Framerate);
    ImGui::SameLine(ImGui::GetWindowWidth() - ImGui::CalcTextSize(status).x - ImGui::GetStyle().ItemSpacing.x * 2);
    ImGui::TextUnformatted(status);
    ImGui::EndMenuBar();
}

void Shell::Banner() {
    if (errors_seen_ > snapshot_.errors.size()) errors_seen_ = 0;
    if (errors_seen_ == snapshot_.errors.size()) return;
    ImGui::PushStyleColor(ImGuiCol_ChildBg, IM_COL32(120, 30, 30, 255));
    ImGui::BeginChild("banner", {0, ImGui::GetFrameHeightWithSpacing() + 4}, true);
    ImGui::TextUnformatted(snapshot_.errors.back().c_str());
    if (snapshot_.errors.size() - errors_seen_ > 1) {
        ImGui::SameLine();
        ImGui::TextDisabled("(+%zu more)", snapshot_.errors.size() - errors_seen_ - 1);
    }
    ImGui::SameLine(ImGui::GetWindowWidth() - ImGui::CalcTextSize("Dismiss").x - 24);
    if (ImGui::SmallButton("Dismiss")) errors_seen_ = snapshot_.errors.size();
    ImGui::EndChild();
    ImGui::PopStyleColor();
}

void Shell::Palette() {
    if (palette_open_) {
        ImGui::OpenPopup("Command palette");
        palette_open_ = false;
        palette_filter_.clear();
        palette_cursor_ = 0;
    }
    const ImVec2 center = ImGui::GetMainViewport()->GetCenter();
    ImGui::SetNextWindowPos({center.x, center.y * 0.5f}, ImGuiCond_Appearing, {0.5f, 0.5f});
    ImGui::SetNextWindowSize({ImGui::GetFontSize() * 36, 0});
    if (!ImGui::BeginPopup("Command palette")) return;
    if (ImGui::IsWindowAppearing()) ImGui::SetKeyboardFocusHere();
    ImGui::SetNextItemWidth(-1);
    if (ImGui::InputTextWithHint("##filter", "type to filter, Up/Down to choose, Enter to run", &palette_filter_))
        palette_cursor_ = 0;
    std::vector<Action> matching;
    for (Action& a : Actions()) {
        std::string lower = a.name, want = palette_filter_;
        for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
        for (char& c : want) c = char(std::tolower(static_cast<unsigned char>(c)));
        if (lower.find(want) != std::string::npos) matching.push_back(std::move(a));
    }
    if (Pressed(GLFW_KEY_DOWN)) ++palette_cursor_;
    if (Pressed(GLFW_KEY_UP)) --palette_cursor_;
    palette_cursor_ = std::clamp(palette_cursor_, 0, std::max(0, int(matching.size()) - 1));
    const Action* chosen = nullptr;
    for (size_t i = 0; i < matching.size(); ++i) {
        ImGui::BeginDisabled(!matching[i].enabled);
        if (ImGui::Selectable(matching[i].name.c_str(), int(i) == palette_cursor_)) chosen = &matching[i];
        ImGui::EndDisabled();
        const std::string shortcut = ShortcutText(matching[i]);
        ImGui::SameLine(ImGui::GetWindowWidth() - ImGui::CalcTextSize(shortcut.c_str()).x - 16);
        ImGui::TextDisabled("%s", shortcut.c_str());
    }
    if (Pressed(GLFW_KEY_ENTER) && !matching.empty()) chosen = &matching[size_t(palette_cursor_)];
    if (Pressed(GLFW_KEY_ESCAPE)) ImGui::CloseCurrentPopup(); // one Esc, though the filter has the focus
    if (chosen && chosen->enabled) {
        chosen->run();
        ImGui::CloseCurrentPopup();
    }
    ImGui::EndPopup();
}

// ---- [SECTION] layout and splitters
void Shell::DrawView(int view, ImVec2 size) {
    const ViewEntry& entry = ViewTable()[size_t(view)];
    ImGui::BeginChild(entry.name, size, true);
    ImGui::TextDisabled("%s", entry.name);
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", entry.tooltip);
    if (entry.tab && alone_ < 0) PopOutButton(entry); // focused alone, it stays in the layout
    ViewContext ctx{snapshot_, selection_, setup_, dialogs_, settings_, commands_, upload_texture_};
    entry.draw(ctx);
    ImGui::EndChild();
}

// Two views stacked, the top one taking `fraction` of the height when both are shown.
void Shell::Column(int top, int bottom, float& fraction, const char* splitter) {
    const float h = ImGui::GetContentRegionAvail().y;
    if (shown_[top]) DrawView(top, {0, shown_[bottom] ? std::floor(h * fraction) : h});
    if (shown_[top] && shown_[bottom]) Splitter(splitter, false, fraction, h, 0.1f, 0.9f);
    if (shown_[bottom]) DrawView(bottom, {0, 0});
}

// The token strip over two columns: heatmap over raster, head grid over memory.
void Shell::Workbench() {
    const ImVec2 c = ImGui::GetContentRegionAvail();
    if (shown_[kTokenStrip]) {
        DrawView(kTokenStrip, {c.x, std::floor(c.y * g_layout.strip)});
        Splitter("##strip", false, g_layout.strip, c.y, 0.08f, 0.6f);
    }
    const float lower_h = ImGui::GetContentRegionAvail().y;
    const bool left = shown_[kAttention] || shown_[kRaster], right = shown_[kHeadGrid] || shown_[kMemory];
    if (left) {
        ImGui::BeginChild("lower left", {right ? std::floor(c.x * g_layout.raster) : c.x, lower_h}, false);
        Column(kAttention, kRaster, g_layout.heatmap, "##heatmap");
        ImGui::EndChild();
        if (right) {
            ImGui::SameLine(0, 0);
            Splitter("##raster", true, g_layout.raster, c.x, 0.15f, 0.85f);
            ImGui::SameLine(0, 0);
        }
    }
    if (right) {
        ImGui::BeginChild("right", {0, lower_h}, false);
        Column(kHeadGrid, kMemory, g_layout.grid, "##grid");
        ImGui::EndChild();
    }
}

void Shell::Layout() {
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    if (alone_ >= 0 && size_t(alone_) < ViewTable().size()) return DrawView(alone_, avail);
    const float left_w = shown_[kRunSetup] ? std::floor(avail.x * g_layout.left) : 0;
    if (shown_[kRunSetup]) {
        DrawView(kRunSetup, {left_w, avail.y});
        ImGui::SameLine(0, 0);
        Splitter("##left", true, g_layout.left, avail.x, 0.1f, 0.6f);
        ImGui::SameLine(0, 0);
    }
    ImGui::BeginChild("centre", {0, avail.y}, false);
    Tabs();
    ImGui::EndChild();
}

// ---- [SECTION] tabs and pop-out windows
// The workbench's tab, then the tab views' (UI.md) but for those hidden or popped out.
void Shell::Tabs() {
    if (!ImGui::BeginTabBar("centre tabs")) return;
    const auto flags = [this](const char* tab) { return select_tab_ == tab ? ImGuiTabItemFlags_SetSelected : 0; };
    if (ImGui::BeginTabItem(kWorkbenchTab, nullptr, flags(kWorkbenchTab))) {
        Workbench();
        ImGui::EndTabItem();
    }
    for (size_t i = 0; i < ViewTable().size(); ++i) {
        const ViewEntry& entry = ViewTable()[i];
        if (entry.tab && shown_[i] && !Popped(entry) && ImGui::BeginTabItem(entry.tab, nullptr, flags(entry.tab))) {
            DrawView(int(i), {0, 0});
            ImGui::EndTabItem();
        }
    }
    ImGui::EndTabBar();
    select_tab_.clear();
}

void Shell::PopOutButton(const ViewEntry& entry) {
    ImGui::SameLine(ImGui::GetWindowContentRegionMax().x - ImGui::CalcTextSize("Pop out").x -
                    ImGui::GetStyle().FramePadding.x * 2);
    if (ImGui::SmallButton("Pop out")) SetPopped(entry, true);
    if (ImGui::IsItemHovered())
        ImGui::SetTooltip("Into its own window; closing the window puts it back among the tabs.");
}

void Shell::ShowView(const std::string& name) {
    if (name.empty()) {
        select_tab_ = kWorkbenchTab;
        return;
    }
    for (size_t i = 0; i < ViewTable().size(); ++i) {
        const ViewEntry& entry = ViewTable()[i];
        if (!entry.tab || name != entry.name) continue;
        shown_[i] = true;
        if (Popped(entry)) raise_ = int(i);
        else select_tab_ = entry.tab;
    }
}

void Shell::PopOut(const std::string& name) {
    for (const ViewEntry& entry : ViewTable())
        if (entry.tab && name == entry.name) SetPopped(entry, true);
}

// The popped-out tab views, each its own window (but once: a view focused alone is drawn in the layout).
void Shell::Windows() {
    const ImGuiViewport* vp = ImGui::GetMainViewport();
    for (size_t i = 0; i < ViewTable().size(); ++i) {
        const ViewEntry& entry = ViewTable()[i];
        if (!entry.tab || !shown_[i] || !Popped(entry) || alone_ == int(i)) continue;
        ImGui::SetNextWindowSize({vp->WorkSize.x * 0.6f, vp->WorkSize.y * 0.7f}, ImGuiCond_FirstUseEver);
        ImGui::SetNextWindowPos(vp->GetCenter(), ImGuiCond_FirstUseEver, {0.5f, 0.5f});
        if (raise_ == int(i)) ImGui::SetNextWindowFocus();
        ImGui::SetNextWindowBgAlpha(1.0f); // opaque: the views under it would blur its text
        bool open = true;
        if (ImGui::Begin(entry.name, &open)) {
            ViewContext ctx{snapshot_, selection_, setup_, dialogs_, settings_, commands_, upload_texture_};
            entry.draw(ctx);
        }
        ImGui::End();
        if (!open) { // back among the tabs, in front
            SetPopped(entry, false);
            select_tab_ = entry.tab;
        }
    }
    raise_ = -1;
}

// ---- [SECTION] commands
bool Shell::animating() const {
    const HeadAnalysis& heads = snapshot_.heads;
    return !snapshot_.model.ready || (!snapshot_.runs.empty() && snapshot_.runs.back().live()) ||
           heads.status == HeadAnalysis::Status::Running || heads.map_pending;
}

bool Shell::Focus(const std::string& view) {
    alone_ = -1;
    for (size_t i = 0; i < ViewTable().size(); ++i)
        if (view == ViewTable()[i].name) alone_ = int(i);
    return alone_ >= 0 || view.empty();
}

void Shell::RunNow() {
    if (!snapshot_.model.ready || (!snapshot_.runs.empty() && snapshot_.runs.back().live())) return;
    commands_.run = true;
    commands_.request = MakeRunRequest(snapshot_, setup_);
}

void Shell::ApplyCommands() {
    if (commands_.run) {
        worker_.Run(commands_.request);
        selection_.run = -1; // follow the latest run: the new one, once it appears
        selection_.step = -1;
    }
    if (commands_.stop) worker_.Stop();
    if (commands_.pause) worker_.Pause(!snapshot_.paused);
    if (commands_.step) worker_.Step();
    if (commands_.refresh_runs) worker_.RefreshStoredRuns();
    for (int64_t id : commands_.open_runs) worker_.OpenStoredRun(id);
    if (!commands_.open_runs.empty()) selection_.run = -1; // follow the latest run: the opened one
    if (!commands_.delete_runs.empty()) worker_.DeleteStoredRuns(commands_.delete_runs);
    if (commands_.export_runs) worker_.Export(commands_.export_request);
    if (!commands_.load_plugin.empty()) worker_.LoadPlugin(commands_.load_plugin);
    if (!commands_.load_model.empty()) worker_.LoadModel(commands_.load_model);
    if (commands_.show_view) ShowView(commands_.show_view);
    if (commands_.analyze_heads) worker_.AnalyzeHeads(commands_.fresh_analysis);
    if (commands_.head_attention.head >= 0) worker_.ShowHeadAttention(commands_.head_attention);
    commands_ = Commands{};
}

void Shell::Frame() {
    worker_.Sync(snapshot_); // when the worker holds the lock, last frame's copy will do
    HandleKeys();
    const ImGuiViewport* vp = ImGui::GetMainViewport();
    ImGui::SetNextWindowPos(vp->WorkPos);
    ImGui::SetNextWindowSize(vp->WorkSize);
    ImGui::PushStyleVar(ImGuiStyleVar_WindowRounding, 0);
    ImGui::Begin("KVScope", nullptr,
                 ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_MenuBar | ImGuiWindowFlags_NoMove |
                     ImGuiWindowFlags_NoBringToFrontOnFocus | ImGuiWindowFlags_NoSavedSettings |
                     ImGuiWindowFlags_NoBackground); // the clear colour is the background: one full-screen pass less
    ImGui::PopStyleVar();
    MenuBar();
    Banner();
    Layout();
    Palette();
    ImGui::End();
    Windows();
    if (about_open_) {
        ImGui::Begin("About KVScope", &about_open_, ImGuiWindowFlags_AlwaysAutoResize);
        ImGui::Text("KVScope: a workbench for KV-cache compression research.");
        ImGui::Text("Ctrl+P lists every action and its keys.");
        ImGui::Text("The arrows move the selection (Left/Right a step, Up/Down a layer) unless a widget");
        ImGui::Text("is being edited or walked with keyboard navigation (Alt starts it, a click ends it).");
        ImGui::End();
    }
    ApplyCommands();
    arrows_move_selection_ = ArrowsMoveSelection(); // for the next frame, whose NewFrame reads io.KeyMap
    RouteArrows(arrows_move_selection_);
}

} // namespace kvscope
