// [SECTION] the document: sections, tables and figures, as Markdown and as HTML
// [SECTION] the tables: summary and set-up per run
// [SECTION] the plots: fidelity vs budget, KV bytes vs step, eviction rasters, head roles
// [SECTION] writing the files: all or none
#include "sessions/report.h"

#include "core/error.h"
#include "core/method_spec.h"
#include "core/utf8.h"
#include "sessions/base64.h"
#include "sessions/build_version.h"
#include "sessions/plot.h"
#include "sessions/queries.h"
#include "sessions/sqlite.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

namespace kvscope {

using plot::Rgb;

namespace {

// printf into a string, for short text: names and numbers (longer text is appended to it).
std::string format(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* f, ...) {
    char buf[256];
    va_list args;
    va_start(args, f);
    std::vsnprintf(buf, sizeof buf, f, args);
    va_end(args);
    return buf;
}

// ---- [SECTION] the document -------------------------------------------------------------

struct Table {
    std::vector<std::string> header;
    std::vector<std::vector<std::string>> rows;
};

struct Figure {
    std::string file; // beside the Markdown file
    std::string caption;
    std::string png;
};

struct Section {
    std::string heading;
    std::vector<std::string> notes;
    std::vector<Table> tables;
    std::vector<Figure> figures;
};

struct Document {
    std::string title;
    std::vector<std::string> intro;
    std::vector<Section> sections;
};

// Table cells hold text from prompts and method specs: one line, no table breaks, no HTML tags.
std::string markdown_cell(const std::string& text) {
    std::string out;
    for (char c : text) {
        if (c == '<' || c == '>') {
            out += c == '<' ? "&lt;" : "&gt;";
            continue;
        }
        if (c == '|') out += '\\';
        out += c == '\n' || c == '\r' || c == '\t' ? ' ' : c;
    }
    return out;
}

std::string markdown(const Document& doc) {
    std::string md = "# " + doc.title + "\n\n";
    for (const std::string& line : doc.intro) md += line + "\n\n";
    for (const Section& s : doc.sections) {
        md += "## " + s.heading + "\n\n";
        for (const std::string& note : s.notes) md += note + "\n\n";
        for (const Table& t : s.tables) {
            const auto row = [](const std::vector<std::string>& cells) {
                std::string line = "|";
                for (const std::string& c : cells) line += " " + markdown_cell(c) + " |";
                return line + "\n";
            };
            md += row(t.header) + row(std::vector<std::string>(t.header.size(), "---"));
            for (const auto& r : t.rows) md += row(r);
            md += "\n";
        }
        for (const Figure& f : s.figures) md += "![" + f.caption + "](" + f.file + ")\n\n*" + f.caption + "*\n\n";
    }
    return md;
}

std::string html_escape(const std::string& text) {
    std::string out;
    for (char c : text) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        default: out += c;
        }
    }
    return out;
}

std::string html(const Document& doc) {
    std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" +
                    html_escape(doc.title) +
                    "</title>\n<style>\n"
                    "body { font-family: 'DejaVu Sans', sans-serif; max-width: 980px; margin: 2em auto; "
                    "color: #282828; }\n"
                    "table { border-collapse: collapse; margin: 1em 0; font-size: 90%; }\n"
                    "th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }\n"
                    "figure { margin: 1.5em 0; } img { max-width: 100%; }\n"
                    "</style>\n</head>\n<body>\n<h1>" +
                    html_escape(doc.title) + "</h1>\n";
    for (const std::string& line : doc.intro) h += "<p>" + html_escape(line) + "</p>\n";
    for (const Section& s : doc.sections) {
        h += "<h2>" + html_escape(s.heading) + "</h2>\n";
        for (const std::string& note : s.notes) h += "<p>" + html_escape(note) + "</p>\n";
        for (const Table& t : s.tables) {
            h += "<table>\n<tr>";
            for (const std::string& c : t.header) h += "<th>" + html_escape(c) + "</th>";
            h += "</tr>\n";
            for (const auto& r : t.rows) {
                h += "<tr>";
                for (const std::string& c : r) h += "<td>" + html_escape(c) + "</td>";
                h += "</tr>\n";
            }
            h += "</table>\n";
        }
        for (const Figure& f : s.figures)
            h += "<figure><img alt=\"" + html_escape(f.caption) + "\" src=\"data:image/png;base64," + base64_encode(f.png) +
                 "\"><figcaption>" + html_escape(f.caption) + "</figcaption></figure>\n";
    }
    return h + "</body>\n</html>\n";
}

// ---- [SECTION] the tables -----------------------------------------------------------------

std::string percent(double fraction) { return format("%.1f%%", 100 * fraction); }
std::string mib(int64_t bytes) { return format("%.2f MiB", double(bytes) / 1048576.0); }

bool measured(const StoredRun& run) { return run.summary && run.summary->has_reference; }

const std::vector<std::string> kSummaryHeader{"run",   "method", "budget",           "status",       "steps", "match",
                                              "mean KL", "top-1", "ppl (full cache)", "KV (of full)", "tok/s", "policy"};

// The values `kvscope run` prints at the end, "-" for what the run did not measure.
std::vector<std::string> summary_row(const StoredRun& run) {
    std::vector<std::string> row{std::to_string(run.id), run.record.method, run.record.budget, run.status,
                                 std::to_string(run.stored_steps)};
    if (!run.summary) { // unfinished
        row.resize(kSummaryHeader.size(), "-");
        return row;
    }
    const RunSummary& s = *run.summary;
    const bool ref = s.has_reference;
    row.push_back(ref && s.token_match >= 0 ? percent(s.token_match) : "-");
    row.push_back(ref ? format("%.4f", s.mean_kl) : "-");
    row.push_back(ref ? percent(s.top1) : "-");
    row.push_back(ref ? format("%.3f (%.3f)", s.ppl_method, s.ppl_reference) : "-");
    const bool of_full = ref && s.reference_kv_bytes > 0;
    row.push_back(mib(s.kv_bytes) +
                  (of_full ? " (" + percent(double(s.kv_bytes) / double(s.reference_kv_bytes)) + ")" : ""));
    row.push_back(format("%.1f", s.decode_tokens_per_second()));
    row.push_back(percent(s.policy_seconds / std::max(1e-9, s.prefill_seconds + s.decode_seconds)));
    return row;
}

Table summary_table(const std::vector<StoredRun>& runs) {
    Table t{kSummaryHeader, {}};
    for (const StoredRun& run : runs) t.rows.push_back(summary_row(run));
    return t;
}

// The first `width` bytes of `text` (whole UTF-8 characters) on one line.
std::string one_line(const std::string& text, size_t width) {
    std::string s = text.substr(0, width);
    s.resize(complete_utf8_prefix(s));
    std::replace_if(s.begin(), s.end(), [](char c) { return c == '\n' || c == '\r' || c == '\t'; }, ' ');
    return text.size() > width ? s + "..." : s;
}

Table setup_table(const std::vector<StoredRun>& runs) {
    Table t{{"run", "model", "model SHA-256", "device", "seed", "started (UTC)", "prompt"}, {}};
    for (const StoredRun& run : runs) {
        const RunRecord& r = run.record;
        t.rows.push_back({std::to_string(run.id), std::filesystem::path(r.model_path).filename().string(),
                          r.model_hash.substr(0, 19), r.device + ", " + r.dtype, std::to_string(r.seed),
                          run.started_at.substr(0, 19),
                          format("%zu tokens: ", r.prompt_tokens.size()) + one_line(r.prompt_text, 60)});
    }
    return t;
}

// ---- [SECTION] the plots ------------------------------------------------------------------

// "run 3: h2o, budget 64"; the full cache has no budget.
std::string run_label(const StoredRun& run) {
    return format("run %lld: ", (long long)run.id) + run.record.method +
           (run.record.budget == "-" ? "" : ", budget " + run.record.budget);
}

// The report's plots and the names of their files.
struct Plotter {
    const plot::Font& font;
    std::string stem; // file names: <stem>-<plot>.png

    Figure figure(const std::string& name, const std::string& caption, const plot::Canvas& canvas) const {
        return {stem + "-" + name + ".png", caption, canvas.png()};
    }
};

// -- fidelity vs budget: one line per method, one point per budget

struct Fidelity {
    double kl = 0, top1 = 0, match = 0;
    int n = 0, n_match = 0;
};

// The finished runs with a reference and a budget, by method and budget, runs of the same
// method and budget added up.
struct FidelityCells {
    std::vector<std::string> methods;                        // in order of appearance: one colour each
    std::map<std::string, std::map<double, Fidelity>> cells; // method -> budget -> sums
    bool percent = true; // every budget a fraction: budgets in percent of the context, else in tokens
};

std::optional<Budget> parsed_budget(const std::string& text) {
    try {
        return Budget::parse(text);
    } catch (const Error&) { // "-": the full cache, which has no budget
        return std::nullopt;
    }
}

FidelityCells fidelity_cells(const std::vector<StoredRun>& runs) {
    FidelityCells f;
    std::vector<std::pair<const StoredRun*, Budget>> plotted;
    for (const StoredRun& run : runs)
        if (const auto b = parsed_budget(run.record.budget); b && measured(run)) {
            plotted.emplace_back(&run, *b);
            f.percent &= b->fraction;
        }
    for (const auto& [run, budget] : plotted) {
        const RunSummary& r = *run->summary;
        const std::string& method = run->record.method;
        if (std::find(f.methods.begin(), f.methods.end(), method) == f.methods.end()) f.methods.push_back(method);
        const double x = f.percent ? 100 * budget.value : double(budget.tokens(r.final_context));
        Fidelity& cell = f.cells[method][x];
        cell.kl += r.mean_kl, cell.top1 += r.top1, ++cell.n;
        if (r.token_match >= 0) cell.match += r.token_match, ++cell.n_match;
    }
    return f;
}

const Rgb kNoteGrey{120, 120, 120}; // legend entries that explain a line style, not a method

Section fidelity_section(const std::vector<StoredRun>& runs, const Plotter& p) {
    Section s{"Fidelity vs budget", {}, {}, {}};
    const FidelityCells f = fidelity_cells(runs);
    if (f.methods.empty()) {
        s.notes.push_back("No finished run with a reference and a budget: nothing to plot.");
        return s;
    }
    plot::LineChart kl, agree;
    kl.title = "Mean KL(full cache || method) vs budget";
    kl.y.label = "mean KL per step (nats)";
    agree.title = "Agreement with the full cache vs budget";
    agree.y.label = "agreement (%)";
    agree.y.min = 0.0, agree.y.max = 100.0;
    std::set<double> budgets;
    double kl_lo = INFINITY, kl_hi = 0;
    bool any_match = false;
    for (size_t m = 0; m < f.methods.size(); ++m) {
        plot::Series line{f.methods[m], plot::category_colour(m), {}, {}, false, true, true};
        plot::Series top1 = line, match = line;
        match.dashed = true, match.in_legend = false;
        for (const auto& [x, cell] : f.cells.at(f.methods[m])) {
            line.x.push_back(x), top1.x.push_back(x), match.x.push_back(x);
            line.y.push_back(cell.kl / cell.n);
            top1.y.push_back(100 * cell.top1 / cell.n);
            match.y.push_back(cell.n_match ? 100 * cell.match / cell.n_match : NAN);
            kl_lo = std::min(kl_lo, line.y.back()), kl_hi = std::max(kl_hi, line.y.back());
            budgets.insert(x);
            any_match |= cell.n_match > 0;
        }
        kl.series.push_back(line);
        agree.series.push_back(top1), agree.series.push_back(match);
    }
    // Log axes where the values span enough for it: budgets in doublings, KL over decades.
    // A sweep's budgets are few: ticks at each.
    kl.x.label = agree.x.label = f.percent ? "budget (% of the context)" : "budget (tokens)";
    kl.x.log = agree.x.log = *budgets.rbegin() >= 4 * *budgets.begin();
    if (budgets.size() <= 10) kl.x.ticks = agree.x.ticks = std::vector<double>(budgets.begin(), budgets.end());
    kl.y.log = kl_lo > 0 && kl_hi >= 10 * kl_lo;
    if (!kl.y.log) kl.y.min = 0.0;
    if (any_match) // with a forced reference (teacher-forced tasks) token match is not measured
        agree.notes = {{"top-1 agreement", kNoteGrey, false, false}, {"token match", kNoteGrey, true, false}};
    s.figures.push_back(p.figure("fidelity-kl",
                                 "Mean KL divergence from the full cache per step, per method and budget (runs of the "
                                 "same method and budget averaged).",
                                 plot::draw_line_chart(kl, p.font)));
    s.figures.push_back(p.figure("fidelity-agreement",
                                 any_match ? "Top-1 agreement (solid) and greedy token match (dashed) with the full "
                                             "cache, per method and budget."
                                           : "Top-1 agreement with the full cache, per method and budget (token match "
                                             "not measured: the runs were teacher-forced).",
                                 plot::draw_line_chart(agree, p.font)));
    return s;
}

// -- KV bytes vs step: one line per run

Section kv_bytes_section(sql::Connection& db, const std::vector<StoredRun>& runs, const Plotter& p) {
    Section s{"KV cache vs step", {}, {}, {}};
    plot::LineChart chart;
    chart.title = "KV cache held after each step";
    chart.x.label = "decode step";
    chart.y.label = "KV cache (MiB)";
    chart.y.min = 0.0;
    for (size_t i = 0; i < runs.size(); ++i) {
        plot::Series line{run_label(runs[i]), plot::category_colour(i), {}, {}, false, false, true};
        for (const StoredStep& step : load_steps(db, runs[i].id)) {
            line.x.push_back(double(step.event.step));
            line.y.push_back(double(step.event.kv_bytes) / 1048576.0);
        }
        if (!line.x.empty()) chart.series.push_back(std::move(line));
    }
    if (chart.series.empty())
        s.notes.push_back("No stored steps: nothing to plot.");
    else
        s.figures.push_back(p.figure("kv-bytes", "KV cache bytes allocated after each decode step, one line per run.",
                                     plot::draw_line_chart(chart, p.font)));
    return s;
}

// -- eviction rasters

Figure raster_figure(const EvictionRaster& r, const StoredRun& run, const ReportOptions& o, const Plotter& p) {
    plot::GridChart chart;
    chart.title = run_label(run) + format(", layer %lld, KV head %lld", (long long)o.layer, (long long)o.head);
    chart.x.label = "decode step";
    chart.y.label = "token position";
    chart.cols = r.n_steps;
    chart.rows = r.n_positions;
    // A pixel that folds several steps shows any eviction among them, so none disappears.
    chart.colour = [&r](int64_t c0, int64_t c1, int64_t r0, int64_t r1) {
        for (int64_t pos = r0; pos < r1; ++pos)
            if (r.evicted_at[size_t(pos)] >= c0 && r.evicted_at[size_t(pos)] < c1)
                return raster_cell_colour(RasterCell::evicted_now);
        return raster_cell_colour(r.at(c0, r0));
    };
    for (const auto& [cell, name] : {std::pair{RasterCell::kept, "kept"},
                                     {RasterCell::evicted_now, "evicted at this step"},
                                     {RasterCell::evicted_earlier, "evicted earlier"},
                                     {RasterCell::not_generated, "not yet generated"}})
        chart.legend.push_back({name, raster_cell_colour(cell), false, true});
    return p.figure(format("raster-run%lld", (long long)run.id),
                    format("Run %lld: what layer %lld, KV head %lld held at each decode step (step 0: the prefill).",
                           (long long)run.id, (long long)o.layer, (long long)o.head),
                    plot::draw_grid_chart(chart, p.font));
}

Section raster_section(sql::Connection& db, const std::vector<StoredRun>& runs, const ReportOptions& o,
                       const Plotter& p) {
    Section s{format("Eviction raster, layer %lld, KV head %lld", (long long)o.layer, (long long)o.head), {}, {}, {}};
    for (const StoredRun& run : runs) {
        const EvictionRaster r = eviction_raster(db, run, o.layer, o.head);
        if (r.has_decisions)
            s.figures.push_back(raster_figure(r, run, o, p));
        else
            s.notes.push_back(format("Run %lld evicted nothing at layer %lld, KV head %lld.", (long long)run.id,
                                     (long long)o.layer, (long long)o.head));
    }
    return s;
}

// -- head roles: the newest probe set's scores of each model in the report

struct RoleScores {
    std::string probes;
    std::map<std::string, std::map<std::pair<int64_t, int64_t>, double>> by_role; // role -> (layer, head) -> score
};

RoleScores load_head_roles(sql::Connection& db, const std::string& model_hash) {
    sql::Statement q = db.prepare(
        "SELECT probes, layer, head, role, score FROM head_roles WHERE model_hash = ?1 AND layer >= 0 AND head >= 0 "
        "AND probes = (SELECT probes FROM head_roles WHERE model_hash = ?1 ORDER BY created_at DESC, probes LIMIT 1)",
        "reading head roles");
    q.bind_text(1, model_hash);
    RoleScores scores;
    while (q.step()) {
        scores.probes = q.text(0);
        scores.by_role[q.text(3)][{q.int64(1), q.int64(2)}] = q.real(4);
    }
    return scores;
}

std::string file_safe(const std::string& name) {
    std::string out;
    for (char c : name) out += std::isalnum(uint8_t(c)) || c == '-' || c == '_' ? c : '_';
    return out;
}

Figure role_figure(const std::string& role, const std::map<std::pair<int64_t, int64_t>, double>& scores,
                   const StoredRun& run, const std::string& probes, const Plotter& p) {
    int64_t layers = 0, heads = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (const auto& [at, score] : scores) {
        layers = std::max(layers, at.first + 1), heads = std::max(heads, at.second + 1);
        lo = std::min(lo, score), hi = std::max(hi, score);
    }
    plot::GridChart chart;
    const std::string model = std::filesystem::path(run.record.model_path).filename().string();
    chart.title = "Head role: " + role + ", " + model;
    chart.x.label = "query head";
    chart.y.label = "layer";
    chart.cols = heads;
    chart.rows = layers;
    chart.colour = [&scores, lo, hi](int64_t c0, int64_t, int64_t r0, int64_t) {
        const auto it = scores.find({r0, c0});
        return it == scores.end() ? plot::kNoData : plot::viridis(hi > lo ? (it->second - lo) / (hi - lo) : 1);
    };
    chart.bar = plot::ColourBar{role + " score", lo, hi};
    chart.legend = {{"no score", plot::kNoData, false, true}};
    const std::string hash = run.record.model_hash.substr(run.record.model_hash.find(':') + 1, 8);
    return p.figure("head-roles-" + file_safe(hash + "-" + role),
                    "Head role '" + role + "' of every layer and query head of " + model + " (probes: " + probes + ").",
                    plot::draw_grid_chart(chart, p.font));
}

Section head_role_section(sql::Connection& db, const std::vector<StoredRun>& runs, const Plotter& p) {
    Section s{"Head roles", {}, {}, {}};
    std::vector<std::string> seen;
    for (const StoredRun& run : runs) {
        const std::string& hash = run.record.model_hash;
        if (std::find(seen.begin(), seen.end(), hash) != seen.end()) continue;
        seen.push_back(hash);
        const RoleScores scores = load_head_roles(db, hash);
        if (scores.by_role.empty())
            s.notes.push_back("No head-role scores stored for " + run.record.model_path + ".");
        for (const auto& [role, by_head] : scores.by_role)
            s.figures.push_back(role_figure(role, by_head, run, scores.probes, p));
    }
    return s;
}

// ---- [SECTION] writing the files ----------------------------------------------------------

// <stem>.md, .html and -*.png: PATH without .md or .html; PATH/report for a folder.
std::string report_stem(const std::string& out_path) {
    if (std::filesystem::is_directory(out_path)) return (std::filesystem::path(out_path) / "report").string();
    for (const char* ext : {".md", ".html"}) {
        const std::string e = ext;
        if (out_path.size() > e.size() && out_path.compare(out_path.size() - e.size(), e.size(), e) == 0)
            return out_path.substr(0, out_path.size() - e.size());
    }
    return out_path;
}

// `bytes` into `path`, removed again when they do not all go in; errors name `final_path`.
void write_whole_file(const std::string& path, const std::string& bytes, const std::string& final_path) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    const auto fail = [&](int error) {
        return Error(final_path, "writing the report", std::string("cannot be written: ") + std::strerror(error));
    };
    if (!f) throw fail(errno);
    const bool written = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    int error = errno;
    const bool closed = std::fclose(f) == 0; // where a full disk may show first
    if (written && closed) return;
    if (written) error = errno;
    std::remove(path.c_str());
    throw fail(error);
}

// Every file under a temporary name first, then each renamed: on any failure what was
// written is removed and no report file appears.
void write_all_or_none(const std::vector<std::pair<std::string, std::string>>& files) {
    std::vector<std::string> written; // temporary names, each replaced by its final name once renamed
    try {
        for (const auto& [path, bytes] : files) {
            write_whole_file(path + ".partial", bytes, path);
            written.push_back(path + ".partial");
        }
        for (size_t i = 0; i < files.size(); ++i) {
            if (std::rename(written[i].c_str(), files[i].first.c_str()) != 0)
                throw Error(files[i].first, "writing the report", std::strerror(errno));
            written[i] = files[i].first;
        }
    } catch (...) {
        for (const std::string& path : written) std::remove(path.c_str());
        throw;
    }
}

// Throws Error naming the database for an unknown run, before anything is drawn.
std::vector<StoredRun> load_runs(sql::Connection& db, const std::vector<int64_t>& ids) {
    if (ids.empty()) throw Error(db.path(), "report", "no runs to report");
    std::vector<StoredRun> runs;
    for (int64_t id : ids) runs.push_back(load_run(db, id));
    return runs;
}

std::string run_list(const std::vector<StoredRun>& runs) {
    std::string list;
    for (const StoredRun& run : runs) list += (list.empty() ? "" : ", ") + std::to_string(run.id);
    return list;
}

} // namespace

Rgb raster_cell_colour(RasterCell cell) {
    switch (cell) {
    case RasterCell::kept: return {59, 111, 182};
    case RasterCell::evicted_now: return {232, 89, 12};
    case RasterCell::evicted_earlier: return {200, 200, 200};
    case RasterCell::not_generated: break;
    }
    return plot::kNoData;
}

RasterCell EvictionRaster::at(int64_t step, int64_t position) const {
    if (position >= n_prompt + step) return RasterCell::not_generated;
    const int64_t evicted = evicted_at[size_t(position)];
    if (evicted == step) return RasterCell::evicted_now;
    return evicted >= 0 && evicted < step ? RasterCell::evicted_earlier : RasterCell::kept;
}

// Only the evicted lists are needed: a position is held from its step until the step that
// evicts it (the kept lists say the same from the other side).
EvictionRaster eviction_raster(sql::Connection& db, const StoredRun& run, int64_t layer, int64_t head) {
    EvictionRaster r;
    r.n_prompt = int64_t(run.record.prompt_tokens.size());
    r.n_steps = run.stored_steps;
    r.n_positions = std::max<int64_t>(1, r.n_prompt + r.n_steps - 1);
    r.evicted_at.assign(size_t(r.n_positions), -1);
    for (int64_t step : steps_with_decisions(db, run.id))
        for (const Decision& d : load_decisions(db, run.id, step)) {
            if (d.layer != layer || d.head != head) continue;
            r.has_decisions = true;
            for (int32_t pos : d.evicted)
                if (pos < r.n_positions && r.evicted_at[size_t(pos)] < 0) r.evicted_at[size_t(pos)] = step;
        }
    return r;
}

void write_report(sql::Connection& db, const std::vector<int64_t>& ids, const ReportOptions& options,
                  const std::string& out_path) {
    const std::vector<StoredRun> runs = load_runs(db, ids);
    const std::string stem = report_stem(out_path);
    const plot::Font font;
    const Plotter plotter{font, std::filesystem::path(stem).filename().string()};

    Document doc{"KVScope report", {}, {}};
    doc.intro.push_back((options.comparison.empty() ? "" : "Comparison '" + options.comparison + "': ") + "runs " +
                        run_list(runs) + " of " + db.path() + ", reported by KVScope " + kvscope_build_version() + ".");
    doc.sections.push_back({"Runs",
                            {"Match: greedy tokens equal to the full cache's. Mean KL and top-1: teacher-forced on the "
                             "full cache's tokens. KV: allocated at the end, and its share of the full cache's. "
                             "Policy: the method's share of the run's time."},
                            {summary_table(runs), setup_table(runs)},
                            {}});
    doc.sections.push_back(fidelity_section(runs, plotter));
    doc.sections.push_back(kv_bytes_section(db, runs, plotter));
    doc.sections.push_back(raster_section(db, runs, options, plotter));
    doc.sections.push_back(head_role_section(db, runs, plotter));

    const std::filesystem::path folder = std::filesystem::path(stem).parent_path();
    std::vector<std::pair<std::string, std::string>> files;
    for (const Section& s : doc.sections)
        for (const Figure& f : s.figures) files.emplace_back((folder / f.file).string(), f.png);
    files.emplace_back(stem + ".md", markdown(doc));
    files.emplace_back(stem + ".html", html(doc));
    write_all_or_none(files);
}

} // namespace kvscope
