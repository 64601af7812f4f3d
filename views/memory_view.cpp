// Memory and latency: the KV cache's bytes and the time of each decode step, the method's
// run solid in its colour and the reference's dashed grey.
#include "views/plot.h"
#include "views/views.h"

namespace kvscope {

void DrawMemoryView(ViewContext& ctx) {
    const auto& runs = ctx.snapshot.runs;
    const int r = SelectedRun(ctx.selection, ctx.snapshot);
    if (r < 0) {
        ImGui::TextDisabled("No runs yet.");
        return;
    }
    const RunView& run = runs[size_t(r)];
    const int64_t n = int64_t(run.steps.size());
    const ImU32 color = RunColor(r);
    // Two plots, each under a heading line, and a line of totals: no scroll bar.
    const float h = (ImGui::GetContentRegionAvail().y - ImGui::GetTextLineHeightWithSpacing() * 3 -
                     ImGui::GetStyle().ItemSpacing.y * 3) * 0.5f;
    const float w = ImGui::GetContentRegionAvail().x;

    ImGui::Text("KV cache");
    HelpMarker("Bytes of the KV pages the cache holds after each step's decisions: allocated memory, not a mask.");
    std::vector<Series> memory = {
        {"reference", int64_t(run.reference_kv_bytes.size()),
         [&run](int64_t i) { return double(run.reference_kv_bytes[size_t(i)]); }, ReferenceColor(), true},
        {"method", n, [&run](int64_t i) { return double(run.steps[size_t(i)].kv_bytes); }, color},
    };
    int64_t clicked = LinePlot("memory", "bytes", memory, {w, h}, ctx.selection.step);

    ImGui::Text("decode step time");
    HelpMarker("Milliseconds of each step's forward pass, and of the method's policy (scoring and eviction) "
               "after it; the dashed line is the reference's mean step.");
    const double ref_ms = run.reference_step_ms;
    std::vector<Series> latency = {
        {"reference (mean)", run.has_reference && ref_ms > 0 ? n : 0, [ref_ms](int64_t) { return ref_ms; },
         ReferenceColor(), true},
        // step 0 is the prefill, many times a decode step: shown as 0 so the scale fits decoding
        {"forward", n, [&run](int64_t i) { return i == 0 ? 0.0 : run.steps[size_t(i)].step_ms; }, color},
        {"policy", n, [&run](int64_t i) { return run.steps[size_t(i)].policy_ms; }, RunColor(r + 1)},
    };
    const int64_t clicked_t = LinePlot("latency", "ms", latency, {w, h}, ctx.selection.step);
    if (clicked < 0) clicked = clicked_t;
    if (clicked >= 0) {
        ctx.selection.run = r;
        ctx.selection.step = int(clicked);
    }
    if (n > 0) {
        const StepRow& last = run.steps.back();
        ImGui::TextDisabled("now %s", FormatBytes(double(last.kv_bytes)));
        if (!run.reference_kv_bytes.empty()) {
            ImGui::SameLine();
            ImGui::TextDisabled("| reference %s at the same step",
                               FormatBytes(double(run.reference_kv_bytes[size_t(std::min<int64_t>(
                                   n, int64_t(run.reference_kv_bytes.size())) - 1)])));
        }
    }
}

} // namespace kvscope
