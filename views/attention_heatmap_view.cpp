// Attention heatmap: query (down) by key position (across) for one layer and query head.
// Two sources:
//   run    the selected run's decode steps, one row per recorded step: the share of the
//          step's attention each bin of key positions got (AttentionTrace: positions
//          folded into at most 256 bins by their sum, old steps thinned past a memory
//          cap), keys the head's cache had evicted by then greyed over their colour;
//   probe  the head analysis' map of the head last clicked in the head grid, on the probe
//          that defines its role (max-pooled to at most 512 x 512 cells).
// The run's map is a texture of the visible part at most a texel per pixel, folded off the
// UI thread (views/image_builder.h) when the data, the head or the zoom changes; the
// probe's is one texture of at most 512 x 512. The mouse wheel zooms about the mouse, a
// drag pans, a double click shows it all again.
#include "views/image_builder.h"
#include "views/plot.h"
#include "views/views.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <memory>

namespace kvscope {

namespace {

const ImU32 kNoKey = IM_COL32(20, 20, 24, 255); // no such key yet (causality)

// One head's rows of a run's trace, copied once per change of the data and shared by
// every image folded from them (a zoom folds again, copying nothing).
struct RunRows {
    int bins = 0;
    int64_t n_prompt = 0, n_positions = 0;
    std::vector<int32_t> steps;      // recorded decode steps
    std::vector<float> mass;         // [steps][bins]; empty rows are NaN
    std::vector<int32_t> evicted_at; // EvictionIndex::evicted_at
};

RunRows CopyRows(const RunView& rv, const EvictionIndex& index, int layer, int head) {
    const AttentionTrace& t = rv.attention;
    RunRows in{t.bins, rv.n_prompt, t.n_positions, t.steps, {}, index.evicted_at};
    in.mass.resize(t.steps.size() * size_t(std::max(0, t.bins)), NAN);
    for (size_t i = 0; i < t.steps.size(); ++i)
        if (const float* row = t.Row(i, layer, head)) std::copy_n(row, t.bins, in.mass.begin() + ptrdiff_t(i * size_t(t.bins)));
    return in;
}

// The part of the run map an image shows, in the trace's bins [c0, c1) and rows [r0, r1),
// and the image's size: at most a texel per pixel (the level of detail of the view).
struct MapWindow {
    int64_t c0 = 0, c1 = 0, r0 = 0, r1 = 0;
    int width = 0, height = 0;
};

MapWindow VisibleWindow(const ZoomPan& zoom, int64_t bins, int64_t rows, ImVec2 size) {
    auto span = [](float u0, float u1, int64_t n, int64_t& lo, int64_t& hi) {
        lo = std::clamp<int64_t>(int64_t(std::floor(u0 * float(n))), 0, n - 1);
        hi = std::clamp<int64_t>(int64_t(std::ceil(u1 * float(n))), lo + 1, n);
    };
    MapWindow w;
    span(zoom.uv0.x, zoom.uv1.x, bins, w.c0, w.c1);
    span(zoom.uv0.y, zoom.uv1.y, rows, w.r0, w.r1);
    w.width = int(std::clamp<int64_t>(int64_t(size.x), 1, w.c1 - w.c0));
    w.height = int(std::clamp<int64_t>(int64_t(size.y), 1, w.r1 - w.r0));
    return w;
}

// The window's texels, on the image builder's thread. A texel folds a block of bins (their
// attention summed: the share the block's keys got) and of rows (the largest such share
// over the block's steps, so a peak in one step survives), greyed by the share of the
// block's keys the head's cache had evicted by the block's last step.
Image FoldRunMap(const RunRows& in, const MapWindow& w) {
    Image image{w.width, w.height, std::vector<uint32_t>(size_t(w.width) * size_t(w.height), kNoKey)};
    const size_t bins = size_t(in.bins);
    std::vector<int32_t> gone; // eviction steps of the column's keys, sorted
    for (int x = 0; x < w.width; ++x) {
        const int64_t b0 = w.c0 + FoldStart(x, w.c1 - w.c0, w.width), b1 = w.c0 + FoldStart(x + 1, w.c1 - w.c0, w.width);
        const int64_t p0 = FoldStart(b0, in.n_positions, in.bins), p1 = FoldStart(b1, in.n_positions, in.bins);
        gone.clear();
        for (int64_t p = p0; p < std::min<int64_t>(p1, int64_t(in.evicted_at.size())); ++p)
            if (in.evicted_at[size_t(p)] != INT32_MAX) gone.push_back(in.evicted_at[size_t(p)]);
        std::sort(gone.begin(), gone.end());
        size_t n_gone = 0;
        for (int y = 0; y < w.height; ++y) {
            const int64_t i0 = w.r0 + FoldStart(y, w.r1 - w.r0, w.height), i1 = w.r0 + FoldStart(y + 1, w.r1 - w.r0, w.height);
            float share = NAN;
            for (int64_t i = i0; i < i1; ++i) {
                const float* row = &in.mass[size_t(i) * bins];
                if (std::isnan(row[0])) continue; // a row the trace lacks
                const float sum = std::accumulate(row + b0, row + b1, 0.0f);
                share = std::isnan(share) ? sum : std::max(share, sum);
            }
            const int32_t last = in.steps[size_t(i1 - 1)];
            const int64_t visible = std::min(p1, in.n_prompt + last); // step k's query sees positions < n_prompt + k
            if (std::isnan(share) || visible <= p0) continue;
            while (n_gone < gone.size() && gone[n_gone] < last) ++n_gone;
            image.texels[size_t(y) * size_t(w.width) + size_t(x)] =
                GreyedColor(AttentionColor(share), float(n_gone) / float(visible - p0));
        }
    }
    return image;
}

// The probe source's image: texel (key cell, query cell).
struct ProbeImage {
    ImTextureID texture = nullptr;
    uint32_t revision = 0;
    std::vector<uint32_t> texels;

    void Update(const HeadAnalysis& h, UploadTextureFn upload) {
        if (texture && revision == h.revision) return;
        revision = h.revision;
        const AttentionMap& m = h.map;
        texels.resize(m.cells.size());
        for (size_t i = 0; i < m.cells.size(); ++i) texels[i] = AttentionColor(m.cells[i]);
        if (!texels.empty()) texture = upload(texture, m.cols, m.rows, texels.data());
    }
};

// "first .. last" positions of a cell, or the one, with the first's token.
void CellText(const char* what, int64_t p0, int64_t p1, const std::string& token) {
    if (p1 - p0 <= 1) ImGui::Text("%s %lld \"%s\"", what, (long long)p0, token.c_str());
    else ImGui::Text("%s %lld .. %lld (\"%s\" ..)", what, (long long)p0, (long long)p1 - 1, token.c_str());
}

// The rest of the view, less a line for the caption below it.
void ImageArea(ImVec2& p0, ImVec2& size) {
    size = ImGui::GetContentRegionAvail();
    size.y = std::max(ImGui::GetTextLineHeight(), size.y - ImGui::GetTextLineHeightWithSpacing());
    p0 = ImGui::GetCursorScreenPos();
}

// An image over the area, with zoom and pan. The texture covers [image_min, image_max] of
// the data (uv units: 0..1 the whole of it) and is drawn where the zoom puts that, clipped
// to the area. Returns the data cell under the mouse, of a data_w x data_h grid (none
// when either is 0), and whether it was clicked.
struct Hover {
    int x = -1, y = -1;
    bool clicked = false;
};
Hover ZoomableImage(const char* id, ImTextureID texture, ImVec2 image_min, ImVec2 image_max, int data_w, int data_h,
                    ZoomPan& zoom, ImVec2 p0, ImVec2 size) {
    ImGui::InvisibleButton(id, size);
    zoom.Update(p0, size);
    ImDrawList* dl = ImGui::GetWindowDrawList();
    dl->PushClipRect(p0, {p0.x + size.x, p0.y + size.y}, true);
    if (texture) dl->AddImage(texture, zoom.ToScreen(p0, size, image_min), zoom.ToScreen(p0, size, image_max));
    dl->PopClipRect();
    Hover h;
    if (!ImGui::IsItemHovered() || data_w <= 0 || data_h <= 0) return h;
    const ImVec2 uv = zoom.ToUV(p0, size, ImGui::GetIO().MousePos);
    h.x = std::clamp(int(uv.x * float(data_w)), 0, data_w - 1);
    h.y = std::clamp(int(uv.y * float(data_h)), 0, data_h - 1);
    h.clicked = ZoomPan::Clicked();
    return h;
}

void DrawRunMap(ViewContext& ctx, int layer, int head) {
    static EvictionIndex index;
    static ImageBuilder image;
    static ZoomPan zoom;
    const int r = SelectedRun(ctx.selection, ctx.snapshot);
    if (r < 0) return ImGui::TextDisabled("No runs yet.");
    const RunView& run = ctx.snapshot.runs[size_t(r)];
    const AttentionTrace& t = run.attention;
    if (t.steps.empty() || t.bins <= 0 || t.n_positions <= 0)
        return ImGui::TextDisabled("Run #%d has no attention recorded (it comes with each decode step).", r + 1);
    const int group = std::max(1, t.n_head / std::max(1, ctx.snapshot.model.n_head_kv));
    index.Update(r, run, layer, head / group);
    const int64_t n_rows = int64_t(t.steps.size());
    const int64_t per_bin = (t.n_positions + t.bins - 1) / t.bins;
    const int64_t context = run.n_prompt + int64_t(run.steps.size()); // the last bin may reach past it
    ColorLegend(AttentionColor, per_bin > 1 ? "share of the step's attention per bin, log 0.001 .. 1; grey: evicted"
                                            : "share of the step's attention, log 0.001 .. 1; grey: evicted");
    HelpMarker("Each row is a decode step; each column a bin of key positions holding the sum of the attention "
               "its keys got (the bins of a row sum to 1). Where a pixel holds several bins it shows their sum, "
               "several steps the largest of them. Greyed: keys the head's cache had evicted by that step.");

    // The image of the visible part, folded to the view's pixels off the UI thread from
    // rows copied once per change of the data.
    static std::shared_ptr<const RunRows> rows;
    static ImageKey rows_key;
    ImVec2 p0, size;
    ImageArea(p0, size);
    const MapWindow w = VisibleWindow(zoom, t.bins, n_rows, size);
    const ImageKey data_key = {r, layer, head, n_rows, int64_t(run.evictions.size()), t.generation};
    ImageKey key = data_key;
    key.insert(key.end(), {w.c0, w.c1, w.r0, w.r1, w.width, w.height});
    if (image.Wants(key)) {
        if (!rows || rows_key != data_key) rows = std::make_shared<const RunRows>(CopyRows(run, index, layer, head));
        rows_key = data_key;
        image.Request(key, [rows = rows, w] { return FoldRunMap(*rows, w); });
    }
    const ImTextureID texture = image.Texture(ctx.upload_texture);
    // The texture may still be the last image asked for: another window of this trace (the
    // newest steps may follow), or another head's, shown without a readout until its own
    // is done; one of a trace since thinned is not shown.
    const ImageKey& shown = image.ShownKey();
    const bool same_rows = texture && shown[0] == r && shown[5] == t.generation;
    const bool current = same_rows && shown[1] == layer && shown[2] == head;
    const ImVec2 image_min = same_rows ? ImVec2{float(shown[6]) / float(t.bins), float(shown[8]) / float(n_rows)} : ImVec2{};
    const ImVec2 image_max = same_rows ? ImVec2{float(shown[7]) / float(t.bins), float(shown[9]) / float(n_rows)} : ImVec2{};
    const Hover h = ZoomableImage("run map", same_rows ? texture : nullptr, image_min, image_max, current ? t.bins : 0,
                                  int(n_rows), zoom, p0, size);
    if (ctx.selection.step >= 0) { // the recorded row at or before the selected step
        const auto it = std::upper_bound(t.steps.begin(), t.steps.end(), ctx.selection.step);
        if (it != t.steps.begin()) {
            const float v = (float(it - t.steps.begin()) - 0.5f) / float(n_rows);
            const float y = zoom.ToScreen(p0, size, {0, v}).y;
            if (y >= p0.y && y <= p0.y + size.y)
                ImGui::GetWindowDrawList()->AddLine({p0.x, y}, {p0.x + size.x, y}, IM_COL32(255, 255, 255, 140));
        }
    }
    if (h.x >= 0) {
        const int32_t step = t.steps[size_t(h.y)];
        const int64_t p_0 = FoldStart(h.x, t.n_positions, t.bins);
        const int64_t p_1 = std::min(FoldStart(h.x + 1, t.n_positions, t.bins), context);
        const float* row = t.Row(size_t(h.y), layer, head);
        int64_t gone = 0;
        for (int64_t p = p_0; p < p_1; ++p) gone += index.At(p) < step;
        ImGui::BeginTooltip();
        ImGui::Text("decode step %d (query at position %lld): %.4f of its attention", step,
                    (long long)(run.n_prompt + step - 1), row ? row[h.x] : 0.0f);
        CellText("keys", p_0, p_1, TokenAt(run, p_0));
        if (gone > 0) ImGui::Text("%lld of them evicted from KV head %d by then", (long long)gone, head / group);
        KeepGrid(run, ctx.snapshot.model, p_0, step);
        ImGui::EndTooltip();
        if (h.clicked) {
            ctx.selection.run = r;
            ctx.selection.step = step;
            ctx.selection.position = int(p_0);
        }
    }
    ImGui::TextDisabled("key position 0..%lld across (%lld per bin), recorded decode steps %d..%d down (every %d)%s",
                        (long long)context - 1, (long long)per_bin, t.steps.front(), t.steps.back(), t.stride,
                        current ? "" : "; folding the new head's image");
}

void DrawProbeMap(ViewContext& ctx) {
    static ProbeImage image;
    static ZoomPan zoom;
    const HeadAnalysis& heads = ctx.snapshot.heads;
    const AttentionMap& m = heads.map;
    if (heads.map_pending) ImGui::TextDisabled("computing the head's attention on its probe...");
    if (m.cells.empty() || m.rows <= 0 || m.cols <= 0 || m.cells.size() != size_t(m.rows) * size_t(m.cols))
        return ImGui::TextDisabled("No probe map: analyze heads in the head grid, then click a head.");
    image.Update(heads, ctx.upload_texture);
    ImGui::Text("L%d.H%d on \"%s\" (defines %s)", m.layer, m.head, m.probe.c_str(), m.role.c_str());
    ColorLegend(AttentionColor, "attention probability, log 0.001 .. 1 (max over a cell)");
    HelpMarker("Query by key on the probe, one prefill with dense attention; where several queries or keys share "
               "a cell it shows their largest probability, so sharp peaks survive the fold.");
    ImVec2 p0, size;
    ImageArea(p0, size);
    const Hover h = ZoomableImage("probe map", image.texture, {0, 0}, {1, 1}, m.cols, m.rows, zoom, p0, size);
    if (h.x >= 0) {
        const int64_t q0 = FoldStart(h.y, m.n_query, m.rows), q1 = FoldStart(h.y + 1, m.n_query, m.rows);
        const int64_t k0 = FoldStart(h.x, m.n_key, m.cols), k1 = FoldStart(h.x + 1, m.n_key, m.cols);
        auto token = [&](int64_t p) { return size_t(p) < m.token_text.size() ? m.token_text[size_t(p)] : std::string(); };
        ImGui::BeginTooltip();
        ImGui::Text("attention %.4f (the largest in the cell)", m.cells[size_t(h.y) * size_t(m.cols) + size_t(h.x)]);
        CellText("queries", q0, q1, token(q0));
        CellText("keys", k0, k1, token(k0));
        ImGui::EndTooltip();
    }
    ImGui::TextDisabled("key position 0..%lld across, query position 0..%lld down (%d x %d cells)",
                        (long long)m.n_key - 1, (long long)m.n_query - 1, m.cols, m.rows);
}

} // namespace

void DrawAttentionHeatmapView(ViewContext& ctx) {
    const ModelInfo& model = ctx.snapshot.model;
    int source = ctx.settings.attention_probe ? 1 : 0;
    ImGui::RadioButton("run", &source, 0);
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("The selected run's decode steps.");
    ImGui::SameLine();
    ImGui::RadioButton("probe", &source, 1);
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("The head-grid head's attention on the probe that defines its role.");
    ctx.settings.attention_probe = source == 1;
    if (source == 1) return DrawProbeMap(ctx);
    ImGui::SameLine();
    LayerHeadPickers(ctx.selection, model, true);
    const int group = std::max(1, model.n_head_kv > 0 ? model.n_head / model.n_head_kv : 1);
    DrawRunMap(ctx, ctx.selection.layer, SelectedQueryHead(ctx.selection, group));
}

} // namespace kvscope
