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

ModelWeights read_weights(const TensorSource& src, const ModelConfig& c, bool gguf,
                          const LoadOptions& options, std::vector<std::string>& warnings) {
    Names n{gguf};
    const int64_t q_rows = c.n_head * c.head_dim, kv_rows = c.n_head_kv * c.head_dim;
    const int64_t total = c.n_layer + 2;
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
    const bool unpermute = gguf && c.arch != Arch::Qwen2; // llama.cpp permutes Llama/Mistral only

    ModelWeights w;
    progress(0, "embeddings");
    w.tok_embd = read(n.global("token_embd.weight", "model.embed_tokens.weight"), {c.n_vocab, c.n_embd});
    w.output_norm = read(n.global("output_norm.weight", "model.norm.weight"), {c.n_embd});
    std::string output_name = n.global("output.weight", "lm_head.weight");
    w.output = (c.tied_embeddings && !src.has(output_name)) ? w.tok_embd : read(output_name, {c.n_vocab, c.n_embd});
    if (gguf && src.has("rope_freqs.weight")) w.rope_freq_factors = read("rope_freqs.weight", {c.head_dim / 2});

    for (int64_t il = 0; il < c.n_layer; ++il) {
        progress(1 + il, "layer " + std::to_string(il));
        LayerWeights L;
        L.attn_norm = read(n.layer(il, "attn_norm.weight", "input_layernorm.weight"), {c.n_embd});
        at::Tensor wq = read(n.layer(il, "attn_q.weight", "self_attn.q_proj.weight"), {q_rows, c.n_embd});
        at::Tensor wk = read(n.layer(il, "attn_k.weight", "self_attn.k_proj.weight"), {kv_rows, c.n_embd});
        at::Tensor wv = read(n.layer(il, "attn_v.weight", "self_attn.v_proj.weight"), {kv_rows, c.n_embd});
        if (unpermute) {
            wq = unpermute_rope_rows(wq, c.n_head);
            wk = unpermute_rope_rows(wk, c.n_head_kv);
        }
        L.w_qkv = at::cat({wq, wk, wv}, 0);
        if (c.qkv_bias) {
            L.b_qkv = at::cat({read(n.layer(il, "attn_q.bias", "self_attn.q_proj.bias"), {q_rows}),
                               read(n.layer(il, "attn_k.bias", "self_attn.k_proj.bias"), {kv_rows}),
                               read(n.layer(il, "attn_v.bias", "self_attn.v_proj.bias"), {kv_rows})});
        }
        L.w_o = read(n.layer(il, "attn_output.weight", "self_attn.o_proj.weight"), {c.n_embd, q_rows});
        L.ffn_norm = read(n.layer(il, "ffn_norm.weight", "post_attention_layernorm.weight"), {c.n_embd});
        L.w_gate_up = at::cat({read(n.layer(il, "ffn_gate.weight", "mlp.gate_proj.weight"), {c.n_ff, c.n_embd}),
                               read(n.layer(il, "ffn_up.weight", "mlp.up_proj.weight"), {c.n_ff, c.n_embd})});
        L.w_down = read(n.layer(il, "ffn_down.weight", "mlp.down_proj.weight"), {c.n_embd, c.n_ff});
        w.layers.push_back(std::move(L));
    }
    progress(total, "done");
    return w;
}

// Every tensor on the compute device, in the compute dtype (norms too: RMSNorm runs in
// fp32 on the activations and multiplies by the weight in the compute dtype, as
// transformers does).
void move_to(ModelWeights& w, c10::Device device, c10::ScalarType dtype) {
    auto move = [&](at::Tensor& t) {
        if (t.defined()) t = t.to(device, dtype);
    };
    const bool tied = w.output.is_same(w.tok_embd);
    move(w.tok_embd);
    w.output = tied ? w.tok_embd : w.output;
    if (!tied) move(w.output);
    move(w.output_norm);
    if (w.rope_freq_factors.defined()) w.rope_freq_factors = w.rope_freq_factors.to(device, at::kFloat);
    for (LayerWeights& L : w.layers) {
        for (at::Tensor* t : {&L.attn_norm, &L.w_qkv, &L.b_qkv, &L.w_o, &L.ffn_norm, &L.w_gate_up, &L.w_down})
            move(*t);
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
