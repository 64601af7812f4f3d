// Token strip: the reference's tokens above the method's, one fixed-width cell per step,
// mismatches marked; hover shows the token and where its key is still kept. Only the
// visible cells are drawn.
#include "views/plot.h"
#include "views/views.h"

#include <algorithm>

namespace kvscope {

namespace {

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
