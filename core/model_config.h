// The hyper-parameters of a Llama-family model, read from a Hugging Face config.json or
// from GGUF metadata, validated once so the forward pass can trust them.
#pragma once

#include <cstdint>
#include <string>

namespace kvscope {

class GgufFile;

enum class Arch { Llama, Mistral, Qwen2 };
const char* arch_name(Arch arch);

struct RopeConfig {
    enum class Scaling { None, Linear, Llama3 };
    double theta = 10000.0;
    Scaling scaling = Scaling::None;
    double factor = 1.0;           // Linear and Llama3
    double low_freq_factor = 1.0;  // Llama3
    double high_freq_factor = 4.0; // Llama3
    int64_t original_context = 8192; // Llama3: original_max_position_embeddings
};

struct ModelConfig {
    Arch arch = Arch::Llama;
    std::string name;   // general.name or the directory name, for display
    std::string source; // the file the config was read from (for error messages)
    int64_t n_layer = 0;
    int64_t n_embd = 0;
    int64_t n_ff = 0;
    int64_t n_head = 0;
    int64_t n_head_kv = 0;
    int64_t head_dim = 0;
    int64_t n_vocab = 0;
    int64_t n_ctx = 0;          // longest context the model was trained for
    int64_t sliding_window = 0; // 0: full attention (Mistral sets it)
    double rms_eps = 1e-5;
    RopeConfig rope;
    bool tied_embeddings = false;
    bool qkv_bias = false;      // Qwen2
};

// From a Hugging Face config.json. Refuses architectures other than the Llama family
// with an Error that names the architecture.
ModelConfig config_from_hf_json(const std::string& path);
// From GGUF metadata (`<arch>.block_count`, ...).
ModelConfig config_from_gguf(const GgufFile& gguf);

} // namespace kvscope
