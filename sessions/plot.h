// A small rasteriser for the report's PNG plots (sessions/report.h): an RGB canvas with
// anti-aliased lines, rectangles and text, line charts with axes, tick labels and a legend,
// and grid charts (eviction rasters, heatmaps). Text is DejaVu Sans (Debian's
// fonts-dejavu-core) drawn by stb_truetype; PNGs are encoded by stb_image_write
// (Debian's libstb-dev).
//
// Every chart has the same plot area (kPlotArea), so a value or a cell lands on a pixel
// that can be computed; the legend sits below it and the image grows downward to fit.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct stbtt_fontinfo;

namespace kvscope::plot {

struct Rgb {
    uint8_t r = 0, g = 0, b = 0;
    bool operator==(const Rgb& o) const { return r == o.r && g == o.g && b == o.b; }
    bool operator!=(const Rgb& o) const { return !(*this == o); }
};

// The colour of a cell without a value (a heatmap's missing score, a raster's future).
inline constexpr Rgb kNoData{244, 244, 244};

struct Rect {
    int x = 0, y = 0, w = 0, h = 0;
};

// Coverage (0-255) of a piece of text, one byte per pixel, row by row.
struct TextMask {
    int w = 0, h = 0;
    std::vector<uint8_t> alpha;
};

// A TrueType font file, whole in memory. Throws Error naming the file when it is missing
// or not a font.
class Font {
public:
    static constexpr const char* kDefaultPath = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

    explicit Font(const std::string& path = kDefaultPath);
    ~Font();
    Font(const Font&) = delete;
    Font& operator=(const Font&) = delete;

    // `utf8` at `pixel_height` (ascent to descent); the mask is as wide as the text advances.
    TextMask render(std::string_view utf8, float pixel_height) const;

private:
    std::string bytes_; // stb_truetype reads the file in place
    std::unique_ptr<stbtt_fontinfo> info_;
};

enum class Align { left, centre, right };

class Canvas {
public:
    Canvas(int width, int height, Rgb background);

    int width() const { return width_; }
    int height() const { return height_; }
    Rgb at(int x, int y) const;

    // Drawing outside `area` is dropped; the whole canvas by default.
    void clip(std::optional<Rect> area);
    void fill(Rect r, Rgb colour);
    // A polyline of `thickness` pixels, dashed in runs of `dash` pixels when dash > 0.
    // A NaN coordinate breaks the line; a single point is drawn as a dot.
    void polyline(const std::vector<double>& xs, const std::vector<double>& ys, Rgb colour, double thickness,
                  double dash = 0);
    void line(double x0, double y0, double x1, double y1, Rgb colour, double thickness = 1);
    void dot(double x, double y, double diameter, Rgb colour);
    // Text whose top edge is at `y` and whose `align` point is at `x`; vertical text reads
    // bottom to top, centred on (x, y).
    void text(const Font& font, std::string_view utf8, int x, int y, float size, Rgb colour, Align align = Align::left);
    void vertical_text(const Font& font, std::string_view utf8, int x, int y, float size, Rgb colour);

    // The canvas as a PNG file's bytes.
    std::string png() const;

private:
    void blend(int x, int y, Rgb colour, double coverage);
    void segment(double x0, double y0, double x1, double y1, Rgb colour, double thickness, double dash, double offset);

    int width_, height_;
    std::vector<uint8_t> rgb_;
    Rect clip_;
};

// ---- charts ---------------------------------------------------------------------------

constexpr int kChartWidth = 800;
constexpr Rect kPlotArea{84, 40, 690, 340}; // where the data goes, in every chart

struct Axis {
    std::string label;
    bool log = false;                // values must be > 0
    std::optional<double> min, max;  // fixed ends; the data's range (padded) otherwise
    std::vector<double> ticks;       // where the ticks go; round numbers in the range when empty
};

struct Series {
    std::string name;
    Rgb colour;
    std::vector<double> x, y; // NaN y: no value there
    bool dashed = false;
    bool markers = false;     // a dot at each point
    bool in_legend = true;
};

// A legend entry: a line sample (solid or dashed) or a filled swatch.
struct LegendEntry {
    std::string name;
    Rgb colour;
    bool dashed = false;
    bool swatch = false;
};

// A colour scale legend (viridis) from `min` to `max`.
struct ColourBar {
    std::string label;
    double min = 0, max = 1;
};

struct LineChart {
    std::string title;
    Axis x, y;
    std::vector<Series> series;
    std::vector<LegendEntry> notes; // legend entries after the series' (e.g. what dashed means)
};

// Cells coloured by the caller, column c from x = c to c + 1, row r from y = r to r + 1
// (row 0 at the bottom); ticks fall on cell centres.
struct GridChart {
    std::string title;
    Axis x, y;
    int64_t cols = 0, rows = 0;
    // The colour of a pixel that covers columns [c0, c1) and rows [r0, r1), at least one of
    // each: a long run's raster folds many cells into one pixel.
    std::function<Rgb(int64_t c0, int64_t c1, int64_t r0, int64_t r1)> colour;
    std::vector<LegendEntry> legend;
    std::optional<ColourBar> bar;
};

Canvas draw_line_chart(const LineChart& chart, const Font& font);
Canvas draw_grid_chart(const GridChart& chart, const Font& font);

// The pixel rectangle of cell (col, row) of a cols x rows grid chart.
Rect grid_cell(int64_t cols, int64_t rows, int64_t col, int64_t row);

// The i-th categorical colour (a method, a run), the same in every chart of a report.
Rgb category_colour(size_t i);
// Viridis, t in [0, 1].
Rgb viridis(double t);

} // namespace kvscope::plot
