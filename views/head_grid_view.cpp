// Head-role grid: layer × KV head, coloured by the fraction of the context each head
// still keeps at the selected step (the head-analysis issue adds role scores here). Click
// a cell to select that layer and head in every view.
#include "views/plot.h"
#include "views/views.h"

#include <algorithm>

namespace kvscope {

namespace {

// Evictions per (layer, head) up to `step`: layer * n_head + head.
std::vector<int64_t> EvictedBy(const RunView& run, int n_layer, int n_head, int64_t step) {
    std::vector<int64_t> evicted(size_t(n_layer * n_head), 0);
    for (const Eviction& e : run.evictions) {
        if (e.step > step) break;
        if (e.layer < n_layer && e.head < n_head) ++evicted[size_t(e.layer * n_head + e.head)];
    }
    return evicted;
}

void Legend() {
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const ImVec2 o = ImGui::GetCursorScreenPos();
    const float w = ImGui::GetFontSize() * 8, h = ImGui::GetTextLineHeight() * 0.6f;
    for (int i = 0; i < 32; ++i)
        dl->AddRectFilled({o.x + w * float(i) / 32, o.y}, {o.x + w * float(i + 1) / 32, o.y + h}, ScoreColor(float(i) / 31));
    ImGui::Dummy({w, h});
    ImGui::SameLine();
    ImGui::TextDisabled("0 .. 100%% of the context kept");
}

} // namespace

void DrawHeadGridView(ViewContext& ctx) {
    const auto& runs = ctx.snapshot.runs;
    const ModelInfo& m = ctx.snapshot.model;
    const int r = ctx.selection.run >= 0 && size_t(ctx.selection.run) < runs.size() ? ctx.selection.run : int(runs.size()) - 1;
    if (r < 0 || runs[size_t(r)].steps.empty() || m.n_layer == 0) {
        ImGui::TextDisabled("No decode steps yet.");
        return;
    }
    const RunView& run = runs[size_t(r)];
    const int64_t last = int64_t(run.steps.size()) - 1;
    const int64_t step = ctx.selection.step >= 0 ? std::min<int64_t>(ctx.selection.step, last) : last;
    const int64_t present = run.n_prompt + step; // positions 0 .. n_prompt + step - 1 are in after step `step`
    const std::vector<int64_t> evicted = EvictedBy(run, m.n_layer, m.n_head_kv, step);
    ImGui::Text("kept fraction after step %lld", (long long)step);
    HelpMarker("Share of the positions seen so far that each (layer, KV head) still holds; role scores come "
               "with the head-analysis view.");
    Legend();

    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const float cell_w = std::max(4.0f, avail.x / float(m.n_head_kv)), cell_h = std::max(3.0f, avail.y / float(m.n_layer));
    const ImVec2 o = ImGui::GetCursorScreenPos();
    ImGui::InvisibleButton("grid", {cell_w * float(m.n_head_kv), cell_h * float(m.n_layer)});
    const bool hovered = ImGui::IsItemHovered(), clicked = ImGui::IsItemClicked();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    for (int l = 0; l < m.n_layer; ++l)
        for (int g = 0; g < m.n_head_kv; ++g) {
            const float kept = present > 0 ? 1.0f - float(evicted[size_t(l * m.n_head_kv + g)]) / float(present) : 1.0f;
            const ImVec2 a{o.x + float(g) * cell_w, o.y + float(l) * cell_h};
            dl->AddRectFilled(a, {a.x + cell_w - 1, a.y + cell_h - 1}, ScoreColor(kept));
            if (l == ctx.selection.layer && g == ctx.selection.head)
                dl->AddRect(a, {a.x + cell_w - 1, a.y + cell_h - 1}, IM_COL32(255, 255, 255, 255), 0, 0, 2);
        }
    if (!hovered) return;
    const ImVec2 mouse = ImGui::GetIO().MousePos;
    const int g = std::clamp(int((mouse.x - o.x) / cell_w), 0, m.n_head_kv - 1);
    const int l = std::clamp(int((mouse.y - o.y) / cell_h), 0, m.n_layer - 1);
    const int64_t n = evicted[size_t(l * m.n_head_kv + g)];
    ImGui::SetTooltip("layer %d, KV head %d: keeps %lld of %lld positions (%.0f%%)", l, g, (long long)(present - n),
                      (long long)present, present > 0 ? 100.0 * double(present - n) / double(present) : 100.0);
    if (clicked) {
        ctx.selection.layer = l;
        ctx.selection.head = g;
    }
}

} // namespace kvscope
