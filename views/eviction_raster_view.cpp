// Eviction raster: decode step (down) by token position (across) for one layer and KV
// head: where a key is held (score colour), where it has been evicted (grey), where it
// does not exist yet (background). Drawn as one texture of at most one texel per pixel:
// the positions and steps that share a texel are folded into the fraction evicted there,
// so the cost is the view's size, not the run's. The image is rebuilt only when the run,
// the head or the size changes.
#include "views/plot.h"
#include "views/views.h"

#include <algorithm>

namespace kvscope {

namespace {

void Tooltip(const RunView& run, const EvictionIndex& index, int64_t step, int64_t pos) {
    ImGui::BeginTooltip();
    ImGui::Text("position %lld \"%s\"%s, step %lld", (long long)pos, TokenAt(run, pos).c_str(),
                pos < run.n_prompt ? " (prompt)" : "", (long long)step);
    const int32_t gone = index.At(pos);
    if (step < FirstStep(run, pos)) ImGui::TextDisabled("not in the cache yet");
    else if (gone <= step) ImGui::Text("evicted at step %d", gone);
    else if (gone != INT32_MAX) ImGui::Text("kept; evicted later, at step %d", gone);
    else ImGui::Text("kept");
    ImGui::EndTooltip();
}

// The raster as RGBA texels: texel (x, y) covers positions [x n_pos / W, (x+1) n_pos / W)
// and steps [y n_steps / H, ...); its colour mixes kept and evicted by the fraction of
// the positions there that exist and are gone.
struct RasterImage {
    ImTextureID texture = nullptr;
    int run = -1, layer = -1, head = -1, width = 0, height = 0;
    size_t steps = 0, evictions = 0;
    std::vector<uint32_t> texels;

    void Update(int r, const RunView& rv, const EvictionIndex& index, int w, int h, UploadTextureFn upload) {
        w = std::max(1, w), h = std::max(1, h);
        if (texture && r == run && index.layer == layer && index.head == head && w == width && h == height &&
            rv.steps.size() == steps && rv.evictions.size() == evictions)
            return;
        run = r, layer = index.layer, head = index.head, width = w, height = h;
        steps = rv.steps.size(), evictions = rv.evictions.size();
        const int64_t n_steps = int64_t(steps), n_pos = rv.n_prompt + n_steps;
        texels.assign(size_t(w) * size_t(h), IM_COL32(20, 20, 24, 255));
        std::vector<int64_t> born, gone; // of the column's positions, sorted
        for (int x = 0; x < w; ++x) {
            const int64_t first = int64_t(x) * n_pos / w, end = std::max(first + 1, int64_t(x + 1) * n_pos / w);
            born.clear(), gone.clear();
            for (int64_t p = first; p < std::min(end, n_pos); ++p) {
                born.push_back(FirstStep(rv, p));
                if (index.At(p) != INT32_MAX) gone.push_back(index.At(p));
            }
            std::sort(gone.begin(), gone.end()); // born is increasing already
            size_t n_born = 0, n_gone = 0;
            for (int y = 0; y < h; ++y) {
                const int64_t step = std::min(n_steps - 1, int64_t(y + 1) * n_steps / h - 1); // the texel's last step
                while (n_born < born.size() && born[n_born] <= step) ++n_born;
                while (n_gone < gone.size() && gone[n_gone] <= step) ++n_gone;
                if (n_born == 0) continue;
                texels[size_t(y) * size_t(w) + size_t(x)] = MixColor(ScoreColor(0.75f), IM_COL32(70, 70, 70, 255),
                                                               float(n_gone) / float(n_born));
            }
        }
        texture = upload(texture, w, h, texels.data());
    }
};

} // namespace

void DrawEvictionRasterView(ViewContext& ctx) {
    static EvictionIndex index;
    const auto& runs = ctx.snapshot.runs;
    const int r = SelectedRun(ctx.selection, ctx.snapshot);
    LayerHeadPickers(ctx.selection, ctx.snapshot.model, false);
    if (r < 0 || runs[size_t(r)].steps.empty()) {
        ImGui::TextDisabled("No decode steps yet.");
        return;
    }
    const RunView& run = runs[size_t(r)];
    index.Update(r, run, ctx.selection.layer, ctx.selection.head);
    const int64_t n_steps = int64_t(run.steps.size()), n_pos = run.n_prompt + n_steps;

    const ImVec2 size = ImGui::GetContentRegionAvail();
    const float label_h = ImGui::GetTextLineHeightWithSpacing();
    const ImVec2 p0 = ImGui::GetCursorScreenPos();
    const ImVec2 p1{p0.x + size.x, p0.y + std::max(label_h, size.y - label_h)};
    const float w = p1.x - p0.x, h = p1.y - p0.y;
    static RasterImage image;
    image.Update(r, run, index, int(std::min<int64_t>(n_pos, int64_t(w))), int(std::min<int64_t>(n_steps, int64_t(h))),
                 ctx.upload_texture);
    ImGui::Image(image.texture, {w, h});
    const bool hovered = ImGui::IsItemHovered(), clicked = ImGui::IsItemClicked();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    auto y_of = [&](int64_t step) { return p0.y + float(double(step) / double(n_steps)) * h; };
    const float px = float(ctx.selection.position) / float(n_pos) * w;
    if (ctx.selection.position >= 0) dl->AddLine({p0.x + px, p0.y}, {p0.x + px, p1.y}, IM_COL32(255, 255, 255, 140));
    if (ctx.selection.step >= 0) dl->AddLine({p0.x, y_of(ctx.selection.step)}, {p1.x, y_of(ctx.selection.step)}, IM_COL32(255, 255, 255, 140));
    dl->AddLine({p0.x + float(run.n_prompt) / float(n_pos) * w, p0.y}, {p0.x + float(run.n_prompt) / float(n_pos) * w, p1.y},
                IM_COL32(230, 159, 0, 160)); // where the prompt ends

    if (hovered) {
        const ImVec2 m = ImGui::GetIO().MousePos;
        const int64_t pos = std::clamp<int64_t>(int64_t((m.x - p0.x) / w * float(n_pos)), 0, n_pos - 1);
        const int64_t step = std::clamp<int64_t>(int64_t((m.y - p0.y) / h * float(n_steps)), 0, n_steps - 1);
        Tooltip(run, index, step, pos);
        if (clicked) {
            ctx.selection.run = r;
            ctx.selection.step = int(step);
            ctx.selection.position = int(pos);
        }
    }
    ImGui::TextDisabled("token position 0..%lld across (orange: end of prompt), decode step 0..%lld down; "
                        "colour: kept, grey: evicted", (long long)n_pos - 1, (long long)n_steps - 1);
}

} // namespace kvscope
