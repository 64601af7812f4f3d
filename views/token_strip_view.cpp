// Token strip: the reference's tokens above the method's, one fixed-width cell per step,
// mismatches marked; hover shows the token and where its key is still kept. Only the
// visible cells are drawn.
#include "views/plot.h"
#include "views/views.h"

#include <algorithm>

namespace kvscope {

namespace {

// Whether position `pos` is still in (layer, head)'s cache after `step`, for every pair:
// kept[layer * n_head + head].
std::vector<bool> KeepState(const RunView& run, int n_layer, int n_head, int64_t pos, int64_t step) {
    std::vector<bool> kept(size_t(n_layer * n_head), true);
    for (const Eviction& e : run.evictions) {
        if (e.step > step) break;
        if (e.position == pos && e.layer < n_layer && e.head < n_head) kept[size_t(e.layer * n_head + e.head)] = false;
    }
    return kept;
}

void KeepGrid(const RunView& run, const ModelInfo& model, int64_t pos, int64_t step) {
    const int n_layer = model.n_layer, n_head = model.n_head_kv;
    if (n_layer == 0 || n_head == 0) return;
    const std::vector<bool> kept = KeepState(run, n_layer, n_head, pos, step);
    const int n_kept = int(std::count(kept.begin(), kept.end(), true));
    ImGui::Text("key kept in %d of %d (layer, KV head) caches after step %lld", n_kept, n_layer * n_head, (long long)step);
    const float cell = ImGui::GetTextLineHeight() * 0.5f;
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const ImVec2 o = ImGui::GetCursorScreenPos();
    for (int h = 0; h < n_head; ++h)
        for (int l = 0; l < n_layer; ++l) {
            const ImVec2 a{o.x + float(l) * cell, o.y + float(h) * cell};
            dl->AddRectFilled(a, {a.x + cell - 1, a.y + cell - 1},
                              kept[size_t(l * n_head + h)] ? ScoreColor(0.85f) : IM_COL32(70, 70, 70, 255));
        }
    ImGui::Dummy({float(n_layer) * cell, float(n_head) * cell});
    ImGui::TextDisabled("columns: layers 0..%d, rows: KV heads; grey = evicted", n_layer - 1);
}

void Tooltip(const ViewContext& ctx, const RunView& run, int64_t step) {
    const StepRow& row = run.steps[size_t(step)];
    ImGui::BeginTooltip();
    ImGui::Text("step %lld: \"%s\" (id %d)", (long long)step, run.token_text[size_t(step)].c_str(), row.token);
    if (run.has_reference && size_t(step) < run.reference_text.size()) {
        ImGui::Text("reference: \"%s\" (id %d)%s", run.reference_text[size_t(step)].c_str(), row.reference_token,
                    row.token == row.reference_token ? "" : "  - differs");
        ImGui::Text("KL(reference || method) %.4f nats, top-1 %s", row.kl, row.top1 ? "agrees" : "differs");
    }
    const int64_t last = ctx.selection.step >= 0 ? ctx.selection.step : int64_t(run.steps.size()) - 1;
    KeepGrid(run, ctx.snapshot.model, run.n_prompt + step, std::max(last, step + 1));
    ImGui::EndTooltip();
}

void Cell(ImDrawList* dl, ImVec2 a, ImVec2 b, ImU32 fill, const std::string& text, bool selected) {
    dl->AddRectFilled(a, b, fill, 2.0f);
    if (selected) dl->AddRect(a, b, IM_COL32(255, 255, 255, 255), 2.0f, 0, 2.0f);
    dl->PushClipRect(a, b, true);
    dl->AddText({a.x + 3, a.y + 1}, IM_COL32(240, 240, 240, 255), text.c_str());
    dl->PopClipRect();
}

} // namespace

void DrawTokenStripView(ViewContext& ctx) {
    const auto& runs = ctx.snapshot.runs;
    const int r = SelectedRun(ctx.selection, ctx.snapshot);
    if (r < 0) {
        ImGui::TextDisabled("No runs yet: set one up on the left and press Run.");
        return;
    }
    const RunView& run = runs[size_t(r)];
    const int64_t n = int64_t(run.steps.size());
    ImGui::Text("run #%d  %s @ %s  (%s, %lld steps)", r + 1, run.method.c_str(), run.budget.c_str(), StatusName(run.status),
                (long long)n);
    const float cell_w = ImGui::CalcTextSize("MMMMMMM").x, row_h = ImGui::GetTextLineHeightWithSpacing() + 2;
    ImGui::BeginChild("strip", {0, row_h * 2 + ImGui::GetStyle().ScrollbarSize + 8}, false,
                      ImGuiWindowFlags_HorizontalScrollbar);
    const ImVec2 origin = ImGui::GetCursorScreenPos();
    ImGui::InvisibleButton("cells", {std::max(1.0f, cell_w * float(n)), row_h * 2});
    const bool hovered = ImGui::IsItemHovered(), clicked = ImGui::IsItemClicked();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const float scroll = ImGui::GetScrollX(), width = ImGui::GetWindowWidth();
    const int64_t first = std::max<int64_t>(0, int64_t(scroll / cell_w)), last = std::min(n, int64_t((scroll + width) / cell_w) + 1);
    for (int64_t k = first; k < last; ++k) {
        const StepRow& row = run.steps[size_t(k)];
        const float x = origin.x + float(k) * cell_w;
        const bool selected = k == ctx.selection.step;
        if (run.has_reference && size_t(k) < run.reference_text.size())
            Cell(dl, {x, origin.y}, {x + cell_w - 2, origin.y + row_h - 2}, IM_COL32(80, 80, 80, 255),
                 run.reference_text[size_t(k)], selected);
        const bool match = !run.has_reference || row.token == row.reference_token;
        Cell(dl, {x, origin.y + row_h}, {x + cell_w - 2, origin.y + 2 * row_h - 2},
             match ? (RunColor(r) & ~IM_COL32_A_MASK) | (0x90u << IM_COL32_A_SHIFT) : MismatchColor(), // matches dimmed
             run.token_text[size_t(k)], selected);
    }
    if (hovered && n > 0) {
        const int64_t k = std::clamp<int64_t>(int64_t((ImGui::GetIO().MousePos.x - origin.x) / cell_w), 0, n - 1);
        Tooltip(ctx, run, k);
        if (clicked) {
            ctx.selection.run = r;
            ctx.selection.step = int(k);
            ctx.selection.position = int(run.n_prompt + k);
        }
    }
    if (run.live() && ImGui::GetScrollMaxX() - scroll < cell_w * 2) ImGui::SetScrollX(ImGui::GetScrollMaxX()); // follow the run
    ImGui::EndChild();
    ImGui::TextDisabled("top row: reference (grey); bottom: this method, orange where it differs");
}

} // namespace kvscope
