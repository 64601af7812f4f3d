// The workbench's window: GLFW + OpenGL 3 + Dear ImGui's backends (compiled from the
// libimgui-dev package's sources), the frame loop, fonts, the ini file, screenshots.
#include "app/gui.h"

#include "app/gui_scenario.h"
#include "app/gui_shell.h"
#include "app/gui_worker.h"
#include "views/image_builder.h"

#include <imgui.h>
#include <imgui_impl_glfw.h>
#include <imgui_impl_opengl3.h>

#include <GLFW/glfw3.h> // after the backends: it brings <GL/gl.h> for glReadPixels
#include <stb_image_write.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>

namespace kvscope {

namespace {

const char* const kFontPath = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"; // fonts-dejavu-core

// $XDG_CONFIG_HOME/kvscope/<name> (or ~/.config/...); empty when there is no home.
std::string IniPath(const char* name) {
    const char* xdg = std::getenv("XDG_CONFIG_HOME");
    const char* home = std::getenv("HOME");
    std::filesystem::path dir;
    if (xdg && *xdg) dir = xdg;
    else if (home && *home) dir = std::filesystem::path(home) / ".config";
    else return "";
    dir /= "kvscope";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    return ec ? "" : (dir / name).string();
}

// The font at the monitor's scale (and the style's sizes with it); ImGui's own font, and
// an error for the banner, when the file is missing.
std::string SetUpFonts(GLFWwindow* window) {
    float sx = 1, sy = 1;
    glfwGetWindowContentScale(window, &sx, &sy);
    const float scale = std::max(1.0f, sx);
    ImGui::GetStyle().ScaleAllSizes(scale);
    ImGuiIO& io = ImGui::GetIO();
    if (std::filesystem::exists(kFontPath) && io.Fonts->AddFontFromFileTTF(kFontPath, 15.0f * scale)) return "";
    ImFontConfig config;
    config.SizePixels = 13.0f * scale;
    io.Fonts->AddFontDefault(&config);
    return std::string(kFontPath) + ": font missing (install fonts-dejavu-core); using ImGui's built-in font";
}

// The back buffer as a PNG (call before the swap).
bool Screenshot(const std::string& path) {
    int w = 0, h = 0;
    glfwGetFramebufferSize(glfwGetCurrentContext(), &w, &h);
    std::vector<unsigned char> pixels(size_t(w) * size_t(h) * 4);
    glPixelStorei(GL_PACK_ALIGNMENT, 1);
    glReadBuffer(GL_BACK);
    glReadPixels(0, 0, w, h, GL_RGBA, GL_UNSIGNED_BYTE, pixels.data());
    stbi_flip_vertically_on_write(1); // OpenGL's rows start at the bottom
    return stbi_write_png(path.c_str(), w, h, 4, pixels.data(), w * 4) != 0;
}

// views.h UploadTextureFn, for the rasters and heatmaps.
ImTextureID UploadTexture(ImTextureID reuse, int width, int height, const uint32_t* rgba) {
    GLuint id = GLuint(reinterpret_cast<uintptr_t>(reuse));
    if (!id) glGenTextures(1, &id);
    glBindTexture(GL_TEXTURE_2D, id);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
    glPixelStorei(GL_UNPACK_ALIGNMENT, 4);
    glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA, width, height, 0, GL_RGBA, GL_UNSIGNED_BYTE, rgba);
    return reinterpret_cast<ImTextureID>(uintptr_t(id));
}

struct Window {
    GLFWwindow* handle = nullptr;
    ~Window() {
        if (!handle) return;
        ImGui_ImplOpenGL3_Shutdown();
        ImGui_ImplGlfw_Shutdown();
        ImGui::DestroyContext();
        glfwDestroyWindow(handle);
        glfwTerminate();
    }
};

bool OpenWindow(Window& window, const GuiOptions& options) {
    glfwSetErrorCallback([](int code, const char* what) { std::fprintf(stderr, "kvscope: GLFW error %d: %s\n", code, what); });
    if (!glfwInit()) return false;
    glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
    glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 2);
    glfwWindowHint(GLFW_OPENGL_PROFILE, GLFW_OPENGL_CORE_PROFILE);
    glfwWindowHint(GLFW_OPENGL_FORWARD_COMPAT, GLFW_TRUE);
    glfwWindowHint(GLFW_SCALE_TO_MONITOR, GLFW_TRUE);
    window.handle = glfwCreateWindow(options.width, options.height, "KVScope", nullptr, nullptr);
    if (!window.handle) {
        glfwTerminate();
        return false;
    }
    glfwMakeContextCurrent(window.handle);
    glfwSwapInterval(options.scripted() ? 0 : 1); // scripted: the loop paces itself, frames are timed
    IMGUI_CHECKVERSION();
    ImGui::CreateContext();
    ImGui_ImplGlfw_InitForOpenGL(window.handle, true);
    ImGui_ImplOpenGL3_Init("#version 150");
    return true;
}

double MsSince(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

} // namespace

int run_gui(const GuiOptions& options) {
    Window window;
    if (!OpenWindow(window, options)) {
        std::fprintf(stderr, "kvscope: error: cannot open a window (no display? `kvscope demo` runs without one; "
                             "tests use xvfb-run)\n");
        return 1;
    }
    ImGuiIO& io = ImGui::GetIO();
    io.ConfigFlags |= ImGuiConfigFlags_NavEnableKeyboard;
    // A scripted run starts from the default layout, so that its frames and shots do not
    // depend on what the user (or the last script) left; it saves what it ends with beside
    // the user's file, never over it.
    const std::string ini = IniPath(options.scripted() ? "imgui-scenario.ini" : "imgui.ini");
    io.IniFilename = ini.empty() || options.scripted() ? nullptr : ini.c_str();
    ImGui::StyleColorsDark();
    const std::string font_error = SetUpFonts(window.handle);

    // The engine leaves a core to the UI and the renderer (often a software one): libtorch's
    // OpenMP threads spin between operations, and on 2 cores they starved every frame.
    ModelOptions model = options.model;
    if (model.threads == 0) model.threads = std::max(1, int(std::thread::hardware_concurrency()) - 1);
    GuiWorker worker(model, options.plugins, options.db); // loads the model in the background
    if (!font_error.empty()) worker.ReportError(font_error);
    Shell shell(worker, UploadTexture);
    std::optional<Scenario> scenario;
    if (options.scripted()) scenario.emplace(options);

    double frame_ms = 0;
    constexpr int kShotWait = 600;
    int shot_wait = 0; // frames the scenario's screenshot has waited for its images
    while (!glfwWindowShouldClose(window.handle) && !shell.quit() && !(scenario && scenario->done())) {
        const auto start = std::chrono::steady_clock::now();
        glfwPollEvents();
        if (scenario) scenario->Advance(shell, frame_ms);
        ImGui_ImplOpenGL3_NewFrame();
        ImGui_ImplGlfw_NewFrame();
        ImGui::NewFrame();
        shell.Frame();
        ImGui::Render();
        int w = 0, h = 0;
        glfwGetFramebufferSize(window.handle, &w, &h);
        glViewport(0, 0, w, h);
        const ImVec4 bg = ImGui::GetStyle().Colors[ImGuiCol_WindowBg]; // the main window draws none
        glClearColor(bg.x, bg.y, bg.z, 1);
        glClear(GL_COLOR_BUFFER_BIT);
        ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
        // A shot shows the images its views asked for: it waits while they are built (a few
        // frames; past kShotWait frames it is saved as it is, and says so).
        if (const std::string shot = scenario ? scenario->screenshot() : ""; !shot.empty()) {
            if (ImagesSettled() || ++shot_wait > kShotWait) {
                if (shot_wait > kShotWait) std::fprintf(stderr, "kvscope: warning: %s saved with images still building\n", shot.c_str());
                if (!Screenshot(shot)) std::fprintf(stderr, "kvscope: error: cannot write %s\n", shot.c_str());
                scenario->ShotSaved();
                shot_wait = 0;
            }
        }
        glfwSwapBuffers(window.handle);
        glFinish(); // the frame is drawn (a software renderer draws here), so its time counts
        frame_ms = MsSince(start);
        // About 60 frames a second while something changes; the rest of the time is the
        // engine's (2 cores are common). Idle, the next frame waits for input (or 0.25 s).
        const bool idle = !scenario && !shell.animating();
        const double wait_s = idle ? 0.25 : (1000.0 / 60.0 - frame_ms) / 1000.0;
        if (wait_s > 0) glfwWaitEventsTimeout(wait_s);
    }
    // Saved now, whether or not ImGui thinks anything changed (and while `ini` lives).
    if (!ini.empty()) ImGui::SaveIniSettingsToDisk(ini.c_str());
    io.IniFilename = nullptr;
    return scenario ? scenario->Finish(shell) : 0;
}

void add_gui_options(CLI::App& cmd, GuiOptions& o) {
    add_model_options(cmd, o.model);
    add_plugin_option(cmd, o.plugins);
    add_db_option(cmd, o.db);
    cmd.add_option("--width", o.width, "window width in pixels")->capture_default_str();
    cmd.add_option("--height", o.height, "window height in pixels")->capture_default_str();
    cmd.add_flag("--bench", o.bench, "run the scripted scenario and print frame-time percentiles (p50, p99)");
    cmd.add_option("--screenshot", o.screenshot, "run the scripted scenario and save its last frame as a PNG");
    cmd.add_flag("--ignore-eos", o.ignore_eos, "scenario: take all the steps, past the end-of-generation token");
    cmd.add_option("--screenshot-running", o.running_screenshot,
                   "scenario: also save a frame of the run in progress, halfway through its steps");
    cmd.add_option("--method", o.method, "scenario: the method (a name; parameters at their defaults)")->capture_default_str();
    cmd.add_option("--budget", o.budget, "scenario: slots kept per layer and KV head")->capture_default_str();
    cmd.add_option("--prompt", o.prompt, "scenario: the chat prompt")->capture_default_str();
    cmd.add_option("-n,--steps", o.steps, "scenario: decode steps")->capture_default_str();
    cmd.add_option("--view-frames", o.view_frames, "scenario: frames spent viewing the finished run")->capture_default_str();
    cmd.add_option("--timeout", o.timeout_s, "scenario: fail after this many seconds")->capture_default_str();
    cmd.add_option("--load-model", o.load_model, "scenario: load this model with the model picker before the run");
    cmd.add_option("--load-plugin", o.load_plugin, "scenario: load this plugin from the plugin manager before the run");
    cmd.add_option("--export", o.export_path, "scenario: export the stored run to this file from the export dialog");
    cmd.add_option("--export-format", o.export_format, "scenario: the export's format")->capture_default_str();
    cmd.add_flag("--pause", o.pause, "scenario: pause the run with Space, take one step with '.', resume");
    cmd.add_option("--then", o.then_methods, "scenario: then run these methods in turn at the same budget (comma-separated)")
        ->delimiter(',');
    cmd.add_flag("--delete", o.delete_run, "scenario: delete the stored run from the session browser at the end");
    cmd.add_option("--reload-plugin", o.reload_plugin, "scenario: reload this plugin while the run runs");
    cmd.add_flag("--stop-in-reference", o.stop_in_reference, "scenario: stop the run while its reference runs");
    cmd.add_option("--tour", o.tour, "scenario: then analyze heads, run twice the budget, and save each view alone "
                                     "as a PNG into this folder");
}

void add_gui_command(CLI::App& app, GuiOptions& options) {
    CLI::App* cmd = app.add_subcommand("gui", "Open the workbench (what `kvscope` alone does), with options; "
                                              "--bench and --screenshot run a scripted scenario headless-friendly");
    add_gui_options(*cmd, options);
    cmd->final_callback([&options] {
        if (int status = run_gui(options)) throw CLI::RuntimeError(status);
    });
}

} // namespace kvscope
