// kvscope: the command line entry. Each subcommand lives in its own cli_*.cpp file.
#include "app/cli_common.h"
#ifdef KVSCOPE_WITH_GUI
#include "app/gui.h"
#endif

#include "core/error.h"

#include <c10/util/Exception.h>

#include <cstdio>
#include <string>
#include <unistd.h>

namespace {

// "kvscope: error: <what>" as exactly one line on stderr. On a terminal it first ends a
// line left open (the progress line, or stdout's echoed prompt); piped, there is none.
void print_error(const char* prefix, std::string what) {
    for (char& c : what)
        if (c == '\n' || c == '\r') c = ' ';
    std::fflush(stdout); // what was printed before the error comes before it
    std::fprintf(stderr, "%s%s%s\n", isatty(fileno(stderr)) ? "\n" : "", prefix, what.c_str());
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"KVScope: a workbench for KV-cache compression research.\n"
                 "Runs real language models through a pluggable KV cache and measures what each method keeps, "
                 "what it costs and how far it drifts from the full cache."};
    app.require_subcommand(0, 1);
    kvscope::add_demo_command(app);
    kvscope::add_generate_command(app);
    kvscope::add_logits_command(app);
    kvscope::add_bench_command(app);
    kvscope::add_methods_command(app);
    kvscope::add_run_command(app);
    kvscope::add_compare_command(app);
    kvscope::add_sweep_command(app);
    kvscope::add_heads_command(app);
    kvscope::add_sessions_command(app);
    kvscope::add_export_command(app);
#ifdef KVSCOPE_WITH_GUI
    kvscope::GuiOptions gui;
    kvscope::add_gui_command(app, gui);
    bool gui_bench = false;
    app.add_flag("--gui-bench", gui_bench, "Run the workbench's scripted scenario and print its frame times "
                                           "(kvscope gui --bench, with its options)");
#endif
    try {
        app.parse(argc, argv);
#ifdef KVSCOPE_WITH_GUI
        // No subcommand: the workbench.
        gui.bench = gui_bench;
        if (app.get_subcommands().empty()) return kvscope::run_gui(gui);
#else
        if (app.get_subcommands().empty()) std::fputs(app.help().c_str(), stdout);
#endif
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const kvscope::Error& e) {
        print_error("kvscope: error: ", e.what());
        return 1;
    } catch (const c10::Error& e) {
        print_error("kvscope: error in libtorch: ", e.what_without_backtrace());
        return 1;
    } catch (const std::exception& e) {
        print_error("kvscope: error: ", e.what());
        return 1;
    }
    return 0;
}
