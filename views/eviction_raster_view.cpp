// Eviction raster: decode step (down) by token position (across) for one layer and KV
// head: where a key is held (score colour), where it has been evicted (grey), where it
// does not exist yet (background). Drawn as one texture of at most one texel per pixel:
// the positions and steps that share a texel are folded into the fraction evicted there,
// so the cost is the view's size, not the run's. The image is built off the UI thread
// (views/image_builder.h) when the run, the head, the size or the data changes; until it
// is done the last one is drawn.
#include "views/image_builder.h"
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

// The raster's texels: texel (x, y) covers positions [x n_pos / W, (x+1) n_pos / W) and
// steps [y n_steps / H, ...); its colour mixes kept and evicted by the fraction of the
// positions there that exist and are gone. Runs on the image builder's thread, on copies.
Image FoldRaster(const std::vector<int32_t>& evicted_at, int64_t n_prompt, int64_t n_steps, int w, int h) {
    Image image{w, h, std::vector<uint32_t>(size_t(w) * size_t(h), IM_COL32(20, 20, 24, 255))};
    const int64_t n_pos = n_prompt + n_steps;
    std::vector<int64_t> born, gone; // of the column's positions, sorted
    for (int x = 0; x < w; ++x) {
        const int64_t first = int64_t(x) * n_pos / w, end = std::max(first + 1, int64_t(x + 1) * n_pos / w);
        born.clear(), gone.clear();
        for (int64_t p = first; p < std::min(end, n_pos); ++p) {
            born.push_back(p < n_prompt ? 0 : p - n_prompt + 1); // FirstStep
            if (size_t(p) < evicted_at.size() && evicted_at[size_t(p)] != INT32_MAX) gone.push_back(evicted_at[size_t(p)]);
        }
        std::sort(gone.begin(), gone.end()); // born is increasing already
        size_t n_born = 0, n_gone = 0;
        for (int y = 0; y < h; ++y) {
            const int64_t step = std::min(n_steps - 1, int64_t(y + 1) * n_steps / h - 1); // the texel's last step
            while (n_born < born.size() && born[n_born] <= step) ++n_born;
            while (n_gone < gone.size() && gone[n_gone] <= step) ++n_gone;
            if (n_born == 0) continue;
            image.texels[size_t(y) * size_t(w) + size_t(x)] =
                MixColor(ScoreColor(0.75f), IM_COL32(70, 70, 70, 255), float(n_gone) / float(n_born));
        }
    }
    return image;
}

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
    // At most one texel per pixel, so the cost is the view's size, not the run's.
    static ImageBuilder image;
    const int tex_w = int(std::clamp<int64_t>(int64_t(w), 1, n_pos)), tex_h = int(std::clamp<int64_t>(int64_t(h), 1, n_steps));
    const ImageKey key = {r, index.layer, index.head, tex_w, tex_h, n_steps, int64_t(run.evictions.size())};
    if (image.Wants(key))
        image.Request(key, [evicted_at = index.evicted_at, n_prompt = run.n_prompt, n_steps, tex_w, tex_h] {
            return FoldRaster(evicted_at, n_prompt, n_steps, tex_w, tex_h);
        });
    const ImTextureID texture = image.Texture(ctx.upload_texture);
    if (!texture) return ImGui::TextDisabled("Folding the raster...");
    ImGui::Image(texture, {w, h});
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
