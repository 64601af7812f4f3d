#include "app/cli_common.h"

#include "core/cpu_threads.h"
#include "core/default_model.h"
#include "core/error.h"
#include "core/head_roles.h"
#include "core/model.h"
#include "core/plugin_registry.h"
#include "core/policy.h"
#include "core/probes.h"
#include "core/utf8.h"
#include "plugins/builtin.h"
#include "sessions/model_hash.h"
#include "sessions/queries.h"
#include "sessions/schema.h"
#include "sessions/writer.h"

#include <ATen/Context.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace kvscope {

void add_model_options(CLI::App& command, ModelOptions& options) {
    command.add_option("-m,--model", options.model,
                       "GGUF file or Hugging Face model directory (default: the bundled SmolLM2-135M-Instruct)");
    command.add_option("--device", options.device, "cpu, cuda or cuda:N")->capture_default_str();
    command.add_option("--dtype", options.dtype, "compute dtype: auto (f32 on CPU, bf16 on CUDA), f32, bf16, f16")
        ->check(CLI::IsMember({"auto", "f32", "bf16", "f16"}))
        ->capture_default_str();
    command.add_option("-t,--threads", options.threads, "CPU threads (default: one per core)");
    command.add_flag("--fp32-decode", options.fp32_decode,
                     "CPU: decode through the dequantized fp32 weights instead of the quantized GGUF blocks");
}

namespace {

c10::Device parse_device(const std::string& text) {
    try {
        c10::Device device(text);
        if (device.is_cuda() && !at::hasCUDA())
            throw Error("--device", text, "this build of libtorch has no CUDA, or no GPU is visible");
        if (!device.is_cpu() && !device.is_cuda()) throw Error("--device", text, "use cpu or cuda[:N]");
        return device;
    } catch (const c10::Error&) {
        throw Error("--device", text, "not a device name (use cpu or cuda[:N])");
    }
}

c10::ScalarType parse_dtype(const std::string& text, const c10::Device& device) {
    if (text == "f32") return c10::kFloat;
    if (text == "bf16") return c10::kBFloat16;
    if (text == "f16") return c10::kHalf;
    return device.is_cuda() ? c10::kBFloat16 : c10::kFloat;
}

// The --dtype name of a compute dtype.
std::string dtype_name(c10::ScalarType dtype) {
    return dtype == c10::kBFloat16 ? "bf16" : dtype == c10::kHalf ? "f16" : "f32";
}

// "loading model  [#########.........]  47%  layer 13" on one line, rewritten in place.
void print_progress(double fraction, const std::string& what) {
    static const bool tty = isatty(fileno(stderr));
    if (!tty) return; // a log or a pipe gets no progress line
    const int width = 30, filled = int(fraction * width + 0.5);
    std::fprintf(stderr, "\rloading model  [%s%s] %3d%%  %-12s%s", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), int(fraction * 100 + 0.5), what.c_str(),
                 fraction >= 1.0 ? "\n" : "");
}

} // namespace

std::string model_path(const ModelOptions& options) {
    return options.model.empty() ? default_model_path() : options.model;
}

std::unique_ptr<Model> load_model(const ModelOptions& options, const LoadProgress& progress) {
    set_cpu_threads(options.threads);
    LoadOptions load;
    load.device = parse_device(options.device);
    load.dtype = parse_dtype(options.dtype, load.device);
    load.progress = progress ? progress : LoadProgress(print_progress);
    load.block_weights = !options.fp32_decode;
    const std::string path = model_path(options);
    if (options.model.empty() && access(path.c_str(), R_OK) != 0)
        throw Error(path, "model", "the default model is missing: run ./setup.sh (or pass --model)");
    auto model = std::make_unique<Model>(Model::load(path, load));
    for (const std::string& warning : model->warnings()) std::fprintf(stderr, "warning: %s\n", warning.c_str());
    return model;
}

std::string read_text_file(const std::string& path, const std::string& what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path, what, "cannot be read");
    std::stringstream text;
    text << in.rdbuf();
    std::string content = text.str();
    if (size_t bad = find_invalid_utf8(content); bad != std::string::npos)
        throw Error(path, what, "invalid UTF-8 at byte " + std::to_string(bad));
    if (content.empty()) throw Error(path, what, "is empty");
    return content;
}

std::vector<int32_t> encode_prompt(const Tokenizer& tok, const std::string& text, bool chat, const std::string& system) {
    if (size_t bad = find_invalid_utf8(text); bad != std::string::npos)
        throw Error("prompt", "text", "invalid UTF-8 at byte " + std::to_string(bad));
    if (!chat) return tok.encode(text, /*parse_special=*/false, tok.add_bos_default());
    std::vector<ChatMessage> messages;
    if (!system.empty()) messages.push_back({"system", system});
    messages.push_back({"user", text});
    return tok.encode(tok.apply_chat(messages), /*parse_special=*/true, tok.add_bos_default());
}

std::vector<std::string> split_specs(const std::string& list) {
    std::vector<std::string> out(1);
    int depth = 0;
    for (char c : list) {
        depth += c == '(' ? 1 : c == ')' ? -1 : 0;
        if (c == ',' && depth == 0) out.emplace_back();
        else if (c != ' ') out.back() += c;
    }
    if (out.back().empty()) out.pop_back();
    return out;
}

std::string assets_dir() {
    const char* env = std::getenv("KVSCOPE_ASSETS");
    return env && *env ? env : KVSCOPE_ASSETS_DIR;
}

void add_db_option(CLI::App& command, std::string& path) {
    command.add_option("--db", path, "sessions database (default: " + default_session_db_path() + ")");
}

std::string session_db_path(const std::string& option) { return option.empty() ? default_session_db_path() : option; }

void add_store_options(CLI::App& command, StoreOptions& options) {
    add_db_option(command, options.db);
    command.add_flag("--no-db", options.no_db, "do not store the run in the sessions database")
        ->excludes(command.get_option("--db"));
}

std::unique_ptr<SessionWriter> open_session_writer(const StoreOptions& options) {
    if (options.no_db) return nullptr;
    return std::make_unique<SessionWriter>(session_db_path(options.db));
}

RunRecord model_run_record(const Model& model, const ModelOptions& options, const std::string& hash) {
    RunRecord record;
    record.model_path = model_path(options);
    record.model_hash = hash.empty() ? model_hash(record.model_path) : hash;
    record.device = model.device().str();
    record.dtype = dtype_name(model.dtype());
    return record;
}

void add_plugin_option(CLI::App& command, std::vector<std::string>& paths) {
    command.add_option("--plugin", paths, "load methods from a plugin library (.so); repeatable");
}

std::string probe_text() { return read_text_file(assets_dir() + "/prompts/natural_text.txt", "probe text"); }

std::shared_ptr<const HeadRoles> head_roles_for(const Model& model, const ModelOptions& options,
                                                const PluginRegistry& registry, const std::vector<std::string>& specs,
                                                const std::string& db) {
    const auto reads_roles = [&](const std::string& spec) {
        return Policy(resolve_method_spec(registry, spec), Budget{1, true}, 0).needs_head_roles();
    };
    if (std::none_of(specs.begin(), specs.end(), reads_roles)) return nullptr;
    ProbeOptions probes;
    probes.text = probe_text();
    const std::string hash = model_hash(model_path(options)), described = probes.describe();
    std::unique_ptr<sql::Connection> connection = db.empty() ? nullptr : open_session_db(db, SessionAccess::write);
    if (connection)
        if (std::optional<HeadRoles> stored = load_head_roles(*connection, hash, described)) {
            stored->n_head_kv = model.config().n_head_kv;
            return std::make_shared<const HeadRoles>(std::move(*stored));
        }
    std::fprintf(stderr, "head roles: none stored for this model, scoring the probe suite (kvscope heads)\n");
    auto roles = std::make_shared<const HeadRoles>(analyze_heads(model, make_probes(model.tokenizer(), probes)));
    if (connection) store_head_roles(*connection, hash, described, *roles);
    return roles;
}

std::unique_ptr<PluginRegistry> make_registry(const std::vector<std::string>& paths) {
    auto registry = std::make_unique<PluginRegistry>();
    registry->add_builtin(kvscope_builtin_plugin());
    for (const std::string& path : paths) registry->load(path);
    return registry;
}

} // namespace kvscope
