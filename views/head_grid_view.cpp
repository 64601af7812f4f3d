// Head-role grid: layer × head, coloured by a role score of the head analysis (per query
// head, or each KV head's mean over its query heads) or by the share of the context each
// KV head keeps at the selected step; beside it each layer's CAKE preference, under it the
// heads as a table, the top N by the role over a minimum score, sortable. Clicking a head
// (cell or row) selects it everywhere and asks the worker for its attention on the probe
// that defines the role (for a KV head, its best query head's), which the attention
// heatmap then shows.
#include "views/plot.h"
#include "views/views.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string_view>

namespace kvscope {

namespace {

// One sentence per role (core/head_roles.h has the definitions).
const char* RoleHelp(std::string_view role) {
    if (role == "sink") return "Share of attention on position 0 (the first token), mean over natural-text queries from 16 on.";
    if (role == "locality") return "Share of attention on the query's last 64 keys, mean over natural-text queries.";
    if (role == "previous_token") return "Share of attention on the token just before the query, on natural text.";
    if (role == "entropy") return "Entropy of the attention over its keys divided by its maximum ln(t+1): 1 uniform, 0 one key.";
    if (role == "induction")
        return "On a repeated random sequence, the share of attention on the token that followed the current "
               "token's first occurrence.";
    if (role == "echo") return "On a repeated random sequence, the share of attention on the current token's first occurrence.";
    if (role == "retrieval")
        return "On the needle probes, the fraction of answer tokens whose strongest key is that token in the needle.";
    return "A role score of the head analysis, 0 to 1.";
}
const char* const kKeptHelp = "Share of the positions seen so far that each (layer, KV head) still holds after the "
                              "selected step.";

// The grid's values, layer-major, and its shape. Empty when there is nothing to show.
struct Grid {
    int n_layer = 0, n_col = 0;
    bool query_heads = false;    // the columns: query heads, or KV heads
    int group = 1;               // query heads per KV head
    std::string role;            // empty: the kept share
    const std::vector<float>* scores = nullptr; // the role's per query head (a KV head's best)
    std::vector<float> values;
    std::string what;            // the heading
};

Grid KeptShareGrid(const Snapshot& snap, const Selection& sel) {
    Grid g;
    const ModelInfo& m = snap.model;
    const int r = SelectedRun(sel, snap);
    if (r < 0 || snap.runs[size_t(r)].steps.empty() || m.n_layer == 0 || m.n_head_kv == 0) return g;
    const RunView& run = snap.runs[size_t(r)];
    const int64_t step = sel.step >= 0 ? std::min<int64_t>(sel.step, int64_t(run.steps.size()) - 1)
                                       : int64_t(run.steps.size()) - 1;
    const int64_t present = run.n_prompt + step; // positions 0 .. n_prompt + step - 1 are in after `step`
    std::vector<int64_t> evicted(size_t(m.n_layer * m.n_head_kv), 0);
    for (const Eviction& e : run.evictions) {
        if (e.step > step) break;
        if (e.layer >= 0 && e.layer < m.n_layer && e.head >= 0 && e.head < m.n_head_kv)
            ++evicted[size_t(e.layer * m.n_head_kv + e.head)];
    }
    g.n_layer = m.n_layer, g.n_col = m.n_head_kv;
    for (int64_t n : evicted) g.values.push_back(present > 0 ? 1.0f - float(n) / float(present) : 1.0f);
    g.what = "kept share after step " + std::to_string(step) + " (layer x KV head)";
    return g;
}

// A role per query head, or per KV head as the mean of its query heads.
Grid RoleGrid(const HeadAnalysis& h, int role, bool kv_means) {
    Grid g;
    if (role < 0 || size_t(role) >= h.scores.size() || h.n_head_kv <= 0 || h.n_head % h.n_head_kv != 0 ||
        h.scores[size_t(role)].size() != size_t(h.n_layer * h.n_head))
        return g;
    g.group = h.n_head / h.n_head_kv;
    g.role = h.roles[size_t(role)];
    g.scores = &h.scores[size_t(role)];
    g.n_layer = h.n_layer, g.n_col = kv_means ? h.n_head_kv : h.n_head, g.query_heads = !kv_means;
    g.values = *g.scores;
    if (kv_means) {
        g.values.assign(size_t(g.n_layer * g.n_col), 0.0f);
        for (size_t i = 0; i < g.scores->size(); ++i) g.values[i / size_t(g.group)] += (*g.scores)[i] / float(g.group);
    }
    g.what = g.role + (kv_means ? " (layer x KV head, mean of its query heads)" : " (layer x query head)");
    return g;
}

// Selects (layer, column) everywhere; for a role, asks for the head's probe map too (a KV
// head's: its query head scoring highest).
void SelectHead(ViewContext& ctx, const Grid& g, int layer, int col) {
    ctx.selection.layer = layer;
    ctx.selection.head = g.query_heads ? col / g.group : col;
    ctx.selection.query_head = g.query_heads ? col : -1;
    if (g.role.empty()) return;
    int query = col;
    if (!g.query_heads) {
        const float* in_layer = g.scores->data() + size_t(layer * g.n_col * g.group);
        query = int(std::max_element(in_layer + col * g.group, in_layer + (col + 1) * g.group) - in_layer);
        ctx.selection.query_head = query;
    }
    ctx.commands.head_attention = {layer, query, g.role};
    ctx.settings.attention_probe = true;
}

bool IsSelected(const Selection& sel, const Grid& g, int layer, int col) {
    if (layer != sel.layer) return false;
    return g.query_heads ? col == SelectedQueryHead(sel, g.group) : col == sel.head;
}

// The grid as cells (at most a few hundred: layers x heads) filling `size`.
void DrawGrid(ViewContext& ctx, const Grid& g, ImVec2 size) {
    const float cell_w = std::max(4.0f, size.x / float(g.n_col)), cell_h = std::max(3.0f, size.y / float(g.n_layer));
    const ImVec2 o = ImGui::GetCursorScreenPos();
    ImGui::InvisibleButton("grid", {cell_w * float(g.n_col), cell_h * float(g.n_layer)});
    const bool hovered = ImGui::IsItemHovered(), clicked = ImGui::IsItemClicked();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    for (int l = 0; l < g.n_layer; ++l)
        for (int c = 0; c < g.n_col; ++c) {
            const ImVec2 a{o.x + float(c) * cell_w, o.y + float(l) * cell_h}, b{a.x + cell_w - 1, a.y + cell_h - 1};
            dl->AddRectFilled(a, b, ScoreColor(g.values[size_t(l * g.n_col + c)]));
            if (IsSelected(ctx.selection, g, l, c)) dl->AddRect(a, b, IM_COL32(255, 255, 255, 255), 0, 0, 2);
        }
    if (g.query_heads) // KV groups: a thin line between them
        for (int c = g.group; c < g.n_col; c += g.group)
            dl->AddLine({o.x + float(c) * cell_w - 0.5f, o.y}, {o.x + float(c) * cell_w - 0.5f, o.y + cell_h * float(g.n_layer)},
                        IM_COL32(20, 20, 20, 255), 2);
    if (!hovered) return;
    const ImVec2 mouse = ImGui::GetIO().MousePos;
    const int c = std::clamp(int((mouse.x - o.x) / cell_w), 0, g.n_col - 1);
    const int l = std::clamp(int((mouse.y - o.y) / cell_h), 0, g.n_layer - 1);
    const float v = g.values[size_t(l * g.n_col + c)];
    ImGui::BeginTooltip();
    if (g.role.empty()) ImGui::Text("layer %d, KV head %d: keeps %.0f%% of the context", l, c, 100.0 * v);
    else if (g.query_heads) ImGui::Text("L%d.H%d (KV head %d): %s %.3f", l, c, c / g.group, g.role.c_str(), v);
    else ImGui::Text("layer %d, KV head %d: %s %.3f, the mean of its query heads", l, c, g.role.c_str(), v);
    ImGui::TextDisabled("%s", g.role.empty() ? kKeptHelp : RoleHelp(g.role));
    if (!g.role.empty()) ImGui::TextDisabled("Click: select it and show its attention on the probe behind the role.");
    ImGui::EndTooltip();
    if (clicked) SelectHead(ctx, g, l, c);
}

// The heads as rows: the top N by score over a minimum, in the table's sort order.
void DrawTable(ViewContext& ctx, const Grid& g) {
    static int top = 20;
    static float min_score = 0;
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 6);
    ImGui::SliderInt("top", &top, 1, std::max(1, g.n_layer * g.n_col));
    ImGui::SameLine();
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 6);
    ImGui::SliderFloat("min score", &min_score, 0, 1, "%.2f");
    HelpMarker("The table lists the heads scoring at least the minimum, the best `top` of them.");

    std::vector<int> rows(g.values.size());
    std::iota(rows.begin(), rows.end(), 0);
    rows.erase(std::remove_if(rows.begin(), rows.end(), [&](int i) { return g.values[size_t(i)] < min_score; }), rows.end());
    auto by_score = [&](int a, int b) { return g.values[size_t(a)] > g.values[size_t(b)]; };
    std::stable_sort(rows.begin(), rows.end(), by_score);
    rows.resize(std::min(rows.size(), size_t(std::max(1, top))));

    const ImGuiTableFlags flags = ImGuiTableFlags_Sortable | ImGuiTableFlags_RowBg | ImGuiTableFlags_ScrollY |
                                  ImGuiTableFlags_BordersInnerV | ImGuiTableFlags_SizingStretchSame;
    if (!ImGui::BeginTable("heads", 4, flags)) return;
    ImGui::TableSetupScrollFreeze(0, 1);
    ImGui::TableSetupColumn("head", ImGuiTableColumnFlags_NoSort);
    ImGui::TableSetupColumn("layer");
    ImGui::TableSetupColumn(g.query_heads ? "query head" : "KV head");
    ImGui::TableSetupColumn(g.role.c_str(), ImGuiTableColumnFlags_DefaultSort | ImGuiTableColumnFlags_PreferSortDescending);
    ImGui::TableHeadersRow();
    if (const ImGuiTableSortSpecs* specs = ImGui::TableGetSortSpecs(); specs && specs->SpecsCount > 0) {
        const ImGuiTableColumnSortSpecs& s = specs->Specs[0];
        const bool up = s.SortDirection == ImGuiSortDirection_Ascending;
        auto key = [&](int i) {
            return s.ColumnIndex == 1 ? float(i / g.n_col) : s.ColumnIndex == 2 ? float(i % g.n_col) : g.values[size_t(i)];
        };
        std::stable_sort(rows.begin(), rows.end(), [&](int a, int b) { return up ? key(a) < key(b) : key(a) > key(b); });
    }
    ImGuiListClipper clipper;
    clipper.Begin(int(rows.size()));
    while (clipper.Step())
        for (int i = clipper.DisplayStart; i < clipper.DisplayEnd; ++i) {
            const int l = rows[size_t(i)] / g.n_col, c = rows[size_t(i)] % g.n_col;
            ImGui::TableNextRow();
            ImGui::TableNextColumn();
            char name[32];
            std::snprintf(name, sizeof name, g.query_heads ? "L%d.H%d" : "L%d.KV%d", l, c);
            if (ImGui::Selectable(name, IsSelected(ctx.selection, g, l, c), ImGuiSelectableFlags_SpanAllColumns))
                SelectHead(ctx, g, l, c);
            ImGui::TableNextColumn();
            ImGui::Text("%d", l);
            ImGui::TableNextColumn();
            if (g.query_heads) ImGui::Text("%d (KV %d)", c, c / g.group);
            else ImGui::Text("%d", c);
            ImGui::TableNextColumn();
            ImGui::Text("%.3f", g.values[size_t(rows[size_t(i)])]);
        }
    ImGui::EndTable();
}

// Each layer's CAKE preference as a column of cells beside the grid, on the same scale
// relative to the largest layer's; a click selects the layer.
void DrawLayerPreference(Selection& selection, const std::vector<float>& preference, ImVec2 size) {
    const int n = int(preference.size());
    const float largest = std::max(1e-30f, *std::max_element(preference.begin(), preference.end()));
    const float gap = 4, cell_h = std::max(3.0f, size.y / float(n));
    const ImVec2 o = ImGui::GetCursorScreenPos();
    ImGui::InvisibleButton("layer preference", {size.x, cell_h * float(n)});
    ImDrawList* dl = ImGui::GetWindowDrawList();
    for (int l = 0; l < n; ++l) {
        const ImVec2 a{o.x + gap, o.y + float(l) * cell_h}, b{o.x + size.x, a.y + cell_h - 1};
        dl->AddRectFilled(a, b, ScoreColor(preference[size_t(l)] / largest));
        if (l == selection.layer) dl->AddRect(a, b, IM_COL32(255, 255, 255, 255), 0, 0, 2);
    }
    if (!ImGui::IsItemHovered()) return;
    const int l = std::clamp(int((ImGui::GetIO().MousePos.y - o.y) / cell_h), 0, n - 1);
    ImGui::SetTooltip("layer %d: CAKE preference %.3g, %.0f%% of the largest layer's\n"
                      "(dispersion^(1/1.6) x temporal shift^(1/0.6) of its attention on natural text: CAKE gives "
                      "a layer budget in proportion)", l, preference[size_t(l)], 100.0 * preference[size_t(l)] / largest);
    if (ImGui::IsItemClicked()) selection.layer = l;
}

// The role picker and the analysis' command or progress.
void Header(ViewContext& ctx) {
    const HeadAnalysis& h = ctx.snapshot.heads;
    ctx.settings.head_role = std::clamp(ctx.settings.head_role, 0, int(h.roles.size()));
    const int role = ctx.settings.head_role;
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 9);
    if (ImGui::BeginCombo("role", role == 0 ? "kept share" : h.roles[size_t(role - 1)].c_str())) {
        if (ImGui::Selectable("kept share", role == 0)) ctx.settings.head_role = 0;
        if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", kKeptHelp);
        for (size_t i = 0; i < h.roles.size(); ++i) {
            if (ImGui::Selectable(h.roles[i].c_str(), role == int(i) + 1)) ctx.settings.head_role = int(i) + 1;
            if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", RoleHelp(h.roles[i]));
        }
        if (h.roles.empty()) ImGui::TextDisabled("(role scores: Analyze heads)");
        ImGui::EndCombo();
    }
    HelpMarker(role == 0 ? kKeptHelp : RoleHelp(h.roles[size_t(role - 1)]));
    if (role > 0) {
        ImGui::SameLine();
        ImGui::Checkbox("per KV head", &ctx.settings.head_kv_means);
        if (ImGui::IsItemHovered())
            ImGui::SetTooltip("Each KV head's mean over the query heads that read it: what a method keeping "
                              "or dropping that head's cache acts on.");
    }
    ImGui::SameLine();
    if (h.status == HeadAnalysis::Status::Running) {
        char text[96];
        std::snprintf(text, sizeof text, "%s", h.stage.c_str());
        ImGui::ProgressBar(float(h.progress), {ImGui::GetContentRegionAvail().x, 0}, text);
        return;
    }
    ImGui::BeginDisabled(!ctx.snapshot.model.ready);
    const bool done = h.status == HeadAnalysis::Status::Done;
    if (ImGui::Button(done ? "Analyze again" : "Analyze heads")) {
        ctx.commands.analyze_heads = true;
        ctx.commands.fresh_analysis = done;
    }
    ImGui::EndDisabled();
    if (ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled))
        ImGui::SetTooltip("Scores every head's roles on the probe suite (repeat, needle and natural-text prompts) "
                          "on the worker, as `kvscope heads` does (tens of seconds on a CPU), and stores them in "
                          "the sessions database; a first analysis reads them from there when they are stored.");
    if (done) HelpMarker(("Scores " + h.stage + ".").c_str());
    if (h.status == HeadAnalysis::Status::Failed) {
        ImGui::SameLine();
        ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(MismatchColor()), "failed: %s", h.stage.c_str());
    }
}

} // namespace

void DrawHeadGridView(ViewContext& ctx) {
    Header(ctx);
    const HeadAnalysis& h = ctx.snapshot.heads;
    const int role = ctx.settings.head_role;
    const Grid g = role > 0 ? RoleGrid(h, role - 1, ctx.settings.head_kv_means) : KeptShareGrid(ctx.snapshot, ctx.selection);
    if (g.values.empty()) {
        ImGui::TextDisabled(role > 0 ? "No role scores." : "No decode steps yet.");
        return;
    }
    ImGui::TextUnformatted(g.what.c_str());
    ImGui::SameLine();
    ColorLegend(ScoreColor, role > 0 ? "0 .. 1 (role score)" : "0 .. 100% of the context kept");
    const bool preference = h.layer_preference.size() == size_t(g.n_layer);
    if (preference) {
        ImGui::SameLine();
        ImGui::TextDisabled("| right: each layer's CAKE preference");
    }
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const float strip = preference ? ImGui::GetFontSize() * 1.5f : 0;
    const float grid_h = g.role.empty() ? avail.y : avail.y * 0.55f;
    DrawGrid(ctx, g, {avail.x - strip, grid_h});
    if (preference) {
        ImGui::SameLine(0, 0);
        DrawLayerPreference(ctx.selection, h.layer_preference, {strip, grid_h});
    }
    if (!g.role.empty()) DrawTable(ctx, g);
}

} // namespace kvscope
