// The workbench under Xvfb: `kvscope gui --screenshot` runs its scripted scenario (load
// the default model, run SnapKV next to the reference from the run setup, view the run),
// and the test checks what came out: the run finished with evictions, it produced the
// same tokens as the same run from the command line, the screenshot shows the views
// (the eviction raster's kept colour, the token strip's mismatch colour), and the layout
// was saved in the ini file under $XDG_CONFIG_HOME; Ctrl+P and Esc open and close the
// command palette. Its tour then runs a second budget, analyzes every head, opens the best
// retrieval head's probe map, and shows each view alone: every view's picture is drawn
// and differs from every other's.
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

// The numbers after `label` on its line of `text`.
std::vector<int> NumbersAfter(const std::string& text, const std::string& label) {
    std::vector<int> out;
    const size_t at = text.find("\n" + label + " ");
    if (at == std::string::npos) return out;
    std::istringstream line(text.substr(at + label.size() + 2, text.find('\n', at + 1) - at - label.size() - 2));
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
};

Image LoadPng(const std::string& path) {
    Image img;
    int channels = 0;
    unsigned char* data = stbi_load(path.c_str(), &img.w, &img.h, &channels, 4);
    if (data) img.rgba.assign(data, data + size_t(img.w) * size_t(img.h) * 4);
    stbi_image_free(data);
    return img;
}

size_t Colours(const Image& img) {
    std::set<unsigned> colours;
    for (size_t i = 0; i + 3 < img.rgba.size(); i += 4)
        colours.insert(unsigned(img.rgba[i]) << 16 | unsigned(img.rgba[i + 1]) << 8 | img.rgba[i + 2]);
    return colours.size();
}

int ChangedPixels(const Image& a, const Image& b) {
    int n = 0;
    for (size_t i = 0; i + 3 < std::min(a.rgba.size(), b.rgba.size()); i += 4)
        n += a.rgba[i] != b.rgba[i] || a.rgba[i + 1] != b.rgba[i + 1] || a.rgba[i + 2] != b.rgba[i + 2];
    return n;
}

TEST(Gui, ScenarioRunsShowsAndMatchesTheCommandLine) {
    if (!OnPath("xvfb-run")) GTEST_SKIP() << "xvfb-run is missing (Debian xvfb and xauth; ./setup.sh installs them)";
    const fs::path scratch = fs::path(KVSCOPE_BINARY_DIR) / "test-scratch" / "gui";
    fs::remove_all(scratch);
    fs::create_directories(scratch);
    const std::string png = (scratch / "scenario.png").string();
    const fs::path tour = scratch / "tour";
    fs::create_directories(tour);
    const std::string run = " --method snapkv --budget 16 -n " + std::to_string(kSteps), prompt = " '" + kPrompt + "'";

    const Result gui = Shell("XDG_CONFIG_HOME=" + (scratch / "config").string() + " xvfb-run -a -s '-screen 0 " +
                           std::to_string(kWidth) + "x" + std::to_string(kHeight) + "x24' " KVSCOPE_EXE " gui" + run + " --prompt" + prompt +
                           " --width " + std::to_string(kWidth) + " --height " + std::to_string(kHeight) +
                           " --view-frames 30 --timeout 540 --screenshot " + png + " --tour " + tour.string());
    ASSERT_EQ(gui.status, 0) << gui.output;
    EXPECT_NE(gui.output.find(": done,"), std::string::npos) << gui.output;
    EXPECT_EQ(gui.output.find(" 0 evictions"), std::string::npos) << "SnapKV at 16 slots must evict:\n" << gui.output;
    EXPECT_NE(gui.output.find("palette opened by Ctrl+P, closed by Esc"), std::string::npos) << gui.output;
    EXPECT_NE(gui.output.find("tour: 2 runs, 7 head roles read back, probe map 512x512 of L"), std::string::npos)
        << gui.output;
    EXPECT_NE(gui.output.find(", 9 shots"), std::string::npos) << gui.output;

    // The same run from the command line gives the same tokens.
    const std::vector<int> gui_tokens = NumbersAfter(gui.output, "tokens");
    ASSERT_EQ(int(gui_tokens.size()), kSteps) << gui.output;
    const Result cli = Shell(KVSCOPE_EXE " run --chat --reference --steps --no-db" + run + " -p" + prompt);
    ASSERT_EQ(cli.status, 0) << cli.output;
    EXPECT_EQ(CliTokens(cli.output), gui_tokens) << cli.output << "\n---\n" << gui.output;

    // The screenshot shows the views, not a blank window.
    const Image img = LoadPng(png);
    ASSERT_EQ(img.w, kWidth);
    ASSERT_EQ(img.h, kHeight);
    EXPECT_GT(Colours(img), 100u) << "a blank or nearly blank frame";
    EXPECT_GT(img.Count(92, 200, 99), 10000) << "no eviction raster (kept keys, viridis 0.75)";
    EXPECT_GT(img.Count(213, 94, 0), 500) << "no token strip mismatch cells (the free-running run diverges)";

    // Each view alone: drawn, and unlike every other view.
    const char* const shots[] = {"run-setup", "token-strip",   "eviction-raster", "head-grid", "head-grid-kv",
                                 "memory",    "attention-run", "attention-probe", "compare"};
    std::vector<Image> views;
    for (const char* shot : shots) {
        views.push_back(LoadPng((tour / (std::string(shot) + ".png")).string()));
        ASSERT_EQ(views.back().w, kWidth) << shot;
        EXPECT_GT(Colours(views.back()), 30u) << shot << ": a blank or nearly blank frame";
    }
    for (size_t i = 0; i < views.size(); ++i)
        for (size_t j = i + 1; j < views.size(); ++j)
            EXPECT_GT(ChangedPixels(views[i], views[j]), kWidth * kHeight / 50) << shots[i] << " vs " << shots[j];
    EXPECT_GT(views[7].Count(68, 1, 84), 50000) << "no probe map (viridis 0 where the causal mask hides keys)";
    EXPECT_GT(views[8].Count(230, 159, 0), 2000) << "no second run's colour in the comparison";

    // The layout persisted where XDG says.
    std::ifstream ini(scratch / "config" / "kvscope" / "imgui.ini");
    std::stringstream text;
    text << ini.rdbuf();
    EXPECT_NE(text.str().find("[KVScope][Layout]"), std::string::npos) << text.str();
}

} // namespace
