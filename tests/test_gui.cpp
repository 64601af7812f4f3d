// The workbench under Xvfb: `kvscope gui --screenshot` runs its scripted scenario (load
// the default model, run SnapKV next to the reference from the run setup, export the
// stored run from the export dialog, open it again from the session browser, view it),
// and the test checks what came out: the run finished with evictions, it produced the
// same tokens as the same run from the command line, it is in the session database with
// those tokens, the dialog's export is the bytes `kvscope export` writes, the reopened run
// has the live run's tokens, reference KV bytes and attention rows, the screenshot shows
// the views (the eviction raster's kept colour, the token strip's mismatch colour) and each
// tab view's screenshot is its own, as is the export view's popped out into its own window,
// and the layout (with that view out) was saved in the ini file under $XDG_CONFIG_HOME;
// Ctrl+P and Esc open and close the command palette, the plain Right and Down arrows move
// the selection a step and a layer, Space pauses and resumes, "." steps once. Its tour then runs a
// second budget, analyzes every head, opens the best retrieval head's probe map, and shows
// each view alone: every view's picture is drawn and differs from every other's. Smaller
// scenarios: a bad model file, a plugin that fails to load and one that crashes in a hook
// end in the banner and the run's status while the workbench keeps drawing; a database
// that cannot be opened costs the record, not the run; a plugin reload waits for the run
// using it; the session browser deletes a run; Stop works during the reference.
#include <gtest/gtest.h>

#include <stb_image.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

const std::string kPrompt = "Write a short story about a lighthouse keeper who finds a message in a bottle.";
const int kSteps = 12, kWidth = 1280, kHeight = 800;

struct Result {
    int status = -1;
    std::string output; // stdout and stderr
};

Result Shell(const std::string& command) {
    Result r;
    FILE* pipe = popen((command + " 2>&1").c_str(), "r");
    if (!pipe) return r;
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) r.output.append(buf, n);
    const int status = pclose(pipe);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

bool OnPath(const std::string& program) { return Shell("command -v " + program).status == 0; }

// The rest of the line of `text` that starts with `label` and a space ("" when none does).
std::string LineAfter(const std::string& text, const std::string& label) {
    const size_t at = text.find("\n" + label + " ");
    if (at == std::string::npos) return "";
    return text.substr(at + label.size() + 2, text.find('\n', at + 1) - at - label.size() - 2);
}

// The numbers after `label` on its line of `text`.
std::vector<int> NumbersAfter(const std::string& text, const std::string& label) {
    std::vector<int> out;
    std::istringstream line(LineAfter(text, label));
    for (int v; line >> v;) out.push_back(v);
    return out;
}

// The token column of `kvscope run --steps`' table (step, token, ref, ...).
std::vector<int> CliTokens(const std::string& text) {
    std::vector<int> out;
    std::istringstream in(text);
    bool table = false;
    for (std::string line; std::getline(in, line);) {
        std::istringstream fields(line);
        std::string first;
        fields >> first;
        if (first == "step") table = true;
        else if (table && !first.empty() && std::isdigit(static_cast<unsigned char>(first[0]))) {
            int token = 0;
            fields >> token;
            out.push_back(token);
        } else if (table) break;
    }
    return out;
}

struct Image {
    int w = 0, h = 0;
    std::vector<unsigned char> rgba;
    int Count(unsigned r, unsigned g, unsigned b) const {
        int n = 0;
        for (size_t i = 0; i + 3 < rgba.size(); i += 4) n += rgba[i] == r && rgba[i + 1] == g && rgba[i + 2] == b;
        return n;
    }
    size_t Colours() const {
        std::set<unsigned> seen;
        for (size_t i = 0; i + 3 < rgba.size(); i += 4)
            seen.insert(unsigned(rgba[i]) << 16 | unsigned(rgba[i + 1]) << 8 | rgba[i + 2]);
        return seen.size();
    }
};

std::string ReadFile(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// `kvscope gui` under Xvfb at the test's size, with `args`.
Result Gui(const fs::path& scratch, const std::string& args, int timeout_s = 240) {
    return Shell("XDG_CONFIG_HOME=" + (scratch / "config").string() + " xvfb-run -a -s '-screen 0 " +
                 std::to_string(kWidth) + "x" + std::to_string(kHeight) + "x24' " KVSCOPE_EXE " gui --width " +
                 std::to_string(kWidth) + " --height " + std::to_string(kHeight) + " --timeout " +
                 std::to_string(timeout_s) + " " + args);
}

fs::path Scratch(const std::string& name) {
    const fs::path scratch = fs::path(KVSCOPE_BINARY_DIR) / "test-scratch" / name;
    fs::remove_all(scratch);
    fs::create_directories(scratch);
    return scratch;
}

Image LoadPng(const std::string& path) {
    Image img;
    int channels = 0;
    unsigned char* data = stbi_load(path.c_str(), &img.w, &img.h, &channels, 4);
    if (data) img.rgba.assign(data, data + size_t(img.w) * size_t(img.h) * 4);
    stbi_image_free(data);
    return img;
}

int ChangedPixels(const Image& a, const Image& b) {
    int n = 0;
    for (size_t i = 0; i + 3 < std::min(a.rgba.size(), b.rgba.size()); i += 4)
        n += a.rgba[i] != b.rgba[i] || a.rgba[i + 1] != b.rgba[i + 1] || a.rgba[i + 2] != b.rgba[i + 2];
    return n;
}

TEST(Gui, ScenarioRunsShowsAndMatchesTheCommandLine) {
    if (!OnPath("xvfb-run")) GTEST_SKIP() << "xvfb-run is missing (Debian xvfb and xauth; ./setup.sh installs them)";
    const fs::path scratch = Scratch("gui"), tour = scratch / "tour";
    fs::create_directories(tour);
    const std::string png = (scratch / "scenario.png").string(), db = (scratch / "gui.db").string();
    const std::string run = " --method snapkv --budget 16 -n " + std::to_string(kSteps), prompt = " '" + kPrompt + "'";

    const Result gui = Gui(scratch, run + " --prompt" + prompt + " --view-frames 30 --pause --db " + db + " --export " +
                                        (scratch / "gui-export.json").string() + " --screenshot " + png + " --tour " +
                                        tour.string(), /*timeout_s=*/540);
    ASSERT_EQ(gui.status, 0) << gui.output;
    EXPECT_NE(gui.output.find(": done,"), std::string::npos) << gui.output;
    EXPECT_EQ(gui.output.find(" 0 evictions"), std::string::npos) << "SnapKV at 16 slots must evict:\n" << gui.output;
    EXPECT_NE(gui.output.find("palette opened by Ctrl+P, closed by Esc"), std::string::npos) << gui.output;
    EXPECT_NE(gui.output.find("arrows moved the selection a step and a layer"), std::string::npos) << gui.output;
    EXPECT_NE(gui.output.find("stored as run 1 in " + db), std::string::npos) << gui.output;
    EXPECT_EQ(gui.output.find("banner:"), std::string::npos) << gui.output;
    // Space paused the run, "." took one step, Space resumed it.
    const std::vector<int> pause = NumbersAfter(gui.output, "pause: held at step");
    ASSERT_EQ(pause.size(), 1u) << gui.output;
    EXPECT_NE(gui.output.find("Step took it to " + std::to_string(pause[0] + 1) + ", resumed"), std::string::npos)
        << gui.output;
    EXPECT_NE(gui.output.find(" 7 head roles read back, probe map 512x512 of L"), std::string::npos)
        << gui.output;
    EXPECT_NE(gui.output.find(", 9 shots"), std::string::npos) << gui.output;

    // The same run from the command line gives the same tokens.
    const std::vector<int> gui_tokens = NumbersAfter(gui.output, "tokens");
    ASSERT_EQ(int(gui_tokens.size()), kSteps) << gui.output;
    const Result cli = Shell(KVSCOPE_EXE " run --chat --reference --steps --no-db" + run + " -p" + prompt);
    ASSERT_EQ(cli.status, 0) << cli.output;
    EXPECT_EQ(CliTokens(cli.output), gui_tokens) << cli.output << "\n---\n" << gui.output;

    // The database holds the run with those tokens, and it opened again with them.
    const Result stored = Shell(KVSCOPE_EXE " sessions show 1 --steps --db " + db);
    ASSERT_EQ(stored.status, 0) << stored.output;
    EXPECT_EQ(CliTokens(stored.output), gui_tokens) << stored.output;
    EXPECT_NE(stored.output.find("run 1 (ok)"), std::string::npos) << stored.output;
    EXPECT_EQ(NumbersAfter(gui.output, "opened tokens"), gui_tokens) << gui.output;
    // ... with the reference's KV bytes at each step, and the attention rows the live run's
    // heatmap held (every decode step's: the prefill, step 0, has no row).
    EXPECT_EQ(NumbersAfter(gui.output, "reference kv").size(), size_t(kSteps)) << gui.output;
    EXPECT_EQ(LineAfter(gui.output, "opened reference kv"), LineAfter(gui.output, "reference kv")) << gui.output;
    EXPECT_EQ(LineAfter(gui.output, "attention").rfind(std::to_string(kSteps - 1) + " steps (every 1)", 0), 0u)
        << gui.output;
    EXPECT_EQ(LineAfter(gui.output, "opened attention"), LineAfter(gui.output, "attention")) << gui.output;

    // The export dialog wrote what `kvscope export` writes of the same run.
    const std::string cli_export = (scratch / "cli-export.json").string();
    const Result exported = Shell(KVSCOPE_EXE " export 1 --format json --db " + db + " --out " + cli_export);
    ASSERT_EQ(exported.status, 0) << exported.output;
    const std::string gui_json = ReadFile(scratch / "gui-export.json");
    EXPECT_FALSE(gui_json.empty()) << gui.output;
    EXPECT_EQ(gui_json, ReadFile(cli_export));

    // The screenshot shows the views, not a blank window.
    const Image img = LoadPng(png);
    ASSERT_EQ(img.w, kWidth);
    ASSERT_EQ(img.h, kHeight);
    EXPECT_GT(img.Colours(), 100u) << "a blank or nearly blank frame";
    EXPECT_GT(img.Count(92, 200, 99), 10000) << "no eviction raster (kept keys, viridis 0.75)";
    EXPECT_GT(img.Count(213, 94, 0), 500) << "no token strip mismatch cells (the free-running run diverges)";

    // Each tab beside the workbench drew its view: not blank, and not the same picture as another.
    std::vector<std::vector<unsigned char>> pictures{img.rgba};
    // Then the export view popped out into its own window.
    for (const char* view : {"compare", "session-browser", "plugin-manager", "export", "export-window"}) {
        const Image shot = LoadPng((scratch / ("scenario-" + std::string(view) + ".png")).string());
        ASSERT_EQ(shot.w, kWidth) << view;
        EXPECT_GT(shot.Colours(), 50u) << view << ": a blank or nearly blank frame";
        for (const auto& other : pictures) EXPECT_NE(shot.rgba, other) << view << " looks like another view";
        pictures.push_back(shot.rgba);
    }

    // Each view alone: drawn, and unlike every other view.
    const char* const shots[] = {"run-setup", "token-strip",   "eviction-raster", "head-grid", "head-grid-kv",
                                 "memory",    "attention-run", "attention-probe", "compare"};
    std::vector<Image> views;
    for (const char* shot : shots) {
        views.push_back(LoadPng((tour / (std::string(shot) + ".png")).string()));
        ASSERT_EQ(views.back().w, kWidth) << shot;
        EXPECT_GT(views.back().Colours(), 30u) << shot << ": a blank or nearly blank frame";
    }
    for (size_t i = 0; i < views.size(); ++i)
        for (size_t j = i + 1; j < views.size(); ++j)
            EXPECT_GT(ChangedPixels(views[i], views[j]), kWidth * kHeight / 50) << shots[i] << " vs " << shots[j];
    EXPECT_GT(views[7].Count(68, 1, 84), 50000) << "no probe map (viridis 0 where the causal mask hides keys)";
    // Runs: #1 the scenario's, #2 it reopened from the database, #3 the tour's at twice the budget.
    EXPECT_GT(views[8].Count(0, 158, 115), 2000) << "no third run's colour (its KV bytes bar) in the comparison";

    // The layout and the recent models persisted where XDG says.
    const std::string ini = ReadFile(scratch / "config" / "kvscope" / "imgui-scenario.ini"); // a script's own
    EXPECT_NE(ini.find("[KVScope][Layout]"), std::string::npos) << ini;
    EXPECT_NE(ini.find("[KVScope][Models]\nModel="), std::string::npos) << ini;
    EXPECT_NE(ini.find("\nPopOut=Export\n"), std::string::npos) << ini;
}

// A model file that is not one, a plugin that fails to load (built for another ABI) and a
// method that crashes in its hook (a null pointer written): each reaches the banner in one line, the model loaded
// before stays, the run ends failed with the plugin's message, and the workbench keeps
// drawing (the scenario's last screenshot is written after the failures).
TEST(Gui, BadModelAndFailingPluginsShowErrorsAndTheAppKeepsRunning) {
    if (!OnPath("xvfb-run")) GTEST_SKIP() << "xvfb-run is missing (Debian xvfb and xauth; ./setup.sh installs them)";
    const fs::path scratch = Scratch("gui-plugins");
    const std::string png = (scratch / "failed.png").string(), bad_model = (scratch / "bad.gguf").string();
    std::ofstream(bad_model) << "not a model";
    const Result gui = Gui(scratch, std::string(" --plugin " TEST_PLUGIN_FAULTY " --load-plugin " TEST_PLUGIN_WRONG_ABI
                                                " --method score_segfaults --budget 16 -n 4 --view-frames 5 --db ") +
                                        (scratch / "gui.db").string() + " --load-model " + bad_model +
                                        " --screenshot " + png);
    EXPECT_EQ(gui.status, 1) << gui.output;
    EXPECT_NE(gui.output.find("banner: loading the model " + bad_model + ": "), std::string::npos) << gui.output;
    EXPECT_EQ(gui.output.find("no model is loaded"), std::string::npos) << "the loaded model must stay:\n" << gui.output;
    EXPECT_NE(gui.output.find("banner: loading a plugin: "), std::string::npos) << gui.output;
    EXPECT_NE(gui.output.find("ABI"), std::string::npos) << gui.output;
    EXPECT_NE(gui.output.find("banner: run #1: "), std::string::npos) << gui.output;
    EXPECT_NE(gui.output.find("score_segfaults.score: crashed: SIGSEGV"), std::string::npos) << gui.output;
    EXPECT_NE(gui.output.find("plugin faulty ("), std::string::npos) << gui.output;
    EXPECT_EQ(LoadPng(png).w, kWidth) << "no frame drawn after the failures";
}

} // namespace

// A session database that cannot be opened (its folder is a file): the run still finishes
// and is shown, the banner says why it was not stored. The run uses a plugin whose Reload
// is pressed as it starts: the reload waits for the run to end.
TEST(Gui, ABadDatabaseCostsABannerLineNotTheRunAndAReloadWaitsForTheRun) {
    if (!OnPath("xvfb-run")) GTEST_SKIP() << "xvfb-run is missing (Debian xvfb and xauth; ./setup.sh installs them)";
    const fs::path scratch = Scratch("gui-bad-db");
    std::ofstream(scratch / "not-a-folder") << "a file";
    const std::string png = (scratch / "bad-db.png").string();
    const Result gui = Gui(scratch, " --plugin " TEST_PLUGIN_FAULTY " --reload-plugin " TEST_PLUGIN_FAULTY
                                    " --method score_zero --budget 16 -n 8 --view-frames 5 --db " +
                                        (scratch / "not-a-folder" / "sessions.db").string() + " --screenshot " + png);
    EXPECT_EQ(gui.status, 0) << gui.output;
    EXPECT_NE(gui.output.find(": done, "), std::string::npos) << gui.output;
    EXPECT_NE(gui.output.find("reload: done after the run ended"), std::string::npos) << gui.output;
    EXPECT_NE(gui.output.find("NOT stored"), std::string::npos) << gui.output;
    EXPECT_NE(gui.output.find("banner: storing run #1: "), std::string::npos) << gui.output;
    EXPECT_EQ(LoadPng(png).w, kWidth);
}

// The session browser deletes a stored run once the confirmation is answered (Enter).
TEST(Gui, TheSessionBrowserDeletesARun) {
    if (!OnPath("xvfb-run")) GTEST_SKIP() << "xvfb-run is missing (Debian xvfb and xauth; ./setup.sh installs them)";
    const fs::path scratch = Scratch("gui-delete");
    const std::string db = (scratch / "gui.db").string();
    const Result gui = Gui(scratch, " --method snapkv --budget 16 -n 4 --view-frames 5 --delete --db " + db +
                                        " --screenshot " + (scratch / "delete.png").string());
    ASSERT_EQ(gui.status, 0) << gui.output;
    EXPECT_NE(gui.output.find("stored as run 1 in "), std::string::npos) << gui.output;
    EXPECT_NE(gui.output.find("deleted run 1 from the database"), std::string::npos) << gui.output;
    const Result list = Shell(KVSCOPE_EXE " sessions list --db " + db);
    EXPECT_NE(list.output.find("no runs in"), std::string::npos) << list.output;
}

// The README's story: SnapKV at a small budget next to the reference, then H2O and
// StreamingLLM at the same budget, and a report of the three from the export dialog: its
// Markdown names each method, and its plots are PNGs beside it.
TEST(Gui, ThreeMethodsRunInTurnAndTheExportDialogWritesTheirReport) {
    if (!OnPath("xvfb-run")) GTEST_SKIP() << "xvfb-run is missing (Debian xvfb and xauth; ./setup.sh installs them)";
    const fs::path scratch = Scratch("gui-story");
    const fs::path report = scratch / "report.md";
    const Result gui = Gui(scratch, " --method snapkv --budget 16 -n 6 --then h2o,streaming_llm --view-frames 5 --db " +
                                        (scratch / "gui.db").string() + " --export " + report.string() +
                                        " --export-format report --screenshot " + (scratch / "story.png").string());
    ASSERT_EQ(gui.status, 0) << gui.output;
    for (const auto& [label, method] : {std::pair{"then run #2", "h2o("}, std::pair{"then run #3", "streaming_llm("}}) {
        const std::string line = LineAfter(gui.output, label);
        EXPECT_EQ(line.rfind(method, 0), 0u) << gui.output;
        EXPECT_NE(line.find(" @ 16: done, 6 steps"), std::string::npos) << gui.output;
    }
    const std::string md = ReadFile(report);
    for (const char* method : {"snapkv", "h2o", "streaming_llm"}) EXPECT_NE(md.find(method), std::string::npos) << method << "\n" << md;
    int plots = 0;
    for (const auto& entry : fs::directory_iterator(scratch))
        if (entry.path().extension() == ".png" && entry.path().stem().string().rfind("report-", 0) == 0) {
            EXPECT_GT(LoadPng(entry.path().string()).w, 0) << entry.path();
            EXPECT_NE(md.find(entry.path().filename().string()), std::string::npos) << entry.path();
            ++plots;
        }
    EXPECT_GT(plots, 0) << md;
    EXPECT_TRUE(fs::exists(scratch / "report.html"));
}

// Stop (Shift+F5) while the full-cache reference runs ends the run there, long before the
// reference's 400 steps.
TEST(Gui, StopWorksDuringTheReference) {
    if (!OnPath("xvfb-run")) GTEST_SKIP() << "xvfb-run is missing (Debian xvfb and xauth; ./setup.sh installs them)";
    const fs::path scratch = Scratch("gui-stop");
    const Result gui = Gui(scratch, " --method snapkv --budget 16 -n 400 --view-frames 5 --stop-in-reference --db " +
                                        (scratch / "gui.db").string() + " --screenshot " + (scratch / "stop.png").string());
    EXPECT_EQ(gui.status, 1) << gui.output;
    EXPECT_NE(gui.output.find("the run ended stopped"), std::string::npos) << gui.output;
    const size_t at = gui.output.find("0 steps (reference ");
    ASSERT_NE(at, std::string::npos) << gui.output;
    EXPECT_LT(std::stoi(gui.output.substr(at + 19)), 100) << gui.output;
}
