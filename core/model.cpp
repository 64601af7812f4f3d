// The Llama-family forward pass (Llama 2/3, Mistral, Qwen2, SmolLM2): RMSNorm,
// grouped-query attention with RoPE through a KvCache, SwiGLU. One code path for CPU and
// CUDA; the dtype is the model's compute dtype, with norms, softmax and logits in fp32.
#include "core/model.h"

#include "core/error.h"
#include "core/kv_cache.h"
#include "kernels/quant_matvec.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>

namespace kvscope {

namespace {

// x * rsqrt(mean(x^2) + eps) in fp32, cast back, times the weight (transformers' order).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
    at::Tensor xf = x.to(at::kFloat);
    xf = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
    return weight * xf.to(x.scalar_type());
}

// One row times a BlockMatrix, split by rows over the CPU threads.
at::Tensor project_blocks(const at::Tensor& x, const Linear& l) {
    const BlockMatrix& b = l.blocks;
    const int64_t rows = b.rows.size(0), row_bytes = b.rows.size(1), cols = x.size(1);
    at::Tensor in = x.contiguous();
    at::Tensor y = at::empty({1, rows}, x.options());
    const uint8_t* w = b.rows.data_ptr<uint8_t>();
    const float* xs = in.data_ptr<float>();
    float* ys = y.data_ptr<float>();
    at::parallel_for(0, rows, /*grain_size=*/32, [&](int64_t begin, int64_t end) {
        kernels::quant_matvec(b.type, w, row_bytes, begin, end, cols, xs, ys);
    });
    return l.bias.defined() ? y + l.bias : y;
}

// x W^T + b. A single row (decode) reads the quantized blocks when the model has them,
// else goes through a matrix-vector product: libtorch 1.13 sends a one-row matmul
// through a GEMM path that is 2-6x slower on CPU than its GEMV.
at::Tensor project(const at::Tensor& x, const Linear& l) {
    if (x.size(0) != 1 || !x.is_cpu()) return at::linear(x, l.weight, l.bias);
    if (l.blocks.rows.defined()) return project_blocks(x, l);
    at::Tensor y = at::mv(l.weight, x[0]);
    return (l.bias.defined() ? y + l.bias : y).unsqueeze(0);
}

// RoPE on the half-split layout: x * cos + rotate_half(x) * sin. x is [heads, T, head_dim].
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    const int64_t half = x.size(-1) / 2;
    at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
    return x * cos + rotated * sin;
}

// The RoPE frequencies, with the model's context scaling applied (formulas as in the
// Llama 3 release and transformers' rope utilities).
at::Tensor rope_inverse_frequencies(const ModelConfig& c, const at::Tensor& freq_factors) {
    at::Tensor exponent = at::arange(0, c.head_dim, 2, at::kLong).to(at::kFloat) / double(c.head_dim);
    at::Tensor inv_freq = 1.0 / at::pow(at::scalar_tensor(c.rope.theta, at::kFloat), exponent);
    const RopeConfig& r = c.rope;
    if (r.scaling == RopeConfig::Scaling::Linear) inv_freq = inv_freq / r.factor;
    if (r.scaling == RopeConfig::Scaling::Llama3) {
        const double low_wavelen = double(r.original_context) / r.low_freq_factor;
        const double high_wavelen = double(r.original_context) / r.high_freq_factor;
        at::Tensor wavelen = 2 * M_PI / inv_freq;
        at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / r.factor, inv_freq);
        at::Tensor smooth = (double(r.original_context) / wavelen - r.low_freq_factor) /
                            (r.high_freq_factor - r.low_freq_factor);
        at::Tensor smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
        at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
        inv_freq = at::where(medium, smoothed, scaled);
    }
    if (freq_factors.defined()) inv_freq = inv_freq / freq_factors.to(at::kCPU);
    return inv_freq;
}

} // namespace

Model::Model(ModelConfig config, Tokenizer tokenizer, ModelWeights weights, c10::Device device,
             c10::ScalarType dtype)
    : config_(std::move(config)), tokenizer_(std::move(tokenizer)), weights_(std::move(weights)),
      device_(device), dtype_(dtype) {
    inv_freq_ = rope_inverse_frequencies(config_, weights_.rope_freq_factors).to(device_);
}

Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

int64_t Model::n_params() const {
    auto count = [](const at::Tensor& t) { return t.defined() ? t.numel() : 0; };
    int64_t n = count(weights_.tok_embd) + count(weights_.output_norm);
    if (!weights_.output.weight.is_same(weights_.tok_embd)) n += count(weights_.output.weight);
    for (const LayerWeights& L : weights_.layers) {
        n += count(L.attn_norm) + count(L.ffn_norm);
        for (const Linear* l : {&L.qkv, &L.o, &L.gate_up, &L.down}) n += count(l->weight) + count(l->bias);
    }
    return n;
}

at::Tensor Model::rope_tables(int64_t first_pos, int64_t n) const {
    at::Tensor pos = at::arange(first_pos, first_pos + n, inv_freq_.options().dtype(at::kLong)).to(at::kFloat);
    at::Tensor angles = at::outer(pos, inv_freq_);     // [n, head_dim / 2], fp32
    at::Tensor full = at::cat({angles, angles}, -1);   // [n, head_dim]
    return at::stack({full.cos(), full.sin()}).to(dtype_);
}

at::Tensor Model::forward(const std::vector<int32_t>& tokens, KvCache& cache, bool all_logits) const {
    const ModelConfig& c = config_;
    const int64_t T = int64_t(tokens.size());
    const int64_t q_rows = c.n_head * c.head_dim, kv_rows = c.n_head_kv * c.head_dim;
    if (T == 0) throw Error("forward", "tokens", "no tokens to run");
    if (cache.n_past() + T > c.n_ctx)
        throw Error("forward", "context", std::to_string(cache.n_past() + T) + " tokens exceed the model's context of " +
                                              std::to_string(c.n_ctx));
    for (int32_t id : tokens)
        if (id < 0 || id >= c.n_vocab)
            throw Error("forward", "tokens", "token id " + std::to_string(id) + " is outside the vocabulary");

    at::Tensor ids = at::from_blob(const_cast<int32_t*>(tokens.data()), {T}, at::kInt).to(device_, at::kLong);
    at::Tensor x = at::embedding(weights_.tok_embd, ids); // [T, n_embd]
    at::Tensor rope = rope_tables(cache.n_past(), T);
    at::Tensor cos = rope[0], sin = rope[1];

    for (int64_t il = 0; il < c.n_layer; ++il) {
        const LayerWeights& L = weights_.layers[il];
        at::Tensor qkv = project(rms_norm(x, L.attn_norm, c.rms_eps), L.qkv);
        auto heads = [&](int64_t first_row, int64_t n_heads) { // -> [n_heads, T, head_dim]
            return qkv.narrow(1, first_row, n_heads * c.head_dim).view({T, n_heads, c.head_dim}).transpose(0, 1);
        };
        at::Tensor q = apply_rope(heads(0, c.n_head), cos, sin);
        at::Tensor k = apply_rope(heads(q_rows, c.n_head_kv), cos, sin);
        at::Tensor v = heads(q_rows + kv_rows, c.n_head_kv);
        at::Tensor attn = cache.attend(il, q, k, v); // [n_head, T, head_dim]
        x = x + project(attn.transpose(0, 1).reshape({T, q_rows}), L.o);

        at::Tensor gate_up = project(rms_norm(x, L.ffn_norm, c.rms_eps), L.gate_up);
        at::Tensor gate = gate_up.narrow(1, 0, c.n_ff), up = gate_up.narrow(1, c.n_ff, c.n_ff);
        x = x + project(at::silu(gate) * up, L.down);
    }
    cache.commit(T);
    if (!all_logits) x = x.narrow(0, T - 1, 1);
    return project(rms_norm(x, weights_.output_norm, c.rms_eps), weights_.output).to(at::kFloat);
}

} // namespace kvscope
