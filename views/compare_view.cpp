// Compare: the session's runs side by side. A table of each run's method, budget and
// fidelity (token match, mean KL, top-1) and KV bytes against its reference; KL per step,
// one colour per run; KV bytes by budget when the runs differ in it; and two runs' kept
// sets at the selected step, layer and KV head diffed position by position.
#include "views/plot.h"
#include "views/views.h"

#include <algorithm>
#include <cstdio>
#include <map>

namespace kvscope {

namespace {

// A run's totals from its steps (they grow while it runs).
struct RunTotals {
    double token_match = -1, mean_kl = 0, top1 = 0; // token_match -1: no reference
    int64_t kv_bytes = 0, reference_kv_bytes = 0;
};

RunTotals Totals(const RunView& run) {
    RunTotals t;
    if (run.steps.empty()) return t;
    int64_t match = 0, top1 = 0, compared = 0;
    for (const StepRow& s : run.steps) {
        t.mean_kl += s.kl;
        top1 += s.top1;
        if (s.reference_token >= 0) ++compared, match += s.token == s.reference_token;
    }
    const double n = double(run.steps.size());
    t.mean_kl /= n;
    t.top1 = double(top1) / n;
    if (run.has_reference && compared > 0) t.token_match = double(match) / double(compared);
    t.kv_bytes = run.steps.back().kv_bytes;
    const size_t last = std::min(run.steps.size(), run.reference_kv_bytes.size());
    if (last > 0) t.reference_kv_bytes = run.reference_kv_bytes[last - 1];
    return t;
}

void RunTable(ViewContext& ctx) {
    const auto& runs = ctx.snapshot.runs;
    const ImGuiTableFlags flags = ImGuiTableFlags_RowBg | ImGuiTableFlags_BordersInnerV | ImGuiTableFlags_ScrollY |
                                  ImGuiTableFlags_SizingStretchProp;
    const float height = ImGui::GetTextLineHeightWithSpacing() * float(std::min<size_t>(runs.size(), 6) + 1) + 4;
    if (!ImGui::BeginTable("runs", 8, flags, {0, height})) return;
    ImGui::TableSetupScrollFreeze(0, 1);
    for (const char* name : {"run", "method", "budget", "status", "token match", "mean KL", "top-1", "KV bytes / reference"})
        ImGui::TableSetupColumn(name);
    ImGui::TableHeadersRow();
    for (size_t i = 0; i < runs.size(); ++i) {
        const RunView& run = runs[i];
        const RunTotals t = Totals(run);
        ImGui::TableNextRow();
        ImGui::TableNextColumn();
        char label[24];
        std::snprintf(label, sizeof label, "#%zu", i + 1);
        ImGui::PushStyleColor(ImGuiCol_Text, RunColor(int(i)));
        if (ImGui::Selectable(label, SelectedRun(ctx.selection, ctx.snapshot) == int(i), ImGuiSelectableFlags_SpanAllColumns))
            ctx.selection.run = int(i);
        ImGui::PopStyleColor();
        ImGui::TableNextColumn();
        ImGui::TextUnformatted(run.method.c_str());
        ImGui::TableNextColumn();
        ImGui::TextUnformatted(run.budget.c_str());
        ImGui::TableNextColumn();
        ImGui::TextUnformatted(StatusName(run.status));
        ImGui::TableNextColumn();
        if (t.token_match >= 0) ImGui::Text("%.0f%%", 100 * t.token_match);
        else ImGui::TextDisabled("-");
        ImGui::TableNextColumn();
        ImGui::Text("%.4f", t.mean_kl);
        ImGui::TableNextColumn();
        ImGui::Text("%.0f%%", 100 * t.top1);
        ImGui::TableNextColumn();
        if (t.reference_kv_bytes > 0) ImGui::Text("%.0f%%", 100.0 * double(t.kv_bytes) / double(t.reference_kv_bytes));
        else ImGui::TextDisabled("%s", FormatBytes(double(t.kv_bytes)));
        if (ImGui::IsItemHovered())
            ImGui::SetTooltip("%s now; the reference held %s at the same step.", FormatBytes(double(t.kv_bytes)),
                              t.reference_kv_bytes > 0 ? FormatBytes(double(t.reference_kv_bytes)) : "(none)");
    }
    ImGui::EndTable();
}

// KV bytes at the last step of each finished run, grouped by budget: one bar per run.
void BytesByBudget(const Snapshot& snap) {
    std::map<std::string, std::vector<int>> by_budget;
    for (size_t i = 0; i < snap.runs.size(); ++i)
        if (!snap.runs[i].steps.empty()) by_budget[snap.runs[i].budget].push_back(int(i));
    if (by_budget.size() < 2) return;
    ImGui::Text("KV bytes by budget");
    HelpMarker("Each run's KV-cache bytes at its last step, as a share of its reference's at the same step.");
    for (const auto& [budget, runs] : by_budget)
        for (int i : runs) {
            const RunTotals t = Totals(snap.runs[size_t(i)]);
            // A run opened from the database has no reference bytes: no share to draw, only its bytes.
            const bool known = t.reference_kv_bytes > 0;
            const float share = known ? float(t.kv_bytes) / float(t.reference_kv_bytes) : 0.0f;
            char text[96];
            std::snprintf(text, sizeof text, "budget %s  #%d  %s%s", budget.c_str(), i + 1, FormatBytes(double(t.kv_bytes)),
                          known ? "" : " (no reference bytes stored)");
            ImGui::PushStyleColor(ImGuiCol_PlotHistogram, RunColor(i));
            ImGui::ProgressBar(share, {-1, 0}, text);
            ImGui::PopStyleColor();
        }
}

// The diff as a strip of texels, positions folded into the strip's pixels: each texel
// mixes the colours of its positions' classes.
struct DiffImage {
    ImTextureID texture = nullptr;
    std::vector<uint32_t> texels;

    void Update(const KeptDiff& d, int width, ImU32 a_color, ImU32 b_color, UploadTextureFn upload) {
        const int64_t n = int64_t(d.where.size());
        width = int(std::clamp<int64_t>(width, 1, std::max<int64_t>(1, n)));
        const ImU32 colors[4] = {IM_COL32(20, 20, 24, 255), a_color, b_color, ScoreColor(0.75f)};
        texels.assign(size_t(width), colors[0]);
        for (int x = 0; x < width && n > 0; ++x) {
            const int64_t p0 = FoldStart(x, n, width), p1 = FoldStart(x + 1, n, width);
            float sum[3] = {0, 0, 0};
            for (int64_t p = p0; p < p1; ++p)
                for (int c = 0; c < 3; ++c) sum[c] += float((colors[d.where[size_t(p)]] >> (8 * c)) & 255);
            const float k = 1.0f / float(std::max<int64_t>(1, p1 - p0));
            texels[size_t(x)] = IM_COL32(int(sum[0] * k), int(sum[1] * k), int(sum[2] * k), 255);
        }
        texture = upload(texture, width, 1, texels.data());
    }
};

void RunCombo(const char* label, int& run, const Snapshot& snap) {
    char preview[64];
    std::snprintf(preview, sizeof preview, "#%d %s", run + 1, snap.runs[size_t(run)].method.c_str());
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 10);
    if (!ImGui::BeginCombo(label, preview)) return;
    for (size_t i = 0; i < snap.runs.size(); ++i) {
        std::snprintf(preview, sizeof preview, "#%zu %s @ %s", i + 1, snap.runs[i].method.c_str(), snap.runs[i].budget.c_str());
        if (ImGui::Selectable(preview, run == int(i))) run = int(i);
    }
    ImGui::EndCombo();
}

void KeptSetDiff(ViewContext& ctx) {
    const Snapshot& snap = ctx.snapshot;
    const int n = int(snap.runs.size());
    if (n < 2) return ImGui::TextDisabled("Two runs make a kept-set diff.");
    int& a = ctx.settings.compare_a;
    int& b = ctx.settings.compare_b;
    if (a < 0 || a >= n) a = n - 2;
    if (b < 0 || b >= n) b = n - 1;
    RunCombo("A", a, snap);
    ImGui::SameLine();
    RunCombo("B", b, snap);
    const RunView &ra = snap.runs[size_t(a)], &rb = snap.runs[size_t(b)];
    const int64_t last = int64_t(std::min(ra.steps.size(), rb.steps.size())) - 1;
    if (last < 0) return ImGui::TextDisabled("Both runs need decode steps.");
    const int64_t step = ctx.selection.step >= 0 ? std::min<int64_t>(ctx.selection.step, last) : last;
    static EvictionIndex ia, ib;
    ia.Update(a, ra, ctx.selection.layer, ctx.selection.head);
    ib.Update(b, rb, ctx.selection.layer, ctx.selection.head);
    const KeptDiff d = DiffKept(ra, ia, rb, ib, step);
    ImGui::SameLine();
    ImGui::Text("after step %lld, layer %d, KV head %d: A only %lld, B only %lld, both %lld", (long long)step,
                ctx.selection.layer, ctx.selection.head, (long long)d.a_only, (long long)d.b_only, (long long)d.both);
    HelpMarker("Positions each run's cache holds after the step: in A's colour those only A kept, in B's those only "
               "B kept, green both, dark neither. Runs on different prompts compare position by position.");
    static DiffImage image;
    const ImVec2 p0 = ImGui::GetCursorScreenPos();
    const ImVec2 size{ImGui::GetContentRegionAvail().x, ImGui::GetTextLineHeight() * 1.5f};
    image.Update(d, int(size.x), RunColor(a), RunColor(b), ctx.upload_texture);
    ImGui::Image(image.texture, size);
    if (ImGui::IsItemHovered() && !d.where.empty()) {
        const int64_t pos = std::clamp<int64_t>(int64_t((ImGui::GetIO().MousePos.x - p0.x) / size.x * float(d.where.size())),
                                                0, int64_t(d.where.size()) - 1);
        static const char* const names[] = {"kept by neither", "kept by A only", "kept by B only", "kept by both"};
        ImGui::SetTooltip("position %lld \"%s\": %s", (long long)pos, TokenAt(ra, pos).c_str(), names[d.where[size_t(pos)]]);
        if (ImGui::IsItemClicked()) ctx.selection.position = int(pos);
    }
}

} // namespace

void DrawCompareView(ViewContext& ctx) {
    const Snapshot& snap = ctx.snapshot;
    if (snap.runs.empty()) return ImGui::TextDisabled("No runs yet.");
    RunTable(ctx);
    ImGui::Text("KL(reference || method) per decode step");
    HelpMarker("Teacher-forced: the divergence of each run's next-token distribution from its reference's, in nats.");
    std::vector<Series> kl;
    std::vector<std::string> labels(snap.runs.size());
    for (size_t i = 0; i < snap.runs.size(); ++i) {
        const RunView& run = snap.runs[i];
        if (!run.has_reference) continue;
        labels[i] = "#" + std::to_string(i + 1) + " " + run.method + " @ " + run.budget;
        kl.push_back({labels[i].c_str(), int64_t(run.steps.size()), [&run](int64_t s) { return run.steps[size_t(s)].kl; },
                      RunColor(int(i))});
    }
    const float plot_h = std::max(ImGui::GetTextLineHeight() * 5, ImGui::GetContentRegionAvail().y * 0.4f);
    const int64_t clicked = LinePlot("kl", "nats", kl, {ImGui::GetContentRegionAvail().x, plot_h}, ctx.selection.step);
    if (clicked >= 0) ctx.selection.step = int(clicked);
    BytesByBudget(snap);
    SectionHeading("kept sets");
    KeptSetDiff(ctx);
}

} // namespace kvscope
