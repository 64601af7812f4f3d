// Session browser: the runs the session database keeps (the workbench's and `kvscope run`'s
// alike), filtered by text; open one into the views, export or delete the chosen ones.
// The worker reads and deletes; this view only lists what the catalog holds.
#include "views/plot.h"
#include "views/views.h"

#include <imgui_stdlib.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace kvscope {

namespace {

std::string Lower(std::string text) {
    for (char& c : text) c = char(std::tolower(static_cast<unsigned char>(c)));
    return text;
}

bool Matches(const StoredRunRow& r, const std::string& filter) {
    if (filter.empty()) return true;
    const std::string all = Lower(std::to_string(r.id) + " " + r.method + " " + r.budget + " " + r.task + " " +
                                  r.status + " " + r.started_at + " " + r.model + " " + r.prompt);
    return all.find(Lower(filter)) != std::string::npos;
}

bool Chosen(const DialogState& d, int64_t id) {
    return std::find(d.chosen_runs.begin(), d.chosen_runs.end(), id) != d.chosen_runs.end();
}

void SetChosen(DialogState& d, int64_t id, bool chosen) {
    auto& v = d.chosen_runs;
    v.erase(std::remove(v.begin(), v.end(), id), v.end());
    if (chosen) v.push_back(id);
}

// A cell's text with its one-sentence tooltip.
void Cell(const char* text, const char* tooltip) {
    ImGui::TextUnformatted(text);
    if (tooltip && ImGui::IsItemHovered()) ImGui::SetTooltip("%s", tooltip);
}

void RunRow(ViewContext& ctx, const StoredRunRow& r) {
    ImGui::PushID(int(r.id));
    ImGui::TableNextRow();
    ImGui::TableNextColumn();
    bool chosen = Chosen(ctx.dialogs, r.id);
    if (ImGui::Checkbox("##chosen", &chosen)) SetChosen(ctx.dialogs, r.id, chosen);
    ImGui::TableNextColumn();
    char id[24];
    std::snprintf(id, sizeof id, "%lld", (long long)r.id);
    // The id spans the row: a click chooses the run, a double click opens it.
    if (ImGui::Selectable(id, chosen, ImGuiSelectableFlags_SpanAllColumns | ImGuiSelectableFlags_AllowItemOverlap |
                                          ImGuiSelectableFlags_AllowDoubleClick)) {
        if (ImGui::IsMouseDoubleClicked(0)) ctx.commands.open_runs = {r.id};
        else SetChosen(ctx.dialogs, r.id, !chosen);
    }
    if (ImGui::IsItemHovered() && !r.prompt.empty()) ImGui::SetTooltip("%s\n\n%s", r.model.c_str(), r.prompt.c_str());
    ImGui::TableNextColumn();
    Cell(r.started_at.c_str(), "When the run started (UTC).");
    ImGui::TableNextColumn();
    Cell(r.method.c_str(), nullptr);
    ImGui::TableNextColumn();
    Cell(r.budget.c_str(), "Slots kept per layer and KV head, or a share of the context.");
    ImGui::TableNextColumn();
    Cell(r.task.c_str(), nullptr);
    ImGui::TableNextColumn();
    Cell(r.status.c_str(), "ok, failed, or unfinished (its process stopped before the run ended).");
    ImGui::TableNextColumn();
    char text[32] = "-";
    if (r.token_match >= 0) std::snprintf(text, sizeof text, "%.1f%%", 100 * r.token_match);
    Cell(text, "Share of decode steps whose token equals the full-cache reference's (- : no reference).");
    ImGui::TableNextColumn();
    Cell(r.kv_bytes >= 0 ? FormatBytes(double(r.kv_bytes)) : "-", "Bytes of KV pages the cache held at the end.");
    ImGui::TableNextColumn();
    std::snprintf(text, sizeof text, "%lld", (long long)r.steps);
    Cell(text, "Decode steps stored.");
    ImGui::PopID();
}

void RunTable(ViewContext& ctx, const std::vector<const StoredRunRow*>& rows) {
    const ImGuiTableFlags flags = ImGuiTableFlags_RowBg | ImGuiTableFlags_Borders | ImGuiTableFlags_ScrollY |
                                  ImGuiTableFlags_Resizable | ImGuiTableFlags_SizingFixedFit;
    const float footer = ImGui::GetFrameHeightWithSpacing();
    if (!ImGui::BeginTable("runs", 10, flags, {0, -footer})) return;
    ImGui::TableSetupScrollFreeze(0, 1);
    for (const char* name : {"", "run", "started (UTC)", "method", "budget", "task", "status", "match", "KV", "steps"})
        ImGui::TableSetupColumn(name, std::string_view(name) == "method" ? ImGuiTableColumnFlags_WidthStretch : 0);
    ImGui::TableHeadersRow();
    ImGuiListClipper clipper; // only the visible rows: a database can hold thousands
    clipper.Begin(int(rows.size()));
    while (clipper.Step())
        for (int i = clipper.DisplayStart; i < clipper.DisplayEnd; ++i) RunRow(ctx, *rows[size_t(i)]);
    ImGui::EndTable();
}

void DeleteConfirmation(ViewContext& ctx) {
    DialogState& d = ctx.dialogs;
    if (d.ask_delete) {
        ImGui::OpenPopup("Delete runs?");
        d.ask_delete = false;
    }
    if (!ImGui::BeginPopupModal("Delete runs?", nullptr, ImGuiWindowFlags_AlwaysAutoResize)) return;
    ImGui::Text("Delete %zu run%s from the database, with their steps and decisions?", d.chosen_runs.size(),
                d.chosen_runs.size() == 1 ? "" : "s");
    ImGui::TextDisabled("This cannot be undone; export them first to keep a copy.");
    if (ImGui::Button("Delete (Enter)") || ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Enter))) {
        ctx.commands.delete_runs = d.chosen_runs;
        d.chosen_runs.clear();
        ImGui::CloseCurrentPopup();
    }
    ImGui::SameLine();
    if (ImGui::Button("Cancel (Esc)") || ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Escape)))
        ImGui::CloseCurrentPopup();
    ImGui::EndPopup();
}

void Actions(ViewContext& ctx) {
    DialogState& d = ctx.dialogs;
    ImGui::BeginDisabled(d.chosen_runs.empty());
    if (ImGui::Button("Open")) ctx.commands.open_runs = d.chosen_runs;
    if (ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled))
        ImGui::SetTooltip("Open the chosen runs into the views, as the runs of this session (or double-click a row).");
    ImGui::SameLine();
    if (ImGui::Button("Export...")) ctx.commands.show_view = "Export";
    ImGui::SameLine();
    if (ImGui::Button("Delete...")) d.ask_delete = true;
    ImGui::EndDisabled();
    ImGui::SameLine();
    ImGui::TextDisabled("%zu chosen", d.chosen_runs.size());
    DeleteConfirmation(ctx);
}

} // namespace

void DrawSessionBrowserView(ViewContext& ctx) {
    const Catalog& c = ctx.snapshot.catalog;
    if (ImGui::IsWindowAppearing()) ctx.commands.refresh_runs = true; // other processes may have stored runs
    ImGui::TextDisabled("%s", c.db_path.empty() ? "(opening the session database)" : c.db_path.c_str());
    ImGui::SameLine();
    if (ImGui::SmallButton("Refresh")) ctx.commands.refresh_runs = true;
    if (!c.db_error.empty()) ImGui::TextColored({1, 0.45f, 0.4f, 1}, "%s", c.db_error.c_str());
    std::vector<const StoredRunRow*> rows;
    for (const StoredRunRow& r : c.stored_runs)
        if (Matches(r, ctx.dialogs.run_filter)) rows.push_back(&r);
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 20);
    ImGui::InputTextWithHint("##filter", "filter: method, task, status, date...", &ctx.dialogs.run_filter);
    ImGui::SameLine();
    ImGui::TextDisabled("%zu of %zu runs", rows.size(), c.stored_runs.size());
    RunTable(ctx, rows);
    Actions(ctx);
}

} // namespace kvscope
