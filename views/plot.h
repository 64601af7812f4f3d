// Drawing helpers the views share: the colour scales of UI.md and a line plot that
// folds many steps into per-pixel-column min/max, as Tracy's plots do.
#pragma once

#include "views/snapshot.h"

#include <imgui.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace kvscope {

// A perceptually uniform sequential scale (viridis-like) for t in [0, 1].
ImU32 ScoreColor(float t);
// The neutral grey of reference runs.
ImU32 ReferenceColor();
// Method run i's categorical colour (Okabe-Ito: colour-blind safe), the same in every view.
ImU32 RunColor(int i);
// a * (1 - t) + b * t, channel by channel, opaque.
ImU32 MixColor(ImU32 a, ImU32 b, float t);
// An evicted key's colour: its score colour greyed by `t` in [0, 1] (UI.md: evicted is
// greyed on top of the score colour, never another hue).
ImU32 GreyedColor(ImU32 score, float t);
// An attention share (a probability, or a sum of them) on ScoreColor's scale, in log10
// from 1e-3 to 1: attention is mostly small, and one scale serves every attention view.
ImU32 AttentionColor(float share);
// The colour scale as a bar, with what its ends mean: `scale(t)` for t in [0, 1].
void ColorLegend(ImU32 (*scale)(float), const char* text);
// Sliders for the selected layer and KV head, or query head (setting the KV head with it).
void LayerHeadPickers(Selection& selection, const ModelInfo& model, bool query_head);

// Zoom (mouse wheel, about the mouse) and pan (drag) of an image drawn over a rectangle:
// the visible part as texture coordinates. A double click shows it all again.
struct ZoomPan {
    ImVec2 uv0{0, 0}, uv1{1, 1};
    // After the rectangle's item (an InvisibleButton): reads its hover and drag.
    void Update(ImVec2 p0, ImVec2 size);
    ImVec2 ToUV(ImVec2 p0, ImVec2 size, ImVec2 screen) const;
    ImVec2 ToScreen(ImVec2 p0, ImVec2 size, ImVec2 uv) const;
    // A click that was not the end of a drag, on the last item.
    static bool Clicked();
};

// A mismatch with the reference: Okabe-Ito vermillion, against RunColor's blue.
ImU32 MismatchColor();

struct Series {
    const char* label;
    int64_t count;
    std::function<double(int64_t)> value; // at step i < count
    ImU32 color;
    bool dashed = false;
};

// A plot of `series` over steps with a labelled y axis in `unit`; hover shows every
// series' value at the step. Returns the step clicked, or -1.
int64_t LinePlot(const char* id, const char* unit, const std::vector<Series>& series, ImVec2 size,
                 int64_t selected_step);

// Inside a tooltip: which (layer, KV head) caches of `run` still hold position `pos` after
// `step`, as a small grid (the token strip's and the heatmap's hover).
void KeepGrid(const RunView& run, const ModelInfo& model, int64_t pos, int64_t step);

// A "(?)" marker whose tooltip explains what a number is, in one sentence.
void HelpMarker(const char* text);
// A heading over a group of widgets: a label and a rule (1.86 has no SeparatorText).
void SectionHeading(const char* label);
// A byte count in B, KiB or MiB.
const char* FormatBytes(double bytes);

} // namespace kvscope
