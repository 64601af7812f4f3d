// A Llama-family model ready to run: config, tokenizer and weights on one device, and
// the forward pass. Loads a Hugging Face directory or a GGUF file.
#pragma once

#include "core/model_config.h"
#include "core/tokenizer.h"
#include "kernels/ggml_types.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <functional>
#include <string>
#include <vector>

namespace kvscope {

class KvCache;

// A weight matrix in ggml blocks, as the model file stores it: row r is rows[r], its
// in_features / block_elems blocks of `type`.
struct BlockMatrix {
    kernels::GgmlType type = kernels::GgmlType::F32;
    at::Tensor rows; // uint8 [out_features, row_bytes], or undefined
};

// y = x W^T + b. Where the file held W quantized, the blocks are kept too: a one-row
// product on the CPU (decode) reads them instead of fp32, 4-7x fewer bytes.
struct Linear {
    at::Tensor weight;  // [out_features, in_features], compute dtype
    at::Tensor bias;    // [out_features], or undefined
    BlockMatrix blocks; // CPU fp32 models loaded from quantized GGUF tensors only
};

struct LayerWeights {
    at::Tensor attn_norm; // [n_embd]
    Linear qkv;           // [(n_head + 2 n_head_kv) head_dim, n_embd]: q|k|v rows
    Linear o;             // [n_embd, n_head head_dim]
    at::Tensor ffn_norm;  // [n_embd]
    Linear gate_up;       // [2 n_ff, n_embd]: gate|up rows
    Linear down;          // [n_embd, n_ff]
};

struct ModelWeights {
    at::Tensor tok_embd;          // [n_vocab, n_embd]
    at::Tensor output_norm;       // [n_embd]
    Linear output;                // [n_vocab, n_embd]; its weight is tok_embd when tied
    at::Tensor rope_freq_factors; // [head_dim / 2] divisors (GGUF llama3), or undefined
    std::vector<LayerWeights> layers;
};

struct LoadOptions {
    c10::Device device = c10::kCPU;
    c10::ScalarType dtype = c10::kFloat; // compute dtype: Float, BFloat16 or Half
    // Keep quantized GGUF weights as blocks for one-row products (CPU, fp32 only).
    bool block_weights = true;
    // Called as loading advances, with a fraction in [0, 1] and what is being read.
    std::function<void(double fraction, const std::string& what)> progress;
};

class Model {
public:
    // `path` is a GGUF file or a Hugging Face model directory. Every tensor's shape is
    // checked against the config; problems throw kvscope::Error naming file and field.
    static Model load(const std::string& path, const LoadOptions& options = {});

    const ModelConfig& config() const { return config_; }
    const Tokenizer& tokenizer() const { return tokenizer_; }
    c10::Device device() const { return device_; }
    c10::ScalarType dtype() const { return dtype_; }
    int64_t n_params() const;
    // Non-fatal findings of the loader (e.g. NaN or Inf weights), one line each.
    const std::vector<std::string>& warnings() const { return warnings_; }

    // Runs `tokens` at the positions after what `cache` holds, appends their keys and
    // values to it, and returns fp32 logits: [tokens.size(), n_vocab] when all_logits,
    // otherwise [1, n_vocab] for the last token.
    at::Tensor forward(const std::vector<int32_t>& tokens, KvCache& cache, bool all_logits = false) const;

    Model(Model&&) noexcept;
    Model& operator=(Model&&) noexcept;
    ~Model();

private:
    Model(ModelConfig config, Tokenizer tokenizer, ModelWeights weights, c10::Device device,
          c10::ScalarType dtype);
    at::Tensor rope_tables(int64_t first_pos, int64_t n) const; // [2, n, head_dim] cos|sin

    ModelConfig config_;
    Tokenizer tokenizer_;
    ModelWeights weights_;
    c10::Device device_;
    c10::ScalarType dtype_;
    at::Tensor inv_freq_; // [head_dim / 2], fp32
    std::vector<std::string> warnings_;
};

} // namespace kvscope
