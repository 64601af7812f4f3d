#include "core/model_config.h"

#include "core/error.h"
#include "core/gguf.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

namespace kvscope {

const char* arch_name(Arch arch) {
    switch (arch) {
    case Arch::Llama: return "llama";
    case Arch::Mistral: return "mistral";
    case Arch::Qwen2: return "qwen2";
    }
    return "?";
}

namespace {

// The checks every config passes, whatever it was read from.
void validate(const ModelConfig& c) {
    auto positive = [&](int64_t v, const char* field) {
        if (v <= 0 || v > (int64_t(1) << 31))
            throw Error(c.source, field, "must be a positive integer, got " + std::to_string(v));
    };
    positive(c.n_layer, "n_layer");
    positive(c.n_embd, "n_embd");
    positive(c.n_ff, "n_ff");
    positive(c.n_head, "n_head");
    positive(c.n_head_kv, "n_head_kv");
    positive(c.head_dim, "head_dim");
    positive(c.n_vocab, "n_vocab");
    positive(c.n_ctx, "n_ctx");
    if (c.n_head % c.n_head_kv != 0)
        throw Error(c.source, "n_head_kv", "n_head (" + std::to_string(c.n_head) +
                                               ") is not a multiple of n_head_kv (" +
                                               std::to_string(c.n_head_kv) + ")");
    if (c.head_dim % 2 != 0) throw Error(c.source, "head_dim", "must be even for RoPE");
    if (!(c.rms_eps > 0 && c.rms_eps < 1)) throw Error(c.source, "rms_norm_eps", "out of range");
    if (!(c.rope.theta > 1)) throw Error(c.source, "rope_theta", "must be > 1");
    if (!(c.rope.factor > 0)) throw Error(c.source, "rope_scaling.factor", "must be > 0");
    if (c.sliding_window < 0) throw Error(c.source, "sliding_window", "must be >= 0");
}

// ---- config.json ----------------------------------------------------------------------

using nlohmann::json;

struct JsonFields {
    const json& j;
    const std::string& file;

    bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
    int64_t integer(const char* key) const {
        if (!has(key)) throw Error(file, key, "missing");
        if (!j[key].is_number_integer()) throw Error(file, key, "must be an integer");
        return j[key].get<int64_t>();
    }
    int64_t integer_or(const char* key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }
    double number_or(const char* key, double fallback) const {
        if (!has(key)) return fallback;
        if (!j[key].is_number()) throw Error(file, key, "must be a number");
        return j[key].get<double>();
    }
    bool boolean_or(const char* key, bool fallback) const {
        if (!has(key)) return fallback;
        if (!j[key].is_boolean()) throw Error(file, key, "must be true or false");
        return j[key].get<bool>();
    }
    std::string string_or(const char* key, const std::string& fallback) const {
        if (!has(key)) return fallback;
        if (!j[key].is_string()) throw Error(file, key, "must be a string");
        return j[key].get<std::string>();
    }
};

json read_json(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw Error(path, "open", "cannot read file");
    std::stringstream text;
    text << in.rdbuf();
    try {
        return json::parse(text.str());
    } catch (const json::exception& e) { // parse_error, or out_of_range for a number too large
        throw Error(path, "json", e.what());
    }
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5), which may also carry
// rope_theta.
void read_rope(const json& j, const std::string& file, RopeConfig& rope) {
    JsonFields top{j, file};
    rope.theta = top.number_or("rope_theta", rope.theta);
    const char* key = top.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
    if (!top.has(key)) return;
    if (!j[key].is_object()) throw Error(file, key, "must be an object");
    JsonFields r{j[key], file};
    rope.theta = r.number_or("rope_theta", rope.theta);
    std::string type = r.string_or("rope_type", r.string_or("type", "default"));
    if (type == "default") return;
    rope.factor = r.number_or("factor", 1.0);
    if (type == "linear") {
        rope.scaling = RopeConfig::Scaling::Linear;
    } else if (type == "llama3") {
        rope.scaling = RopeConfig::Scaling::Llama3;
        rope.low_freq_factor = r.number_or("low_freq_factor", 1.0);
        rope.high_freq_factor = r.number_or("high_freq_factor", 4.0);
        rope.original_context = r.integer_or("original_max_position_embeddings", 8192);
        if (!(rope.high_freq_factor > rope.low_freq_factor))
            throw Error(file, std::string(key) + ".high_freq_factor", "must exceed low_freq_factor");
    } else {
        throw Error(file, std::string(key) + ".rope_type",
                    "RoPE scaling '" + type + "' is not supported (default, linear, llama3 are)");
    }
}

} // namespace

ModelConfig config_from_hf_json(const std::string& path) {
    json j = read_json(path);
    if (!j.is_object()) throw Error(path, "json", "config must be an object");
    JsonFields f{j, path};
    ModelConfig c;
    c.source = path;
    std::string type = f.string_or("model_type", "");
    if (type == "llama") c.arch = Arch::Llama;
    else if (type == "mistral") c.arch = Arch::Mistral;
    else if (type == "qwen2") c.arch = Arch::Qwen2;
    else
        throw Error(path, "model_type",
                    "architecture '" + type + "' is not supported (llama, mistral, qwen2 are)");
    c.name = f.string_or("_name_or_path", arch_name(c.arch));
    c.n_layer = f.integer("num_hidden_layers");
    c.n_embd = f.integer("hidden_size");
    c.n_ff = f.integer("intermediate_size");
    c.n_head = f.integer("num_attention_heads");
    c.n_head_kv = f.integer_or("num_key_value_heads", c.n_head);
    c.head_dim = c.n_head > 0 ? f.integer_or("head_dim", c.n_embd / c.n_head) : 0;
    c.n_vocab = f.integer("vocab_size");
    c.n_ctx = f.integer_or("max_position_embeddings", 2048);
    c.rms_eps = f.number_or("rms_norm_eps", 1e-6);
    c.tied_embeddings = f.boolean_or("tie_word_embeddings", false);
    read_rope(j, path, c.rope);
    if (f.boolean_or("mlp_bias", false)) throw Error(path, "mlp_bias", "MLP biases are not supported");
    if (c.arch == Arch::Qwen2) {
        c.qkv_bias = true;
        if (f.boolean_or("use_sliding_window", false))
            throw Error(path, "use_sliding_window", "Qwen2 sliding-window layers are not supported");
    } else if (f.boolean_or("attention_bias", false)) {
        throw Error(path, "attention_bias", "attention biases are supported for qwen2 only");
    }
    if (c.arch == Arch::Mistral) c.sliding_window = f.integer_or("sliding_window", 0);
    validate(c);
    return c;
}

ModelConfig config_from_gguf(const GgufFile& gguf) {
    ModelConfig c;
    c.source = gguf.path();
    std::string arch = gguf.get_string("general.architecture");
    if (arch == "llama") c.arch = Arch::Llama;
    else if (arch == "qwen2") c.arch = Arch::Qwen2;
    else
        throw Error(gguf.path(), "general.architecture",
                    "architecture '" + arch + "' is not supported (llama, qwen2 are)");
    auto key = [&](const char* suffix) { return arch + "." + suffix; };
    auto uint_or = [&](const std::string& k, int64_t fallback) {
        return gguf.find(k) ? int64_t(gguf.get_uint(k)) : fallback;
    };
    c.name = gguf.find("general.name") ? gguf.get_string("general.name") : arch;
    c.n_layer = int64_t(gguf.get_uint(key("block_count")));
    c.n_embd = int64_t(gguf.get_uint(key("embedding_length")));
    c.n_ff = int64_t(gguf.get_uint(key("feed_forward_length")));
    c.n_head = int64_t(gguf.get_uint(key("attention.head_count")));
    c.n_head_kv = uint_or(key("attention.head_count_kv"), c.n_head);
    c.head_dim = uint_or(key("attention.key_length"), c.n_head > 0 ? c.n_embd / c.n_head : 0);
    c.n_ctx = uint_or(key("context_length"), 2048);
    c.rms_eps = gguf.get_float(key("attention.layer_norm_rms_epsilon"));
    c.rope.theta = gguf.find(key("rope.freq_base")) ? gguf.get_float(key("rope.freq_base")) : 10000.0;
    if (gguf.find(key("rope.scaling.type"))) {
        std::string type = gguf.get_string(key("rope.scaling.type"));
        if (type == "linear") {
            c.rope.scaling = RopeConfig::Scaling::Linear;
            c.rope.factor = gguf.get_float(key("rope.scaling.factor"));
        } else if (type != "none") {
            throw Error(gguf.path(), key("rope.scaling.type"),
                        "RoPE scaling '" + type + "' is not supported (none, linear are)");
        }
    }
    if (gguf.find(key("vocab_size"))) c.n_vocab = int64_t(gguf.get_uint(key("vocab_size")));
    else c.n_vocab = int64_t(gguf.get_string_array("tokenizer.ggml.tokens").size());
    c.tied_embeddings = gguf.tensor("output.weight") == nullptr;
    c.qkv_bias = c.arch == Arch::Qwen2;
    if (uint_or(key("rope.dimension_count"), c.head_dim) != c.head_dim)
        throw Error(gguf.path(), key("rope.dimension_count"), "partial RoPE is not supported");
    validate(c);
    return c;
}

} // namespace kvscope
