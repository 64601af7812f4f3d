// Drawing helpers the views share: the colour scales of UI.md and a line plot that
// folds many steps into per-pixel-column min/max, as Tracy's plots do.
#pragma once

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

// A "(?)" marker whose tooltip explains what a number is, in one sentence.
void HelpMarker(const char* text);
// A heading over a group of widgets: a label and a rule (1.86 has no SeparatorText).
void SectionHeading(const char* label);
// A byte count in B, KiB or MiB.
const char* FormatBytes(double bytes);

} // namespace kvscope
