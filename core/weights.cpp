// Model::load: reads a GGUF file or a Hugging Face directory into fp32 tensors named by
// role, checks each against the shape the config implies, then fuses and moves them to
// the compute device and dtype.
#include "core/model.h"

#include "core/error.h"
#include "core/gguf.h"
#include "core/safetensors.h"
#include "kernels/dequant.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <memory>
#include <sstream>

namespace kvscope {

namespace {

std::string shape_text(at::IntArrayRef shape) {
    std::ostringstream out;
    out << '[';
    for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
    out << ']';
    return out.str();
}

// Where tensors come from: the two formats behind one small interface.
class TensorSource {
public:
    virtual ~TensorSource() = default;
    virtual bool has(const std::string& name) const = 0;
    // The tensor as fp32 on the CPU; throws if absent or not of `shape`.
    virtual at::Tensor read(const std::string& name, at::IntArrayRef shape) const = 0;
    virtual const std::string& file_of(const std::string& name) const = 0;
    // The tensor's ggml blocks when the file stores it quantized; rows undefined otherwise.
    virtual BlockMatrix read_blocks(const std::string& name) const { return {}; }

    void check_shape(const std::string& name, at::IntArrayRef actual, at::IntArrayRef expected) const {
        if (actual != expected)
            throw Error(file_of(name), "tensor '" + name + "'",
                        "shape " + shape_text(actual) + " contradicts the config, which implies " +
                            shape_text(expected));
    }
};

class GgufSource final : public TensorSource {
public:
    explicit GgufSource(const GgufFile& gguf) : gguf_(gguf) {}
    bool has(const std::string& name) const override { return gguf_.tensor(name) != nullptr; }
    const std::string& file_of(const std::string&) const override { return gguf_.path(); }

    at::Tensor read(const std::string& name, at::IntArrayRef shape) const override {
        const GgufTensorInfo* info = gguf_.tensor(name);
        if (!info) throw Error(gguf_.path(), "tensor '" + name + "'", "missing");
        // ggml lists dims fastest first; PyTorch slowest first.
        std::vector<int64_t> torch_shape(info->ne.rbegin(), info->ne.rend());
        check_shape(name, torch_shape, shape);
        at::Tensor out = at::empty(torch_shape, at::kFloat);
        kernels::dequantize(info->type, gguf_.tensor_data(*info), out.data_ptr<float>(), info->n_elements());
        return out;
    }

    BlockMatrix read_blocks(const std::string& name) const override {
        const GgufTensorInfo* info = gguf_.tensor(name);
        if (!info || info->type == kernels::GgmlType::F32 || info->ne.size() != 2) return {};
        const int64_t rows = info->ne[1], row_bytes = int64_t(info->n_bytes) / rows;
        // A copy: the model outlives the file's mapping.
        at::Tensor blocks = at::from_blob(const_cast<uint8_t*>(gguf_.tensor_data(*info)), {rows, row_bytes}, at::kByte);
        return {info->type, blocks.clone()};
    }

private:
    const GgufFile& gguf_;
};

class SafetensorsSource final : public TensorSource {
public:
    // `dir` is named in errors about a tensor that no file holds.
    SafetensorsSource(const SafetensorsModel& model, const std::string& dir) : model_(model), dir_(dir) {}
    bool has(const std::string& name) const override { return model_.find(name) != nullptr; }
    const std::string& file_of(const std::string& name) const override {
        const StTensor* t = model_.find(name);
        return t ? t->file : dir_;
    }

    at::Tensor read(const std::string& name, at::IntArrayRef shape) const override {
        const StTensor* t = model_.find(name);
        if (!t) throw Error(file_of(name), "tensor '" + name + "'", "missing");
        check_shape(name, t->shape, shape);
        at::ScalarType type;
        switch (t->dtype) {
        case StDtype::F32: type = at::kFloat; break;
        case StDtype::F16: type = at::kHalf; break;
        case StDtype::BF16: type = at::kBFloat16; break;
        default:
            throw Error(t->file, "tensor '" + name + "'",
                        std::string("dtype ") + st_dtype_name(t->dtype) + " is not a float weight type");
        }
        // from_blob does not copy; to() makes the owned fp32 copy (clone when already fp32).
        at::Tensor view = at::from_blob(const_cast<uint8_t*>(t->data), t->shape, at::TensorOptions().dtype(type));
        return type == at::kFloat ? view.clone() : view.to(at::kFloat);
    }

private:
    const SafetensorsModel& model_;
    std::string dir_;
};

// Tensor names of each format, by role.
struct Names {
    bool gguf;
    std::string global(const char* gguf_name, const char* hf_name) const { return gguf ? gguf_name : hf_name; }
    std::string layer(int64_t il, const char* gguf_name, const char* hf_name) const {
        return gguf ? "blk." + std::to_string(il) + "." + gguf_name
                    : "model.layers." + std::to_string(il) + "." + hf_name;
    }
};

// llama.cpp's converter reorders the rows of Llama's q/k projections so that RoPE can
// rotate adjacent pairs; undo it to get Hugging Face's half-split layout back.
at::Tensor unpermute_rope_rows(const at::Tensor& w, int64_t n_head) {
    const int64_t rows = w.size(0);
    std::vector<int64_t> shape{n_head, rows / n_head / 2, 2};
    for (int64_t d = 1; d < w.dim(); ++d) shape.push_back(w.size(d));
    return w.reshape(shape).transpose(1, 2).reshape(w.sizes()).contiguous();
}

// One part of a Linear: a tensor, its rows, and the head count to un-permute by (0: none).
struct Part {
    std::string name;
    int64_t rows;
    int64_t unpermute_heads = 0;
};

ModelWeights read_weights(const TensorSource& src, const ModelConfig& c, bool gguf,
                          const LoadOptions& options, std::vector<std::string>& warnings) {
    Names n{gguf};
    const int64_t q_rows = c.n_head * c.head_dim, kv_rows = c.n_head_kv * c.head_dim;
    const int64_t total = c.n_layer + 2;
    const bool keep_blocks = options.block_weights && options.device.is_cpu() && options.dtype == at::kFloat;
    auto progress = [&](int64_t done, const std::string& what) {
        if (options.progress) options.progress(double(done) / double(total), what);
    };
    auto read = [&](const std::string& name, at::IntArrayRef shape) {
        at::Tensor t = src.read(name, shape);
        int64_t bad = t.numel() - at::isfinite(t).sum().item<int64_t>();
        if (bad > 0)
            warnings.push_back(src.file_of(name) + ": tensor '" + name + "': " + std::to_string(bad) +
                               " NaN or Inf values");
        return t;
    };
    // Parts stacked by rows, as fp32 and, when every part is quantized alike, as blocks.
    auto linear = [&](const std::vector<Part>& parts, int64_t cols) {
        std::vector<at::Tensor> weights, blocks;
        for (const Part& p : parts) {
            at::Tensor w = read(p.name, {p.rows, cols});
            weights.push_back(p.unpermute_heads ? unpermute_rope_rows(w, p.unpermute_heads) : w);
        }
        Linear l{weights.size() == 1 ? weights[0] : at::cat(weights), {}, {}};
        for (const Part& p : parts) {
            BlockMatrix b = keep_blocks ? src.read_blocks(p.name) : BlockMatrix{};
            if (!b.rows.defined() || (!blocks.empty() && b.type != l.blocks.type)) return l;
            l.blocks.type = b.type;
            blocks.push_back(p.unpermute_heads ? unpermute_rope_rows(b.rows, p.unpermute_heads) : b.rows);
        }
        l.blocks.rows = blocks.size() == 1 ? blocks[0] : at::cat(blocks);
        return l;
    };
    // llama.cpp permutes the q/k rows of Llama and Mistral, not of Qwen2.
    const bool permuted = gguf && c.arch != Arch::Qwen2;
    const int64_t q_heads = permuted ? c.n_head : 0, k_heads = permuted ? c.n_head_kv : 0;

    ModelWeights w;
    progress(0, "embeddings");
    const std::string embd_name = n.global("token_embd.weight", "model.embed_tokens.weight");
    const std::string output_name = n.global("output.weight", "lm_head.weight");
    w.tok_embd = read(embd_name, {c.n_vocab, c.n_embd});
    w.output_norm = read(n.global("output_norm.weight", "model.norm.weight"), {c.n_embd});
    if (c.tied_embeddings && !src.has(output_name)) {
        w.output.weight = w.tok_embd;
        if (keep_blocks) w.output.blocks = src.read_blocks(embd_name);
    } else {
        w.output = linear({{output_name, c.n_vocab}}, c.n_embd);
    }
    if (gguf && src.has("rope_freqs.weight")) w.rope_freq_factors = read("rope_freqs.weight", {c.head_dim / 2});

    for (int64_t il = 0; il < c.n_layer; ++il) {
        progress(1 + il, "layer " + std::to_string(il));
        auto name = [&](const char* gguf_name, const char* hf_name) { return n.layer(il, gguf_name, hf_name); };
        LayerWeights L;
        L.attn_norm = read(name("attn_norm.weight", "input_layernorm.weight"), {c.n_embd});
        L.qkv = linear({{name("attn_q.weight", "self_attn.q_proj.weight"), q_rows, q_heads},
                        {name("attn_k.weight", "self_attn.k_proj.weight"), kv_rows, k_heads},
                        {name("attn_v.weight", "self_attn.v_proj.weight"), kv_rows}},
                       c.n_embd);
        if (c.qkv_bias)
            L.qkv.bias = at::cat({read(name("attn_q.bias", "self_attn.q_proj.bias"), {q_rows}),
                                  read(name("attn_k.bias", "self_attn.k_proj.bias"), {kv_rows}),
                                  read(name("attn_v.bias", "self_attn.v_proj.bias"), {kv_rows})});
        L.o = linear({{name("attn_output.weight", "self_attn.o_proj.weight"), c.n_embd}}, q_rows);
        L.ffn_norm = read(name("ffn_norm.weight", "post_attention_layernorm.weight"), {c.n_embd});
        L.gate_up = linear({{name("ffn_gate.weight", "mlp.gate_proj.weight"), c.n_ff},
                            {name("ffn_up.weight", "mlp.up_proj.weight"), c.n_ff}},
                           c.n_embd);
        L.down = linear({{name("ffn_down.weight", "mlp.down_proj.weight"), c.n_embd}}, c.n_ff);
        w.layers.push_back(std::move(L));
    }
    progress(total, "done");
    return w;
}

// Every tensor on the compute device, in the compute dtype (norms too: RMSNorm runs in
// fp32 on the activations and multiplies by the weight in the compute dtype, as
// transformers does). Blocks stay on the CPU, where they are used.
void move_to(ModelWeights& w, c10::Device device, c10::ScalarType dtype) {
    auto move = [&](at::Tensor& t) {
        if (t.defined()) t = t.to(device, dtype);
    };
    auto move_linear = [&](Linear& l) {
        move(l.weight);
        move(l.bias);
    };
    const bool tied = w.output.weight.is_same(w.tok_embd);
    move(w.tok_embd);
    if (tied) w.output.weight = w.tok_embd;
    else move_linear(w.output);
    move(w.output_norm);
    if (w.rope_freq_factors.defined()) w.rope_freq_factors = w.rope_freq_factors.to(device, at::kFloat);
    for (LayerWeights& L : w.layers) {
        move(L.attn_norm);
        move(L.ffn_norm);
        for (Linear* l : {&L.qkv, &L.o, &L.gate_up, &L.down}) move_linear(*l);
    }
}

bool is_gguf_file(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    char magic[4] = {};
    size_t got = std::fread(magic, 1, 4, f);
    std::fclose(f);
    return got == 4 && std::string(magic, 4) == "GGUF";
}

} // namespace

Model Model::load(const std::string& path, const LoadOptions& options) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::exists(path, ec)) throw Error(path, "model", "no such file or directory");
    if (options.dtype != at::kFloat && options.dtype != at::kBFloat16 && options.dtype != at::kHalf)
        throw Error(path, "dtype", "compute dtype must be float32, bfloat16 or float16");

    std::vector<std::string> warnings;
    auto finish = [&](ModelConfig config, Tokenizer tokenizer, ModelWeights weights) {
        move_to(weights, options.device, options.dtype);
        Model m(std::move(config), std::move(tokenizer), std::move(weights), options.device, options.dtype);
        m.warnings_ = std::move(warnings);
        return m;
    };
    if (fs::is_directory(path, ec)) {
        if (!fs::exists(fs::path(path) / "config.json", ec))
            throw Error(path, "model", "a directory without config.json: not a Hugging Face model directory");
        ModelConfig config = config_from_hf_json((fs::path(path) / "config.json").string());
        if (config.name == arch_name(config.arch)) config.name = fs::path(path).filename().string();
        Tokenizer tokenizer = Tokenizer::from_hf_dir(path);
        SafetensorsModel st = SafetensorsModel::open_dir(path);
        ModelWeights weights = read_weights(SafetensorsSource(st, path), config, false, options, warnings);
        return finish(std::move(config), std::move(tokenizer), std::move(weights));
    }
    if (!is_gguf_file(path))
        throw Error(path, "magic", "not a GGUF file (and not a Hugging Face model directory)");
    GgufFile gguf = GgufFile::open(path);
    ModelConfig config = config_from_gguf(gguf);
    Tokenizer tokenizer = Tokenizer::from_gguf(gguf);
    ModelWeights weights = read_weights(GgufSource(gguf), config, true, options, warnings);
    return finish(std::move(config), std::move(tokenizer), std::move(weights));
}

} // namespace kvscope
