// What the subcommands share: the model options (--model, --device, --dtype,
// --threads), loading with a progress line, and the user-facing error handling.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kvscope {

class Model;
class PluginRegistry;
struct HeadRoles;
class SessionWriter;
class Tokenizer;
struct RunRecord;
struct RunSummary;
struct StepEvent;

struct ModelOptions {
    std::string model;        // empty: the default model
    std::string device = "cpu";
    std::string dtype = "auto"; // f32 on CPU, bf16 on CUDA
    int threads = 0;          // 0: one per core
    bool fp32_decode = false; // decode through the dequantized weights, not the blocks
};

void add_model_options(CLI::App& command, ModelOptions& options);
// The model's file or folder: --model, or the default model.
std::string model_path(const ModelOptions& options);
// Loads the model, reporting progress to `progress` (by default a line on stderr);
// throws kvscope::Error on bad input.
using LoadProgress = std::function<void(double fraction, const std::string& what)>;
std::unique_ptr<Model> load_model(const ModelOptions& options, const LoadProgress& progress = {});

// A UTF-8 text file, whole; throws Error naming the file and `what` it is for.
std::string read_text_file(const std::string& path, const std::string& what);
// Prompt text to ids: plain, or as a user message (after an optional system message) in
// the model's chat format, with the assistant's turn opened.
std::vector<int32_t> encode_prompt(const Tokenizer& tok, const std::string& text, bool chat,
                                   const std::string& system = "");

// "a(x=1,y=2),b" -> {"a(x=1,y=2)", "b"}: a list of run specs (commas inside parentheses
// belong to a spec), or of budgets.
std::vector<std::string> split_specs(const std::string& list);

// Where the bundled prompts and texts are: $KVSCOPE_ASSETS, else the source tree's assets/.
std::string assets_dir();

// The natural text the head-role probes read (assets/prompts/natural_text.txt).
std::string probe_text();

// The model's head profile when a method of `specs` reads one (KVS_NEEDS_HEAD_ROLES), else
// null: what the sessions database at `db` holds for the model under the default probes,
// or computed now (a minute on a CPU for the default model) and stored there. An empty
// `db`: computed, not stored.
std::shared_ptr<const HeadRoles> head_roles_for(const Model& model, const ModelOptions& options,
                                                const PluginRegistry& registry, const std::vector<std::string>& specs,
                                                const std::string& db);

// The built-in methods plus the plugins at `paths` (--plugin).
void add_plugin_option(CLI::App& command, std::vector<std::string>& paths);
std::unique_ptr<PluginRegistry> make_registry(const std::vector<std::string>& paths);

// The sessions database: --db PATH, by default default_session_db_path() (sessions/schema.h).
void add_db_option(CLI::App& command, std::string& path);
std::string session_db_path(const std::string& option);
// For commands that store runs: --db, and --no-db to store nothing. The writer is opened
// before the model loads, so a bad database fails first; null with --no-db.
struct StoreOptions {
    std::string db;
    bool no_db = false;
};
void add_store_options(CLI::App& command, StoreOptions& options);
std::unique_ptr<SessionWriter> open_session_writer(const StoreOptions& options);
// What the sessions database keeps of the runs on `model`: its path, the SHA-256 of its
// files (computed here, once, unless given as `hash`), device and dtype; each run fills in
// the rest.
RunRecord model_run_record(const Model& model, const ModelOptions& options, const std::string& hash = "");
// A run's per-step table and its summary, as `run` and `sessions show` print them.
void print_step_table(const std::vector<StepEvent>& steps);
void print_run_summary(const RunSummary& summary);

// Subcommands, one file each.
void add_generate_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_methods_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_compare_command(CLI::App& app);
void add_sweep_command(CLI::App& app);
void add_heads_command(CLI::App& app);
void add_sessions_command(CLI::App& app);
void add_export_command(CLI::App& app);

} // namespace kvscope
