// Plugin manager: the loaded plugins (name, origin, ABI version, build tag), their methods
// and parameter schemas, the loads that failed, the plugins that crashed (off until they
// are reloaded); load a .so, or reload one after a rebuild.
// The worker loads between runs, so a reload never pulls a library from under a run.
#include "views/plot.h"
#include "views/views.h"

#include <imgui_stdlib.h>

namespace kvscope {

namespace {

const char* TypeName(ParamSchema::Type type) {
    return type == ParamSchema::Int ? "int" : type == ParamSchema::Bool ? "bool" : "float";
}

void MethodSchemas(const std::vector<MethodSchema>& methods, const std::string& plugin) {
    for (const MethodSchema& m : methods) {
        if (m.plugin != plugin) continue;
        if (!ImGui::TreeNode(m.name.c_str(), "%s  (%s)", m.name.c_str(), m.family.c_str())) continue;
        if (!m.help.empty()) ImGui::TextWrapped("%s", m.help.c_str());
        for (const ParamSchema& p : m.params) {
            ImGui::BulletText("%s: %s = %g in [%g, %g]", p.name.c_str(), TypeName(p.type), p.default_value,
                              p.min_value, p.max_value);
            if (!p.help.empty() && ImGui::IsItemHovered()) ImGui::SetTooltip("%s", p.help.c_str());
        }
        if (m.params.empty()) ImGui::TextDisabled("no parameters");
        ImGui::TreePop();
    }
}

void PluginEntry(ViewContext& ctx, const PluginInfo& p, bool busy) {
    ImGui::PushID(p.origin.c_str());
    const bool open = ImGui::TreeNodeEx("plugin", ImGuiTreeNodeFlags_DefaultOpen, "%s", p.name.c_str());
    if (p.origin != "built-in") {
        ImGui::SameLine();
        if (ImGui::SmallButton("Reload")) ctx.commands.load_plugin = p.origin;
        if (ImGui::IsItemHovered())
            ImGui::SetTooltip(busy ? "Reloads once the run in progress ends." : "Load the file again (after a rebuild).");
    }
    if (!p.crash.empty()) {
        ImGui::SameLine();
        ImGui::TextColored(ImVec4{1, 0.45f, 0.4f, 1}, "crashed, off");
        if (ImGui::IsItemHovered()) ImGui::SetTooltip("Its code is not run again until it is reloaded: %s", p.crash.c_str());
    }
    if (open) {
        ImGui::TextDisabled("%s", p.origin.c_str());
        ImGui::TextDisabled("ABI %d, build tag %s", p.abi_version,
                            p.build_tag.empty() ? "(none: links no libtorch)" : p.build_tag.c_str());
        MethodSchemas(ctx.snapshot.methods, p.name);
        ImGui::TreePop();
    }
    ImGui::PopID();
}

} // namespace

void DrawPluginManagerView(ViewContext& ctx) {
    const Catalog& c = ctx.snapshot.catalog;
    const bool busy = !ctx.snapshot.runs.empty() && ctx.snapshot.runs.back().live();
    ImGui::SetNextItemWidth(-ImGui::CalcTextSize("Load .so").x - ImGui::GetStyle().FramePadding.x * 4);
    ImGui::InputTextWithHint("##path", "/path/to/plugin.so", &ctx.dialogs.plugin_path);
    ImGui::SameLine();
    ImGui::BeginDisabled(ctx.dialogs.plugin_path.empty());
    if (ImGui::Button("Load .so")) ctx.commands.load_plugin = ctx.dialogs.plugin_path;
    ImGui::EndDisabled();
    if (busy) ImGui::TextDisabled("A run is in progress: loads and reloads wait for it to end.");
    for (const std::string& e : c.plugin_errors) {
        ImGui::PushStyleColor(ImGuiCol_Text, ImVec4{1, 0.45f, 0.4f, 1});
        ImGui::TextWrapped("%s", e.c_str());
        ImGui::PopStyleColor();
    }
    SectionHeading("Loaded");
    ImGui::BeginChild("plugins");
    for (const PluginInfo& p : c.plugins) PluginEntry(ctx, p, busy);
    ImGui::EndChild();
}

} // namespace kvscope
