#include "views/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string_view>

namespace kvscope {

ImU32 ScoreColor(float t) {
    // Viridis at nine evenly spaced points, interpolated linearly in sRGB.
    static const float stops[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},   {44, 113, 142}, {33, 144, 141},
                                      {39, 173, 129}, {92, 200, 99},  {170, 220, 50},  {253, 231, 37}};
    t = std::clamp(t, 0.0f, 1.0f) * 8.0f;
    const int i = std::min(int(t), 7);
    const float f = t - float(i);
    auto mix = [&](int c) { return int(stops[i][c] + (stops[i + 1][c] - stops[i][c]) * f); };
    return IM_COL32(mix(0), mix(1), mix(2), 255);
}

ImU32 ReferenceColor() { return IM_COL32(160, 160, 160, 255); }

ImU32 RunColor(int i) {
    static const ImU32 colors[] = {IM_COL32(0, 114, 178, 255), IM_COL32(230, 159, 0, 255),
                                   IM_COL32(0, 158, 115, 255), IM_COL32(204, 121, 167, 255),
                                   IM_COL32(86, 180, 233, 255), IM_COL32(240, 228, 66, 255)};
    return colors[size_t(i) % (sizeof colors / sizeof colors[0])];
}

ImU32 MismatchColor() { return IM_COL32(213, 94, 0, 255); }

ImU32 MixColor(ImU32 a, ImU32 b, float t) {
    t = std::clamp(t, 0.0f, 1.0f);
    auto ch = [&](int shift) {
        return uint32_t(float((a >> shift) & 255) * (1 - t) + float((b >> shift) & 255) * t) << shift;
    };
    return ch(IM_COL32_R_SHIFT) | ch(IM_COL32_G_SHIFT) | ch(IM_COL32_B_SHIFT) | (255u << IM_COL32_A_SHIFT);
}

ImU32 GreyedColor(ImU32 score, float t) {
    // Towards a dim grey of the colour's own lightness: how bright the score was still shows.
    const int luma = int(0.3f * float((score >> IM_COL32_R_SHIFT) & 255) + 0.59f * float((score >> IM_COL32_G_SHIFT) & 255) +
                         0.11f * float((score >> IM_COL32_B_SHIFT) & 255));
    const int grey = 40 + luma / 3;
    return MixColor(score, IM_COL32(grey, grey, grey, 255), 0.8f * t);
}

ImU32 AttentionColor(float share) {
    return share <= 0 ? ScoreColor(0) : ScoreColor((std::log10(share) + 3.0f) / 3.0f);
}

void ColorLegend(ImU32 (*scale)(float), const char* text) {
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const ImVec2 o = ImGui::GetCursorScreenPos();
    const float w = ImGui::GetFontSize() * 8, h = ImGui::GetTextLineHeight() * 0.6f;
    for (int i = 0; i < 32; ++i)
        dl->AddRectFilled({o.x + w * float(i) / 32, o.y}, {o.x + w * float(i + 1) / 32, o.y + h}, scale(float(i) / 31));
    ImGui::Dummy({w, h});
    ImGui::SameLine();
    ImGui::TextDisabled("%s", text);
}

void LayerHeadPickers(Selection& selection, const ModelInfo& m, bool query_head) {
    const int group = std::max(1, m.n_head_kv > 0 ? m.n_head / m.n_head_kv : 1);
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x * 0.3f);
    ImGui::SliderInt("layer", &selection.layer, 0, std::max(0, m.n_layer - 1));
    ImGui::SameLine();
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x * 0.3f);
    if (query_head) {
        int q = SelectedQueryHead(selection, group);
        if (ImGui::SliderInt("query head", &q, 0, std::max(0, m.n_head - 1))) {
            selection.query_head = std::clamp(q, 0, std::max(0, m.n_head - 1));
            selection.head = selection.query_head / group;
        }
        if (ImGui::IsItemHovered()) ImGui::SetTooltip("Query head %d reads KV head %d's cache.", q, q / group);
    } else {
        ImGui::SliderInt("KV head", &selection.head, 0, std::max(0, m.n_head_kv - 1));
    }
    selection.layer = std::clamp(selection.layer, 0, std::max(0, m.n_layer - 1));
    selection.head = std::clamp(selection.head, 0, std::max(0, m.n_head_kv - 1));
}

void ZoomPan::Update(ImVec2 p0, ImVec2 size) {
    const ImGuiIO& io = ImGui::GetIO();
    const float span_x = uv1.x - uv0.x, span_y = uv1.y - uv0.y;
    if (ImGui::IsItemHovered() && io.MouseWheel != 0) {
        const ImVec2 m = ToUV(p0, size, io.MousePos);
        const float f = std::pow(0.8f, io.MouseWheel);
        const float fx = std::clamp(span_x * f, 1.0f / 256, 1.0f) / span_x, fy = std::clamp(span_y * f, 1.0f / 256, 1.0f) / span_y;
        uv0 = {m.x - (m.x - uv0.x) * fx, m.y - (m.y - uv0.y) * fy};
        uv1 = {m.x + (uv1.x - m.x) * fx, m.y + (uv1.y - m.y) * fy};
    }
    if (ImGui::IsItemActive() && ImGui::IsMouseDragging(ImGuiMouseButton_Left) && size.x > 0 && size.y > 0) {
        const float dx = io.MouseDelta.x / size.x * span_x, dy = io.MouseDelta.y / size.y * span_y;
        uv0 = {uv0.x - dx, uv0.y - dy};
        uv1 = {uv1.x - dx, uv1.y - dy};
    }
    if (ImGui::IsItemHovered() && ImGui::IsMouseDoubleClicked(ImGuiMouseButton_Left)) *this = ZoomPan{};
    // Keep the window inside the image, its size as it is.
    const float sx = uv1.x - uv0.x, sy = uv1.y - uv0.y;
    uv0 = {std::clamp(uv0.x, 0.0f, 1.0f - sx), std::clamp(uv0.y, 0.0f, 1.0f - sy)};
    uv1 = {uv0.x + sx, uv0.y + sy};
}

ImVec2 ZoomPan::ToUV(ImVec2 p0, ImVec2 size, ImVec2 s) const {
    return {uv0.x + (s.x - p0.x) / std::max(1.0f, size.x) * (uv1.x - uv0.x),
            uv0.y + (s.y - p0.y) / std::max(1.0f, size.y) * (uv1.y - uv0.y)};
}

ImVec2 ZoomPan::ToScreen(ImVec2 p0, ImVec2 size, ImVec2 uv) const {
    return {p0.x + (uv.x - uv0.x) / (uv1.x - uv0.x) * size.x, p0.y + (uv.y - uv0.y) / (uv1.y - uv0.y) * size.y};
}

bool ZoomPan::Clicked() {
    return ImGui::IsItemHovered() && ImGui::IsMouseReleased(ImGuiMouseButton_Left) &&
           ImGui::GetIO().MouseDragMaxDistanceSqr[ImGuiMouseButton_Left] < 16;
}

void HelpMarker(const char* text) {
    ImGui::SameLine();
    ImGui::TextDisabled("(?)");
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", text);
}

void SectionHeading(const char* label) {
    ImGui::Spacing();
    ImGui::TextDisabled("%s", label);
    ImGui::Separator();
}

const char* FormatBytes(double bytes) {
    static char buf[32]; // UI thread only; used right away
    if (bytes >= 1048576.0) std::snprintf(buf, sizeof buf, "%.2f MiB", bytes / 1048576.0);
    else if (bytes >= 1024.0) std::snprintf(buf, sizeof buf, "%.1f KiB", bytes / 1024.0);
    else std::snprintf(buf, sizeof buf, "%.0f B", bytes);
    return buf;
}

namespace {

struct Range {
    double lo = 0, hi = 1;
};

// The y range over every series, from zero so that sizes compare honestly.
Range ValueRange(const std::vector<Series>& series) {
    Range r{0, 0};
    for (const Series& s : series)
        for (int64_t i = 0; i < s.count; ++i) r.hi = std::max(r.hi, s.value(i));
    if (r.hi <= r.lo) r.hi = r.lo + 1;
    return r;
}

// A line, or a dashed one: 6 px on, 6 px off, whatever its length.
void DrawSegment(ImDrawList* dl, ImVec2 a, ImVec2 b, ImU32 color, bool dashed) {
    const float dx = b.x - a.x, dy = b.y - a.y, length = std::sqrt(dx * dx + dy * dy);
    if (!dashed || length < 1) return dl->AddLine(a, b, color, 1.5f);
    for (float t = 0; t < length; t += 12) {
        const float u = std::min(length, t + 6);
        dl->AddLine({a.x + dx * t / length, a.y + dy * t / length}, {a.x + dx * u / length, a.y + dy * u / length}, color, 1.5f);
    }
}

// One series as a polyline with one vertex per pixel column: where several steps fall in
// a column it draws their min..max as a vertical stroke (nothing is dropped).
void DrawSeries(ImDrawList* dl, const Series& s, ImVec2 p0, ImVec2 p1, int64_t n_steps, Range r) {
    const float w = p1.x - p0.x, h = p1.y - p0.y;
    auto y_of = [&](double v) { return p1.y - float((v - r.lo) / (r.hi - r.lo)) * h; };
    const int columns = std::max(1, int(w));
    ImVec2 prev{-1, 0};
    int64_t i = 0;
    for (int c = 0; c < columns && i < s.count; ++c) {
        const int64_t end = std::min(s.count, std::max(i + 1, int64_t(double(c + 1) / columns * double(n_steps))));
        double lo = s.value(i), hi = lo;
        for (int64_t j = i + 1; j < end; ++j) lo = std::min(lo, s.value(j)), hi = std::max(hi, s.value(j));
        const float x = p0.x + (n_steps > 1 ? float(double(i) / double(n_steps - 1)) * w : w * 0.5f);
        const ImVec2 pt{x, y_of(s.value(end - 1))};
        if (prev.x >= 0) DrawSegment(dl, prev, {x, y_of(s.value(i))}, s.color, s.dashed);
        if (hi > lo) dl->AddLine({x, y_of(lo)}, {x, y_of(hi)}, s.color, 1.0f);
        prev = pt;
        i = end;
    }
}

} // namespace

int64_t LinePlot(const char* id, const char* unit, const std::vector<Series>& series, ImVec2 size,
                 int64_t selected_step) {
    ImGui::PushID(id);
    const ImVec2 origin = ImGui::GetCursorScreenPos();
    const float axis = ImGui::CalcTextSize("000.00 MiB").x + 6;
    const float line = ImGui::GetTextLineHeight();
    const ImVec2 p0{origin.x + axis, origin.y + line * 0.5f};
    const ImVec2 p1{origin.x + std::max(size.x, axis + 40), origin.y + std::max(size.y, 3 * line) - line * 1.5f};
    ImGui::InvisibleButton("plot", {p1.x - origin.x, p1.y - origin.y + line * 1.5f});
    const bool hovered = ImGui::IsItemHovered();
    const bool clicked = ImGui::IsItemClicked();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    dl->AddRectFilled(p0, p1, IM_COL32(25, 25, 30, 255));
    dl->AddRect(p0, p1, IM_COL32(90, 90, 100, 255));

    int64_t n_steps = 0;
    for (const Series& s : series) n_steps = std::max(n_steps, s.count);
    const Range r = ValueRange(series);
    char label[48];
    auto y_label = [&](double v, float y) {
        if (std::string_view(unit) == "bytes") std::snprintf(label, sizeof label, "%s", FormatBytes(v));
        else std::snprintf(label, sizeof label, "%.3g %s", v, unit);
        dl->AddText({origin.x, y - line * 0.5f}, IM_COL32(200, 200, 200, 255), label);
    };
    y_label(r.hi, p0.y);
    y_label(r.lo, p1.y);
    std::snprintf(label, sizeof label, "decode step (0..%lld)", (long long)std::max<int64_t>(0, n_steps - 1));
    dl->AddText({p0.x, p1.y + 2}, IM_COL32(200, 200, 200, 255), label);
    if (n_steps == 0) {
        ImGui::PopID();
        return -1;
    }
    dl->PushClipRect(p0, p1, true);
    for (const Series& s : series) DrawSeries(dl, s, p0, p1, n_steps, r);
    auto x_of = [&](int64_t step) { return p0.x + (n_steps > 1 ? float(step) / float(n_steps - 1) : 0.5f) * (p1.x - p0.x); };
    if (selected_step >= 0 && selected_step < n_steps)
        dl->AddLine({x_of(selected_step), p0.y}, {x_of(selected_step), p1.y}, IM_COL32(255, 255, 255, 120));
    dl->PopClipRect();

    int64_t result = -1;
    if (hovered) {
        const float fx = (ImGui::GetIO().MousePos.x - p0.x) / std::max(1.0f, p1.x - p0.x);
        const int64_t step = std::clamp<int64_t>(int64_t(std::lround(fx * double(n_steps - 1))), 0, n_steps - 1);
        dl->AddLine({x_of(step), p0.y}, {x_of(step), p1.y}, IM_COL32(255, 255, 255, 60));
        ImGui::BeginTooltip();
        ImGui::Text("step %lld", (long long)step);
        for (const Series& s : series) {
            if (step >= s.count) continue;
            const double v = s.value(step);
            ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(s.color), "%s: %s", s.label,
                               std::string_view(unit) == "bytes" ? FormatBytes(v) : (std::snprintf(label, sizeof label, "%.3f %s", v, unit), label));
        }
        ImGui::EndTooltip();
        if (clicked) result = step;
    }
    ImGui::PopID();
    return result;
}

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

} // namespace

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

} // namespace kvscope
