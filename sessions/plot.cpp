#include "sessions/plot.h"

#include "core/error.h"

#include <stb_image_write.h>
#include <stb_truetype.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>

namespace kvscope::plot {

namespace {

const Rgb kInk{40, 40, 40};        // text and axes
const Rgb kGrid{228, 228, 228};    // tick lines across the plot
const Rgb kOutline{150, 150, 150}; // around legend swatches
const Rgb kWhite{255, 255, 255};
constexpr float kTextSize = 13, kTitleSize = 15;
constexpr int kLineHeight = 18;

// The next code point of `s` from `i` (advanced past it); U+FFFD for a malformed byte.
uint32_t next_code_point(std::string_view s, size_t& i) {
    const auto byte = [&](size_t k) { return uint32_t(uint8_t(s[k])); };
    const uint32_t lead = byte(i++);
    const int extra = lead < 0x80 ? 0 : (lead >> 5) == 6 ? 1 : (lead >> 4) == 14 ? 2 : (lead >> 3) == 30 ? 3 : -1;
    if (extra < 0) return 0xFFFD;
    uint32_t cp = extra == 0 ? lead : lead & (0x3F >> extra);
    for (int k = 0; k < extra; ++k) {
        if (i >= s.size() || (byte(i) & 0xC0) != 0x80) return 0xFFFD;
        cp = cp << 6 | (byte(i++) & 0x3F);
    }
    return cp;
}

} // namespace

// ---- font -----------------------------------------------------------------------------

Font::Font(const std::string& path) : info_(std::make_unique<stbtt_fontinfo>()) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path, "report font", "cannot be read (install Debian's fonts-dejavu-core)");
    bytes_.assign(std::istreambuf_iterator<char>(in), {});
    const auto* data = reinterpret_cast<const unsigned char*>(bytes_.data());
    const int offset = stbtt_GetFontOffsetForIndex(data, 0);
    if (offset < 0 || !stbtt_InitFont(info_.get(), data, offset))
        throw Error(path, "report font", "is not a TrueType font");
}

Font::~Font() = default;

TextMask Font::render(std::string_view utf8, float pixel_height) const {
    const float scale = stbtt_ScaleForPixelHeight(info_.get(), pixel_height);
    int ascent = 0, descent = 0, gap = 0;
    stbtt_GetFontVMetrics(info_.get(), &ascent, &descent, &gap);
    const int baseline = int(std::lround(float(ascent) * scale));

    // Where each glyph goes, then one mask of the text's advance.
    std::vector<std::pair<uint32_t, float>> glyphs; // code point, pen position
    float pen = 0;
    for (size_t i = 0; i < utf8.size();) {
        const uint32_t cp = next_code_point(utf8, i);
        if (!glyphs.empty())
            pen += scale * float(stbtt_GetCodepointKernAdvance(info_.get(), int(glyphs.back().first), int(cp)));
        glyphs.emplace_back(cp, pen);
        int advance = 0, bearing = 0;
        stbtt_GetCodepointHMetrics(info_.get(), int(cp), &advance, &bearing);
        pen += scale * float(advance);
    }
    TextMask mask;
    mask.w = int(std::ceil(pen)) + 1;
    mask.h = int(std::lround(float(ascent - descent) * scale)) + 1;
    mask.alpha.assign(size_t(mask.w) * size_t(mask.h), 0);

    std::vector<uint8_t> glyph;
    for (const auto& [cp, x] : glyphs) {
        int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
        stbtt_GetCodepointBitmapBox(info_.get(), int(cp), scale, scale, &x0, &y0, &x1, &y1);
        const int gw = x1 - x0, gh = y1 - y0;
        if (gw <= 0 || gh <= 0) continue; // a space
        glyph.assign(size_t(gw) * size_t(gh), 0);
        stbtt_MakeCodepointBitmap(info_.get(), glyph.data(), gw, gh, gw, scale, scale, int(cp));
        // Neighbouring glyphs may overlap by a pixel: keep the larger coverage.
        for (int gy = 0; gy < gh; ++gy)
            for (int gx = 0; gx < gw; ++gx) {
                const int mx = int(x) + x0 + gx, my = baseline + y0 + gy;
                if (mx < 0 || mx >= mask.w || my < 0 || my >= mask.h) continue;
                uint8_t& a = mask.alpha[size_t(my) * size_t(mask.w) + size_t(mx)];
                a = std::max(a, glyph[size_t(gy) * size_t(gw) + size_t(gx)]);
            }
    }
    return mask;
}

// ---- canvas ---------------------------------------------------------------------------

Canvas::Canvas(int width, int height, Rgb background)
    : width_(width), height_(height), rgb_(size_t(width) * size_t(height) * 3), clip_{0, 0, width, height} {
    for (size_t i = 0; i < rgb_.size(); i += 3) {
        rgb_[i] = background.r;
        rgb_[i + 1] = background.g;
        rgb_[i + 2] = background.b;
    }
}

Rgb Canvas::at(int x, int y) const {
    const uint8_t* p = &rgb_[(size_t(y) * size_t(width_) + size_t(x)) * 3];
    return {p[0], p[1], p[2]};
}

void Canvas::clip(std::optional<Rect> area) { clip_ = area.value_or(Rect{0, 0, width_, height_}); }

void Canvas::blend(int x, int y, Rgb colour, double coverage) {
    if (x < clip_.x || y < clip_.y || x >= clip_.x + clip_.w || y >= clip_.y + clip_.h || coverage <= 0) return;
    uint8_t* p = &rgb_[(size_t(y) * size_t(width_) + size_t(x)) * 3];
    const double a = std::min(coverage, 1.0);
    const auto mix = [a](uint8_t under, uint8_t over) { return uint8_t(std::lround(under + a * (over - under))); };
    p[0] = mix(p[0], colour.r);
    p[1] = mix(p[1], colour.g);
    p[2] = mix(p[2], colour.b);
}

void Canvas::fill(Rect r, Rgb colour) {
    for (int y = r.y; y < r.y + r.h; ++y)
        for (int x = r.x; x < r.x + r.w; ++x) blend(x, y, colour, 1);
}

// One segment of a polyline, anti-aliased: a pixel's coverage falls off with its centre's
// distance from the segment. `offset` is how far along the polyline the segment starts,
// so that dashes run on across its joints.
void Canvas::segment(double x0, double y0, double x1, double y1, Rgb colour, double thickness, double dash,
                     double offset) {
    const double dx = x1 - x0, dy = y1 - y0, length2 = dx * dx + dy * dy, reach = thickness / 2 + 1;
    const int left = int(std::floor(std::min(x0, x1) - reach)), right = int(std::ceil(std::max(x0, x1) + reach));
    const int top = int(std::floor(std::min(y0, y1) - reach)), bottom = int(std::ceil(std::max(y0, y1) + reach));
    for (int y = std::max(top, clip_.y); y <= std::min(bottom, clip_.y + clip_.h - 1); ++y)
        for (int x = std::max(left, clip_.x); x <= std::min(right, clip_.x + clip_.w - 1); ++x) {
            const double px = x + 0.5 - x0, py = y + 0.5 - y0;
            const double t = length2 > 0 ? std::clamp((px * dx + py * dy) / length2, 0.0, 1.0) : 0;
            if (dash > 0 && std::fmod(offset + t * std::sqrt(length2), 2 * dash) >= dash) continue;
            const double distance = std::hypot(px - t * dx, py - t * dy);
            blend(x, y, colour, thickness / 2 + 0.5 - distance);
        }
}

void Canvas::polyline(const std::vector<double>& xs, const std::vector<double>& ys, Rgb colour, double thickness,
                      double dash) {
    double offset = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
        const bool here = std::isfinite(xs[i]) && std::isfinite(ys[i]);
        const bool before = i > 0 && std::isfinite(xs[i - 1]) && std::isfinite(ys[i - 1]);
        const bool after = i + 1 < xs.size() && std::isfinite(xs[i + 1]) && std::isfinite(ys[i + 1]);
        if (here && !before && !after) segment(xs[i], ys[i], xs[i], ys[i], colour, thickness, 0, 0); // alone
        if (!here || !after) continue;
        segment(xs[i], ys[i], xs[i + 1], ys[i + 1], colour, thickness, dash, offset);
        offset += std::hypot(xs[i + 1] - xs[i], ys[i + 1] - ys[i]);
    }
}

void Canvas::line(double x0, double y0, double x1, double y1, Rgb colour, double thickness) {
    segment(x0, y0, x1, y1, colour, thickness, 0, 0);
}

void Canvas::dot(double x, double y, double diameter, Rgb colour) { segment(x, y, x, y, colour, diameter, 0, 0); }

void Canvas::text(const Font& font, std::string_view utf8, int x, int y, float size, Rgb colour, Align align) {
    const TextMask m = font.render(utf8, size);
    const int left = align == Align::left ? x : align == Align::centre ? x - m.w / 2 : x - m.w;
    for (int my = 0; my < m.h; ++my)
        for (int mx = 0; mx < m.w; ++mx)
            blend(left + mx, y + my, colour, m.alpha[size_t(my) * size_t(m.w) + size_t(mx)] / 255.0);
}

void Canvas::vertical_text(const Font& font, std::string_view utf8, int x, int y, float size, Rgb colour) {
    const TextMask m = font.render(utf8, size);
    const int left = x - m.h / 2, bottom = y + m.w / 2;
    for (int my = 0; my < m.h; ++my)
        for (int mx = 0; mx < m.w; ++mx)
            blend(left + my, bottom - mx, colour, m.alpha[size_t(my) * size_t(m.w) + size_t(mx)] / 255.0);
}

std::string Canvas::png() const {
    std::string out;
    const auto append = [](void* context, void* data, int size) {
        static_cast<std::string*>(context)->append(static_cast<const char*>(data), size_t(size));
    };
    if (!stbi_write_png_to_func(append, &out, width_, height_, 3, rgb_.data(), width_ * 3))
        throw Error("report", "PNG", "encoding a " + std::to_string(width_) + "x" + std::to_string(height_) +
                                         " image failed");
    return out;
}

// ---- axes -----------------------------------------------------------------------------

namespace {

// Maps values on an axis to pixels, linearly or by their logarithm.
struct Scale {
    double lo = 0, hi = 1;
    bool log = false;
    double p_lo = 0, p_hi = 1; // the pixels of lo and hi

    double operator()(double v) const {
        const double t =
            log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
        return p_lo + t * (p_hi - p_lo);
    }
};

// Round steps of 1, 2 or 5 times a power of ten, about `target` of them across [lo, hi].
std::vector<double> linear_ticks(double lo, double hi, int target = 6) {
    const double raw = (hi - lo) / target, magnitude = std::pow(10, std::floor(std::log10(raw)));
    const double f = raw / magnitude;
    const double step = magnitude * (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10);
    std::vector<double> ticks;
    for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
        ticks.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
    return ticks;
}

// 1, 2 and 5 times the powers of ten in [lo, hi]; the powers alone when those are many.
std::vector<double> log_ticks(double lo, double hi) {
    std::vector<double> all, decades;
    for (int k = int(std::floor(std::log10(lo))); k <= int(std::ceil(std::log10(hi))); ++k)
        for (double m : {1.0, 2.0, 5.0}) {
            const double v = m * std::pow(10, k);
            if (v < lo * (1 - 1e-9) || v > hi * (1 + 1e-9)) continue;
            all.push_back(v);
            if (m == 1) decades.push_back(v);
        }
    return all.size() > 8 && decades.size() >= 2 ? decades : all;
}

std::string tick_label(double v) {
    char buf[32];
    if (std::abs(v) >= 1 && std::abs(v) < 1e9 && v == std::floor(v))
        std::snprintf(buf, sizeof buf, "%.0f", v);
    else
        std::snprintf(buf, sizeof buf, "%.3g", v);
    return buf;
}

// The axis's ends: fixed, or the data's range with a margin (a factor on a log axis).
std::pair<double, double> axis_range(const Axis& axis, double lo, double hi) {
    if (!(lo <= hi)) lo = hi = axis.log ? 1 : 0; // no data
    if (lo == hi) { // one value: a quarter of it either side
        const double pad = lo == 0 ? 1 : std::abs(lo) / 4;
        lo = axis.log ? lo / 2 : lo - pad;
        hi = axis.log ? hi * 2 : hi + pad;
    } else if (axis.log) {
        lo /= 1.25;
        hi *= 1.25;
    } else {
        const double pad = (hi - lo) * 0.05;
        lo -= pad;
        hi += pad;
    }
    return {axis.min.value_or(lo), axis.max.value_or(hi)};
}

std::vector<double> axis_ticks(const Axis& axis, double lo, double hi) {
    if (!axis.ticks.empty()) return axis.ticks;
    return axis.log ? log_ticks(lo, hi) : linear_ticks(lo, hi);
}

Scale x_scale(double lo, double hi, bool log) {
    return {lo, hi, log, double(kPlotArea.x), double(kPlotArea.x + kPlotArea.w)};
}
Scale y_scale(double lo, double hi, bool log) {
    return {lo, hi, log, double(kPlotArea.y + kPlotArea.h), double(kPlotArea.y)};
}

// An axis as drawn: its label, its scale and where its ticks go.
struct AxisPlan {
    const Axis& axis;
    Scale scale;
    std::vector<double> ticks;
};

// Tick marks, labels and grid lines of both axes; `offset` shifts the ticks (a grid's
// cell centres).
void draw_axes(Canvas& c, const Font& font, const AxisPlan& x, const AxisPlan& y, double offset, bool grid_lines) {
    const int left = kPlotArea.x, right = kPlotArea.x + kPlotArea.w;
    const int top = kPlotArea.y, bottom = kPlotArea.y + kPlotArea.h;
    for (double t : x.ticks) {
        const double px = x.scale(t + offset);
        if (grid_lines) c.line(px, top, px, bottom, kGrid);
        c.line(px, bottom, px, bottom + 4, kInk);
        c.text(font, tick_label(t), int(std::lround(px)), bottom + 6, kTextSize, kInk, Align::centre);
    }
    for (double t : y.ticks) {
        const double py = y.scale(t + offset);
        if (grid_lines) c.line(left, py, right, py, kGrid);
        c.line(left - 4, py, left, py, kInk);
        c.text(font, tick_label(t), left - 7, int(std::lround(py)) - 8, kTextSize, kInk, Align::right);
    }
    c.text(font, x.axis.label, left + kPlotArea.w / 2, bottom + 6 + kLineHeight + 2, kTextSize, kInk, Align::centre);
    c.vertical_text(font, y.axis.label, 12, top + kPlotArea.h / 2, kTextSize, kInk);
}

void draw_frame(Canvas& c, const Font& font, const std::string& title) {
    const int left = kPlotArea.x, right = kPlotArea.x + kPlotArea.w;
    const int top = kPlotArea.y, bottom = kPlotArea.y + kPlotArea.h;
    c.line(left, top, right, top, kInk);
    c.line(left, bottom, right, bottom, kInk);
    c.line(left, top, left, bottom, kInk);
    c.line(right, top, right, bottom, kInk);
    c.text(font, title, left, 10, kTitleSize, kInk);
}

// ---- legend ---------------------------------------------------------------------------

constexpr int kLegendTop = kPlotArea.y + kPlotArea.h + 2 * kLineHeight + 16;
constexpr int kSampleWidth = 26, kBarWidth = 240, kBarHeight = 12;

// Where each legend entry goes, left to right, wrapping at the chart's width.
struct LegendLayout {
    std::vector<std::pair<int, int>> at; // top-left of each entry
    int bottom = kLegendTop;
};

int text_width(const Font& font, const std::string& s) { return font.render(s, kTextSize).w; }

LegendLayout layout_legend(const std::vector<LegendEntry>& entries, const Font& font, int top) {
    LegendLayout layout;
    int x = kPlotArea.x, y = top;
    for (const LegendEntry& e : entries) {
        const int w = kSampleWidth + 6 + text_width(font, e.name);
        if (x > kPlotArea.x && x + w > kChartWidth - 10) {
            x = kPlotArea.x;
            y += kLineHeight;
        }
        layout.at.emplace_back(x, y);
        x += w + 18;
    }
    layout.bottom = entries.empty() ? top : y + kLineHeight;
    return layout;
}

void draw_legend(Canvas& c, const Font& font, const std::vector<LegendEntry>& entries, const LegendLayout& layout) {
    for (size_t i = 0; i < entries.size(); ++i) {
        const LegendEntry& e = entries[i];
        const auto [x, y] = layout.at[i];
        const double mid = y + kLineHeight / 2.0 - 1;
        if (e.swatch) {
            c.fill({x + 6, y + 2, 14, 14}, kOutline); // a swatch may be as pale as the page
            c.fill({x + 7, y + 3, 12, 12}, e.colour);
        } else {
            c.polyline({double(x), double(x + kSampleWidth)}, {mid, mid}, e.colour, 2.5, e.dashed ? 4 : 0);
        }
        c.text(font, e.name, x + kSampleWidth + 6, y + 1, kTextSize, kInk);
    }
}

constexpr int kColourBarHeight = kLineHeight + kBarHeight + kLineHeight;

// "label", then a viridis gradient with its two ends labelled.
void draw_colour_bar(Canvas& c, const Font& font, const ColourBar& bar, int top) {
    c.text(font, bar.label, kPlotArea.x, top, kTextSize, kInk);
    const int y = top + kLineHeight;
    for (int i = 0; i < kBarWidth; ++i) c.fill({kPlotArea.x + i, y, 1, kBarHeight}, viridis(i / double(kBarWidth - 1)));
    c.text(font, tick_label(bar.min), kPlotArea.x, y + kBarHeight + 2, kTextSize, kInk);
    c.text(font, tick_label(bar.max), kPlotArea.x + kBarWidth, y + kBarHeight + 2, kTextSize, kInk, Align::right);
}

// A white chart tall enough for its legend (and colour bar), which it draws.
Canvas chart_canvas(const Font& font, const std::vector<LegendEntry>& legend, const std::optional<ColourBar>& bar) {
    const LegendLayout layout = layout_legend(legend, font, kLegendTop + (bar ? kColourBarHeight + 6 : 0));
    Canvas c(kChartWidth, layout.bottom + 12, kWhite);
    if (bar) draw_colour_bar(c, font, *bar, kLegendTop);
    draw_legend(c, font, legend, layout);
    return c;
}

} // namespace

// ---- charts ---------------------------------------------------------------------------

Canvas draw_line_chart(const LineChart& chart, const Font& font) {
    std::vector<LegendEntry> legend;
    for (const Series& s : chart.series)
        if (s.in_legend) legend.push_back({s.name, s.colour, s.dashed, false});
    legend.insert(legend.end(), chart.notes.begin(), chart.notes.end());
    Canvas c = chart_canvas(font, legend, std::nullopt);

    const double inf = std::numeric_limits<double>::infinity();
    double x_lo = inf, x_hi = -inf, y_lo = inf, y_hi = -inf;
    for (const Series& s : chart.series)
        for (size_t i = 0; i < s.x.size(); ++i) {
            if (!std::isfinite(s.y[i])) continue;
            x_lo = std::min(x_lo, s.x[i]), x_hi = std::max(x_hi, s.x[i]);
            y_lo = std::min(y_lo, s.y[i]), y_hi = std::max(y_hi, s.y[i]);
        }
    const auto [x0, x1] = axis_range(chart.x, x_lo, x_hi);
    const auto [y0, y1] = axis_range(chart.y, y_lo, y_hi);
    const Scale xs = x_scale(x0, x1, chart.x.log), ys = y_scale(y0, y1, chart.y.log);
    draw_axes(c, font, {chart.x, xs, axis_ticks(chart.x, x0, x1)}, {chart.y, ys, axis_ticks(chart.y, y0, y1)}, 0, true);

    c.clip(kPlotArea);
    for (const Series& s : chart.series) {
        std::vector<double> px, py;
        for (size_t i = 0; i < s.x.size(); ++i) {
            px.push_back(xs(s.x[i]));
            py.push_back(std::isfinite(s.y[i]) ? ys(s.y[i]) : NAN);
        }
        c.polyline(px, py, s.colour, 2, s.dashed ? 6 : 0);
        if (s.markers)
            for (size_t i = 0; i < px.size(); ++i)
                if (std::isfinite(py[i])) c.dot(px[i], py[i], 6, s.colour);
    }
    c.clip(std::nullopt);
    draw_frame(c, font, chart.title);
    return c;
}

Rect grid_cell(int64_t cols, int64_t rows, int64_t col, int64_t row) {
    // The pixels p whose first cell, floor(p * n / size), is `i`: [ceil(i * size / n), ceil((i + 1) * size / n)).
    const auto first = [](int64_t i, int64_t n, int64_t size) { return int((i * size + n - 1) / n); };
    const int x0 = first(col, cols, kPlotArea.w), x1 = first(col + 1, cols, kPlotArea.w);
    const int q0 = first(row, rows, kPlotArea.h), q1 = first(row + 1, rows, kPlotArea.h); // from the bottom
    return {kPlotArea.x + x0, kPlotArea.y + kPlotArea.h - q1, x1 - x0, q1 - q0};
}

Canvas draw_grid_chart(const GridChart& chart, const Font& font) {
    Canvas c = chart_canvas(font, chart.legend, chart.bar);
    // Pixel p covers cells [floor(p * n / size), floor((p + 1) * n / size)), at least one:
    // every cell of a long run lands in exactly one pixel, a short run's cells span several.
    const auto cells = [](int p, int64_t n, int size) {
        const int64_t first = int64_t(p) * n / size;
        return std::pair{first, std::max(first + 1, int64_t(p + 1) * n / size)};
    };
    for (int py = 0; py < kPlotArea.h; ++py) {
        const auto [r0, r1] = cells(kPlotArea.h - 1 - py, chart.rows, kPlotArea.h);
        for (int px = 0; px < kPlotArea.w; ++px) {
            const auto [c0, c1] = cells(px, chart.cols, kPlotArea.w);
            c.fill({kPlotArea.x + px, kPlotArea.y + py, 1, 1}, chart.colour(c0, c1, r0, r1));
        }
    }
    const auto whole_ticks = [](int64_t n) {
        std::vector<double> ticks;
        for (double t : linear_ticks(0, double(std::max<int64_t>(n - 1, 1))))
            if (t == std::floor(t) && t < double(n)) ticks.push_back(t);
        return ticks;
    };
    draw_axes(c, font, {chart.x, x_scale(0, double(chart.cols), false), whole_ticks(chart.cols)},
              {chart.y, y_scale(0, double(chart.rows), false), whole_ticks(chart.rows)}, 0.5, false);
    draw_frame(c, font, chart.title);
    return c;
}

// ---- colours --------------------------------------------------------------------------

Rgb category_colour(size_t i) {
    // Tableau's ten categorical colours without its grey, which stands for the reference.
    static const std::array<Rgb, 9> colours{{{78, 121, 167}, {242, 142, 43}, {225, 87, 89},
                                             {118, 183, 178}, {89, 161, 79}, {237, 201, 72},
                                             {176, 122, 161}, {255, 157, 167}, {156, 117, 95}}};
    return colours[i % colours.size()];
}

Rgb viridis(double t) {
    // Viridis at nine evenly spaced points, interpolated linearly between them.
    static const std::array<Rgb, 9> stops{{{68, 1, 84}, {71, 44, 122}, {59, 82, 139},
                                           {44, 114, 142}, {33, 145, 140}, {40, 174, 128},
                                           {94, 201, 98}, {173, 220, 48}, {253, 231, 37}}};
    const double u = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * double(stops.size() - 1);
    const size_t i = std::min(size_t(u), stops.size() - 2);
    const double f = u - double(i);
    const auto mix = [f](uint8_t a, uint8_t b) { return uint8_t(std::lround(a + f * (b - a))); };
    return {mix(stops[i].r, stops[i + 1].r), mix(stops[i].g, stops[i + 1].g), mix(stops[i].b, stops[i + 1].b)};
}

} // namespace kvscope::plot
