// Export dialog (Ctrl+E): the chosen stored runs, a format and a file; the worker writes it
// with the exporters `kvscope export` uses, so the two give the same bytes.
#include "views/plot.h"
#include "views/views.h"

#include <imgui_stdlib.h>

#include <algorithm>
#include <cstdio>

namespace kvscope {

namespace {

// The stored runs as checkboxes: the same choice as the session browser's.
void RunChoice(ViewContext& ctx) {
    const auto& rows = ctx.snapshot.catalog.stored_runs;
    auto& chosen = ctx.dialogs.chosen_runs;
    if (ImGui::SmallButton("all")) {
        chosen.clear();
        for (const StoredRunRow& r : rows) chosen.push_back(r.id);
    }
    ImGui::SameLine();
    if (ImGui::SmallButton("none")) chosen.clear();
    ImGui::SameLine();
    ImGui::TextDisabled("%zu of %zu runs chosen", chosen.size(), rows.size());
    const float below = ImGui::GetFrameHeightWithSpacing() * 4 + ImGui::GetTextLineHeightWithSpacing() * 2;
    ImGui::BeginChild("runs", {0, -below}, true);
    ImGuiListClipper clipper;
    clipper.Begin(int(rows.size()));
    while (clipper.Step())
        for (int i = clipper.DisplayStart; i < clipper.DisplayEnd; ++i) {
            const StoredRunRow& r = rows[size_t(i)];
            bool on = std::find(chosen.begin(), chosen.end(), r.id) != chosen.end();
            char label[320];
            std::snprintf(label, sizeof label, "%lld  %s  %s @ %s  %s  (%s)", (long long)r.id, r.started_at.c_str(),
                          r.method.c_str(), r.budget.c_str(), r.task.c_str(), r.status.c_str());
            ImGui::PushID(int(r.id));
            if (ImGui::Checkbox(label, &on)) {
                chosen.erase(std::remove(chosen.begin(), chosen.end(), r.id), chosen.end());
                if (on) chosen.push_back(r.id);
            }
            ImGui::PopID();
        }
    ImGui::EndChild();
}

void FormatChoice(ViewContext& ctx) {
    const auto& formats = ctx.snapshot.catalog.export_formats;
    ExportRequest& request = ctx.dialogs.export_request;
    if (ImGui::BeginCombo("format", request.format.c_str())) {
        for (const FormatInfo& f : formats) {
            if (ImGui::Selectable(f.name.c_str(), f.name == request.format)) request.format = f.name;
            if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", f.what.c_str());
        }
        ImGui::EndCombo();
    }
    for (const FormatInfo& f : formats)
        if (f.name == request.format) HelpMarker(f.what.c_str());
}

} // namespace

void RequestExport(const DialogState& dialogs, Commands& commands) {
    commands.export_runs = true;
    commands.export_request = dialogs.export_request;
    commands.export_request.runs = dialogs.chosen_runs;
}

void DrawExportView(ViewContext& ctx) {
    const Catalog& c = ctx.snapshot.catalog;
    if (ImGui::IsWindowAppearing()) ctx.commands.refresh_runs = true; // other processes may have stored runs
    RunChoice(ctx);
    FormatChoice(ctx);
    ExportRequest& request = ctx.dialogs.export_request;
    ImGui::InputTextWithHint("file", "/path/to/runs.json (replaced only once complete)", &request.path);
    HelpMarker("The file to write. The report writes Markdown there and an HTML page and PNG plots beside it.");
    const bool ready = !ctx.dialogs.chosen_runs.empty() && !request.path.empty();
    ImGui::BeginDisabled(!ready);
    if (ImGui::Button("Export")) RequestExport(ctx.dialogs, ctx.commands);
    ImGui::EndDisabled();
    if (c.exports == 0) return;
    ImGui::PushStyleColor(ImGuiCol_Text, c.export_ok ? ImVec4{0.45f, 0.85f, 0.45f, 1} : ImVec4{1, 0.45f, 0.4f, 1});
    ImGui::TextWrapped("%s", c.export_result.c_str()); // the last export's, written or not
    ImGui::PopStyleColor();
}

} // namespace kvscope
