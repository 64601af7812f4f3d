// What the subcommands share: the model options (--model, --device, --dtype,
// --threads), loading with a progress line, and the user-facing error handling.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

namespace kvscope {

class Model;

struct ModelOptions {
    std::string model;        // empty: the default model
    std::string device = "cpu";
    std::string dtype = "auto"; // f32 on CPU, bf16 on CUDA
    int threads = 0;          // 0: one per core
    bool fp32_decode = false; // decode through the dequantized weights, not the blocks
};

void add_model_options(CLI::App& command, ModelOptions& options);
// Loads the model, printing progress to stderr; throws kvscope::Error on bad input.
std::unique_ptr<Model> load_model(const ModelOptions& options);

// Subcommands, one file each.
void add_generate_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_bench_command(CLI::App& app);

} // namespace kvscope
