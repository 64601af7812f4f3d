// The report export (sessions/report.h): synthetic runs stored with SessionWriter (steps and
// decisions, no model), rendered to Markdown, HTML and PNGs; every PNG decoded with
// stb_image and checked for its size and content, the eviction raster checked against the
// decisions cell by cell, the head-role grid against scores inserted here, and the errors
// (unknown run, a path that cannot be written) leaving no file behind.
#include "core/policy.h"
#include "sessions/plot.h"
#include "sessions/queries.h"
#include "sessions/report.h"
#include "sessions/schema.h"
#include "sessions/writer.h"
#include "test_util.h"

#include <stb_image.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

namespace kvscope {
namespace {

namespace fs = std::filesystem;
using plot::Rgb;
using test::expect_error;

constexpr int64_t kPrompt = 8, kSteps = 24, kSinks = 2;
const std::string kModelX = "sha256:" + std::string(64, 'a'), kModelY = "sha256:" + std::string(64, 'b');

struct RunSpec {
    std::string method, budget, model_hash;
    bool finish = true;
};

// A sliding window over `budget` positions with kSinks sinks: at each step that overflows
// it, layer 0 / KV head 0 loses its oldest non-sink position and layer 1 / head 1 the one
// before the newest; layer 0 / head 1 loses its oldest too (a head the raster must not mix in).
using Held = std::map<std::pair<int, int>, std::set<int32_t>>; // (layer, KV head) -> positions held

std::vector<Decision> window_decisions(int64_t step, int64_t budget, Held& held) {
    std::vector<Decision> out;
    for (auto& [at, kept] : held) {
        for (int64_t p = step == 0 ? 0 : kPrompt + step - 1; p < kPrompt + step; ++p) kept.insert(int32_t(p));
        if (int64_t(kept.size()) <= budget) continue;
        Decision d{at.first, at.second, {}, {}};
        const int32_t newest = int32_t(kPrompt + step - 1);
        d.evicted.push_back(at == std::pair{1, 1} ? newest - 1 : *std::next(kept.begin(), kSinks));
        kept.erase(d.evicted[0]);
        d.kept.assign(kept.begin(), kept.end());
        out.push_back(d);
    }
    return out;
}

// Stores one run; a budget of "-" (the full cache) evicts nothing. snapkv drifts half as
// far as h2o, and each run holds its own few extra KV bytes, so that no two lines coincide.
int64_t store_run(SessionWriter& writer, const RunSpec& spec) {
    RunRecord record;
    record.model_path = "/models/" + spec.model_hash.substr(7, 4) + ".gguf";
    record.model_hash = spec.model_hash;
    record.method = spec.method;
    record.budget = spec.budget;
    record.prompt_text = "a | pipe, <html> & \"quotes\"";
    record.prompt_tokens.assign(kPrompt, 1);
    record.device = "cpu";
    record.dtype = "f32";
    const int64_t id = writer.begin_run(record, [](int32_t t) { return "t" + std::to_string(t); });
    const int64_t budget = spec.budget == "-" ? 1 << 30 : std::stoll(spec.budget);
    Held held{{{0, 0}, {}}, {{1, 1}, {}}, {{0, 1}, {}}};
    const double drift = spec.method == "snapkv" ? 0.5 : 1;
    for (int64_t k = 0; k < kSteps; ++k) {
        const std::vector<Decision> decisions = window_decisions(k, budget, held);
        if (!decisions.empty()) writer.on_decisions(k, decisions);
        StepEvent e;
        e.step = k;
        e.token = e.reference_token = 5;
        e.kl = drift / double(budget);
        e.kv_bytes = 1024 * std::min(kPrompt + k, budget) + 3000 * id;
        e.kv_slots = std::min(kPrompt + k, budget);
        writer.on_step(e);
    }
    if (!spec.finish) return id;
    RunSummary s;
    s.method = spec.method;
    s.budget = spec.budget;
    s.has_reference = true;
    s.n_steps = kSteps;
    s.token_match = 1 - 2 * drift / double(std::min<int64_t>(budget, 64));
    s.mean_kl = drift / double(budget);
    s.top1 = 1 - drift / double(std::min<int64_t>(budget, 64));
    s.ppl_method = 10 + s.mean_kl;
    s.ppl_reference = 10;
    s.kv_bytes = 1024 * std::min(kPrompt + kSteps - 1, budget);
    s.reference_kv_bytes = 1024 * (kPrompt + kSteps - 1);
    s.final_context = kPrompt + kSteps;
    s.decode_seconds = 0.5;
    s.policy_seconds = 0.05;
    writer.end_run(s);
    return id;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

struct Image {
    int w = 0, h = 0;
    std::vector<Rgb> pixels;
    Rgb at(int x, int y) const { return pixels[size_t(y) * size_t(w) + size_t(x)]; }
    Rgb centre(plot::Rect r) const { return at(r.x + r.w / 2, r.y + r.h / 2); }
    // Pixels of `colour` inside `area`.
    int count(Rgb colour, plot::Rect area) const {
        int n = 0;
        for (int y = area.y; y < area.y + area.h; ++y)
            for (int x = area.x; x < area.x + area.w; ++x) n += at(x, y) == colour;
        return n;
    }
};

Image decode_png(const std::string& bytes) {
    int w = 0, h = 0, channels = 0;
    unsigned char* data = stbi_load_from_memory(reinterpret_cast<const unsigned char*>(bytes.data()), int(bytes.size()),
                                                &w, &h, &channels, 3);
    Image image;
    if (!data) {
        ADD_FAILURE() << "not a PNG: " << stbi_failure_reason();
        return image;
    }
    image.w = w, image.h = h;
    for (int i = 0; i < w * h; ++i) image.pixels.push_back({data[3 * i], data[3 * i + 1], data[3 * i + 2]});
    stbi_image_free(data);
    return image;
}

// Decodes every "data:image/png;base64," URI of `html`.
std::vector<std::string> data_uris(const std::string& html) {
    const std::string prefix = "data:image/png;base64,";
    const std::string digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::vector<std::string> out;
    for (size_t at = html.find(prefix); at != std::string::npos; at = html.find(prefix, at + 1)) {
        std::string bytes;
        uint32_t bits = 0;
        int n = 0;
        for (size_t i = at + prefix.size(); i < html.size() && digits.find(html[i]) != std::string::npos; ++i) {
            bits = bits << 6 | uint32_t(digits.find(html[i]));
            if ((n += 6) >= 8) bytes += char(bits >> (n -= 8) & 0xff);
        }
        out.push_back(bytes);
    }
    return out;
}

// The files of `dir` but the database's.
std::set<std::string> files_in(const std::string& dir) {
    std::set<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind("sessions.db", 0) != 0) names.insert(name);
    }
    return names;
}

// Six runs: h2o and snapkv at budgets 8 and 16, the full cache, and an h2o run that never
// finished; the comparison "sweep" holds the middle four. Model X has head-role scores of two
// probe sets (the newer is reported), model Y none.
class Report : public ::testing::Test {
protected:
    void SetUp() override {
        dir = test::scratch_dir("report/" + std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
        db_path = dir + "/sessions.db";
        {
            SessionWriter writer(db_path);
            for (const RunSpec& spec : {RunSpec{"h2o", "8", kModelX}, RunSpec{"h2o", "16", kModelX},
                                        RunSpec{"snapkv", "8", kModelX}, RunSpec{"snapkv", "16", kModelY},
                                        RunSpec{"full", "-", kModelX}, RunSpec{"h2o", "12", kModelX, false}})
                ids.push_back(store_run(writer, spec));
        }
        db = open_session_db(db_path, SessionAccess::write);
        store_comparison(*db, "sweep", {ids[1], ids[2], ids[3], ids[4]});
        sql::Statement add = db->prepare("INSERT INTO head_roles VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", "test");
        for (int64_t layer = 0; layer < 3; ++layer)
            for (int64_t head = 0; head < 4; ++head) {
                if (layer == 2 && head == 3) continue; // a head without a score
                for (const char* role : {"retrieval", "sink"})
                    add.bind_text(1, kModelX).bind_text(2, "probes-v2").bind_int(3, layer).bind_int(4, head)
                        .bind_text(5, role).bind_real(6, double(layer * 4 + head)).bind_text(7, "2025-02-01")
                        .execute();
            }
        add.bind_text(1, kModelX).bind_text(2, "probes-v1").bind_int(3, 0).bind_int(4, 0).bind_text(5, "stale")
            .bind_real(6, 1).bind_text(7, "2025-01-01").execute();
    }

    std::string dir, db_path;
    std::vector<int64_t> ids;
    std::unique_ptr<sql::Connection> db;
};

TEST_F(Report, WritesMarkdownHtmlAndPngsThatDecodeAndShowTheData) {
    ReportOptions options;
    options.comparison = "sweep";
    std::vector<int64_t> runs{ids[0], ids[5]};
    for (int64_t id : comparison_runs(*db, "sweep")) runs.push_back(id);
    write_report(*db, runs, options, dir + "/appendix.md");

    const std::string hash = "aaaaaaaa";
    std::vector<std::string> pngs{"appendix-fidelity-kl.png", "appendix-fidelity-agreement.png",
                                  "appendix-kv-bytes.png", "appendix-head-roles-" + hash + "-retrieval.png",
                                  "appendix-head-roles-" + hash + "-sink.png"};
    for (size_t i : {0, 5, 1, 2, 3}) pngs.push_back("appendix-raster-run" + std::to_string(ids[i]) + ".png");
    std::set<std::string> expected(pngs.begin(), pngs.end());
    expected.insert({"appendix.md", "appendix.html"});
    EXPECT_EQ(files_in(dir), expected); // no raster for the full cache, no stale role, no temporary file

    std::set<std::string> png_bytes;
    for (const std::string& name : pngs) {
        SCOPED_TRACE(name);
        const std::string bytes = read_file(dir + "/" + name);
        png_bytes.insert(bytes);
        const Image image = decode_png(bytes);
        EXPECT_EQ(image.w, plot::kChartWidth);
        EXPECT_GT(image.h, plot::kPlotArea.y + plot::kPlotArea.h + 40);
        std::set<std::tuple<int, int, int>> colours;
        for (const Rgb& p : image.pixels) colours.insert({p.r, p.g, p.b});
        EXPECT_GT(colours.size(), 20u); // anti-aliased text, lines, cells
    }

    const std::string md = read_file(dir + "/appendix.md");
    for (const std::string& name : pngs) EXPECT_NE(md.find("](" + name + ")"), std::string::npos) << name;
    EXPECT_NE(md.find("| " + std::to_string(ids[0]) + " | h2o | 8 | ok | 24 | 75.0% | 0.1250 | 87.5% |"),
              std::string::npos) << md;
    EXPECT_NE(md.find("| " + std::to_string(ids[5]) + " | h2o | 12 | unfinished | 24 | - |"), std::string::npos);
    EXPECT_NE(md.find("a \\| pipe, &lt;html&gt; &"), std::string::npos); // a prompt's '|' does not break the table,
                                                                // its "<html>" is text
    EXPECT_NE(md.find("Comparison 'sweep'"), std::string::npos);
    EXPECT_NE(md.find("Run " + std::to_string(ids[4]) + " evicted nothing at layer 0, KV head 0."), std::string::npos);
    EXPECT_NE(md.find("No head-role scores stored for /models/bbbb.gguf."), std::string::npos);

    const std::string html = read_file(dir + "/appendix.html");
    EXPECT_EQ(html.find("<html>"), std::string::npos); // escaped prompt text
    EXPECT_NE(html.find("&lt;html&gt; &amp; &quot;quotes&quot;"), std::string::npos);
    const std::vector<std::string> inlined = data_uris(html);
    EXPECT_EQ(std::set<std::string>(inlined.begin(), inlined.end()), png_bytes);
    EXPECT_EQ(inlined.size(), pngs.size());
}

TEST_F(Report, LinesArePlottedInEachRunsAndMethodsColour) {
    write_report(*db, ids, {}, dir + "/r");
    const plot::Rect area = plot::kPlotArea;
    const Image kl = decode_png(read_file(dir + "/r-fidelity-kl.png"));
    const Image agreement = decode_png(read_file(dir + "/r-fidelity-agreement.png"));
    for (size_t method : {0, 1}) { // h2o, snapkv (the full cache has no budget, the unfinished run no summary)
        EXPECT_GT(kl.count(plot::category_colour(method), area), 100) << method;
        EXPECT_GT(agreement.count(plot::category_colour(method), area), 200) << method;
    }
    EXPECT_EQ(kl.count(plot::category_colour(2), area), 0);
    const Image kv = decode_png(read_file(dir + "/r-kv-bytes.png"));
    for (size_t run = 0; run < ids.size(); ++run) EXPECT_GT(kv.count(plot::category_colour(run), area), 100) << run;
}

TEST_F(Report, RasterCellsAreTheDecisions) {
    const StoredRun run = load_run(*db, ids[0]); // h2o, budget 8: from step 1 on, one eviction a step
    const EvictionRaster r = eviction_raster(*db, run, 0, 0);
    ASSERT_EQ(r.n_steps, kSteps);
    ASSERT_EQ(r.n_positions, kPrompt + kSteps - 1);
    // Layer 0 / head 0 loses its oldest non-sink position at each step: position p at step p - 1.
    const std::vector<std::tuple<int64_t, int64_t, RasterCell>> cells{
        {1, 2, RasterCell::evicted_now},     {2, 2, RasterCell::evicted_earlier}, {0, 2, RasterCell::kept},
        {23, 0, RasterCell::kept},           {23, 1, RasterCell::kept},           {10, 11, RasterCell::evicted_now},
        {10, 12, RasterCell::kept},          {3, 11, RasterCell::not_generated},  {23, 30, RasterCell::kept},
        {22, 30, RasterCell::not_generated}, {23, 24, RasterCell::evicted_now}};
    for (const auto& [step, pos, cell] : cells) EXPECT_EQ(r.at(step, pos), cell) << step << ", " << pos;
    // Layer 1 / head 1 loses the position before the newest instead.
    const EvictionRaster other = eviction_raster(*db, run, 1, 1);
    EXPECT_EQ(other.at(1, 7), RasterCell::evicted_now);
    EXPECT_EQ(other.at(5, 2), RasterCell::kept);
    EXPECT_FALSE(eviction_raster(*db, run, 3, 0).has_decisions);

    // The PNG shows the same cells.
    ReportOptions options;
    write_report(*db, {ids[0]}, options, dir + "/raster.md");
    const Image png = decode_png(read_file(dir + "/raster-raster-run" + std::to_string(ids[0]) + ".png"));
    for (const auto& [step, pos, cell] : cells)
        EXPECT_EQ(png.centre(plot::grid_cell(r.n_steps, r.n_positions, step, pos)), raster_cell_colour(cell))
            << step << ", " << pos;
    options.layer = options.head = 1;
    write_report(*db, {ids[0]}, options, dir + "/raster.md");
    const Image png11 = decode_png(read_file(dir + "/raster-raster-run" + std::to_string(ids[0]) + ".png"));
    const auto pixel11 = [&](int64_t step, int64_t pos) {
        return png11.centre(plot::grid_cell(r.n_steps, r.n_positions, step, pos));
    };
    EXPECT_EQ(pixel11(1, 7), raster_cell_colour(RasterCell::evicted_now));
    EXPECT_EQ(pixel11(1, 2), raster_cell_colour(RasterCell::kept));
}

TEST_F(Report, HeadRoleGridShowsTheNewestScores) {
    write_report(*db, {ids[0]}, {}, dir + "/roles.md");
    const Image png = decode_png(read_file(dir + "/roles-head-roles-aaaaaaaa-retrieval.png"));
    // Scores are layer * 4 + head over 3 layers x 4 query heads, (2, 3) missing: 0 to 10.
    EXPECT_EQ(png.centre(plot::grid_cell(4, 3, 0, 0)), plot::viridis(0));
    EXPECT_EQ(png.centre(plot::grid_cell(4, 3, 2, 2)), plot::viridis(1));
    EXPECT_EQ(png.centre(plot::grid_cell(4, 3, 1, 1)), plot::viridis(0.5));
    EXPECT_EQ(png.centre(plot::grid_cell(4, 3, 3, 2)), plot::kNoData);
    EXPECT_FALSE(fs::exists(dir + "/roles-head-roles-aaaaaaaa-stale.png"));
}

TEST_F(Report, ErrorsNameWhatAndWhereAndLeaveNoFiles) {
    const std::set<std::string> before = files_in(dir);
    expect_error([&] { write_report(*db, {ids[0], 99}, {}, dir + "/r.md"); }, {db_path, "run 99", "no such run"});
    expect_error([&] { write_report(*db, {}, {}, dir + "/r.md"); }, {db_path, "no runs"});
    expect_error([&] { write_report(*db, {ids[0]}, {}, dir + "/no/such/folder/r.md"); },
                 {dir + "/no/such/folder/r-", "writing the report", "cannot be written"});
    // The last file cannot be written: the PNGs and the Markdown written before it go too.
    fs::create_directory(dir + "/r.html.partial");
    expect_error([&] { write_report(*db, {ids[0]}, {}, dir + "/r.md"); }, {dir + "/r.html", "cannot be written"});
    fs::remove(dir + "/r.html.partial");
    EXPECT_EQ(files_in(dir), before);
}

TEST(ReportPlot, FontAndCanvasBasics) {
    expect_error([] { plot::Font font("/no/such/font.ttf"); }, {"/no/such/font.ttf", "fonts-dejavu-core"});
    const plot::Font font;
    plot::Canvas c(60, 20, {255, 255, 255});
    c.text(font, "Hi", 2, 2, 13, {0, 0, 0});
    int inked = 0;
    for (int y = 0; y < 20; ++y)
        for (int x = 0; x < 60; ++x) inked += c.at(x, y) != Rgb{255, 255, 255};
    EXPECT_GT(inked, 10);
    EXPECT_EQ(c.at(50, 10), (Rgb{255, 255, 255})); // "Hi" is narrower than 48 pixels
    const Image back = decode_png(c.png());
    EXPECT_EQ(back.w, 60);
    EXPECT_EQ(back.pixels.size(), 1200u);
    EXPECT_EQ(back.at(3, 10), c.at(3, 10));
}

} // namespace
} // namespace kvscope
