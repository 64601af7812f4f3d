// quant_matvec speed on the default model's shapes (SmolLM2-135M: hidden 576, kv 192,
// intermediate 1536, vocab 49152, 30 layers), one thread.
//
//   BM_Matvec/<type>/<shape>/<cache>  one matrix-vector product; cache "hot" reuses one copy
//       of the matrix (it stays in L2/L3: compute bound), "cold" cycles through copies
//       totalling > 128 MB so every call reads DRAM, as decode does.
//   BM_TokenMatvecs/<weights>  every matvec of one decoded token: 30 x (q|k|v 960x576,
//       o 576x576, gate|up 3072x576, down 576x1536) + lm_head 49152x576, each layer its own
//       buffer. weights: "q4_1" = the default model (Q4_1 layers, Q8_0 lm_head), "f32" =
//       the same matrices as fp32 (today's dequantize-at-load path).
// Counters: bytes_per_second (weights read, binary prefixes) and GB/s (decimal).
// "scalar" rows run the portable kernels, for comparison with the AVX2 ones.
#include "kernels/ggml_types.h"
#include "kernels/quant_matvec.h"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using kvscope::kernels::ggml_type_info;
using kvscope::kernels::GgmlType;
using kvscope::kernels::MatvecIsa;
using kvscope::kernels::quant_matvec_isa;
using kvscope::kernels::quant_matvec_with_isa;

struct Matrix {
    GgmlType type;
    int64_t rows, cols, row_bytes;
    std::vector<uint8_t> data;
};

// Random blocks with a moderate fp16 scale in every scale field (no inf/nan/subnormal).
Matrix random_matrix(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng) {
    const auto* info = ggml_type_info(static_cast<uint32_t>(type));
    Matrix m{type, rows, cols, cols / info->block_elems * static_cast<int64_t>(info->block_bytes), {}};
    m.data.resize(static_cast<size_t>(rows * m.row_bytes));
    for (size_t i = 0; i + 4 <= m.data.size(); i += 4) {
        const uint32_t r = rng();
        std::memcpy(&m.data[i], &r, 4);
    }
    const int64_t n_blocks = rows * cols / info->block_elems;
    for (int64_t b = 0; b < n_blocks; ++b) {
        uint8_t* blk = m.data.data() + b * info->block_bytes;
        const uint16_t half = static_cast<uint16_t>(0x2000 + (rng() & 0x0fff)) | ((rng() & 1) << 15);
        if (type == GgmlType::F32) {
            const float v = std::uniform_real_distribution<float>(-0.1f, 0.1f)(rng);
            std::memcpy(blk, &v, 4);
        } else if (type == GgmlType::F16 || type == GgmlType::Q4_0 || type == GgmlType::Q8_0) {
            std::memcpy(blk, &half, 2);
        } else if (type == GgmlType::Q4_1 || type == GgmlType::Q4_K) {
            std::memcpy(blk, &half, 2);
            std::memcpy(blk + 2, &half, 2);
        } else if (type == GgmlType::Q6_K) {
            std::memcpy(blk + 208, &half, 2);
        }
    }
    return m;
}

std::vector<float> random_x(int64_t n, std::mt19937& rng) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
    return x;
}

void run(MatvecIsa isa, const Matrix& m, const float* x, float* y) {
    quant_matvec_with_isa(isa, m.type, m.data.data(), m.row_bytes, 0, m.rows, m.cols, x, y);
}

void set_byte_counters(benchmark::State& state, int64_t bytes_per_iteration) {
    state.SetBytesProcessed(state.iterations() * bytes_per_iteration);
    state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes_per_iteration) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

// ---------------------------------------------------------------------------------------
// One matrix

struct Shape {
    const char* name;
    int64_t rows, cols;
};

const Shape kShapes[] = {
    {"q_576x576", 576, 576},        {"kv_192x576", 192, 576},      {"gate_up_1536x576", 1536, 576},
    {"down_576x1536", 576, 1536},   {"lm_head_49152x576", 49152, 576},
};

void BM_Matvec(benchmark::State& state, GgmlType type, MatvecIsa isa, Shape shape, bool cold) {
    if (!kvscope::kernels::quant_matvec_isa_supported(isa)) {
        state.SkipWithError("this CPU lacks AVX2");
        return;
    }
    std::mt19937 rng(42);
    const Matrix first = random_matrix(type, shape.rows, shape.cols, rng);
    const int64_t bytes = static_cast<int64_t>(first.data.size());
    std::vector<Matrix> copies{first};
    if (cold)
        while (static_cast<int64_t>(copies.size()) * bytes < (int64_t{128} << 20))
            copies.push_back(random_matrix(type, shape.rows, shape.cols, rng));
    const std::vector<float> x = random_x(shape.cols, rng);
    std::vector<float> y(static_cast<size_t>(shape.rows));
    size_t next = 0;
    for (auto _ : state) {
        run(isa, copies[next], x.data(), y.data());
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
        if (++next == copies.size()) next = 0;
    }
    set_byte_counters(state, bytes);
}

// ---------------------------------------------------------------------------------------
// One token's matvecs

struct Model {
    std::vector<Matrix> mats; // in call order
    int64_t bytes = 0;
};

Model token_model(GgmlType layer_type, GgmlType head_type) {
    std::mt19937 rng(7);
    Model model;
    for (int layer = 0; layer < 30; ++layer) {
        for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{960, 576}, {576, 576}, {3072, 576}, {576, 1536}})
            model.mats.push_back(random_matrix(layer_type, rows, cols, rng));
    }
    model.mats.push_back(random_matrix(head_type, 49152, 576, rng));
    for (const Matrix& m : model.mats) model.bytes += static_cast<int64_t>(m.data.size());
    return model;
}

void BM_TokenMatvecs(benchmark::State& state, GgmlType layer_type, GgmlType head_type, MatvecIsa isa) {
    if (!kvscope::kernels::quant_matvec_isa_supported(isa)) {
        state.SkipWithError("this CPU lacks AVX2");
        return;
    }
    const Model model = token_model(layer_type, head_type);
    std::mt19937 rng(3);
    const std::vector<float> x = random_x(1536, rng);
    std::vector<float> y(49152);
    for (auto _ : state) {
        for (const Matrix& m : model.mats) run(isa, m, x.data(), y.data());
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    set_byte_counters(state, model.bytes);
    state.counters["MB/token"] = static_cast<double>(model.bytes) * 1e-6;
}

std::string type_name(GgmlType t) { return ggml_type_info(static_cast<uint32_t>(t))->name; }

// Registration: the default model's types on every shape, hot and cold, on the best ISA;
// the scalar kernels on the Q4_1 layer shapes for comparison.
const bool registered = [] {
    const MatvecIsa best = quant_matvec_isa();
    for (const Shape& shape : kShapes) {
        for (GgmlType type : {GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F32}) {
            for (bool cold : {false, true}) {
                const std::string name = "BM_Matvec/" + type_name(type) + "/" + shape.name + (cold ? "/cold" : "/hot");
                benchmark::RegisterBenchmark(name.c_str(), BM_Matvec, type, best, shape, cold);
            }
        }
        if (shape.rows != 49152) {
            const std::string name = std::string("BM_Matvec/Q4_1_scalar/") + shape.name + "/hot";
            benchmark::RegisterBenchmark(name.c_str(), BM_Matvec, GgmlType::Q4_1, MatvecIsa::Scalar, shape, false);
        }
    }
    for (GgmlType type : {GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::F16}) {
        const Shape shape{"gate_up_1536x768", 1536, 768}; // 768: a whole number of K-quant blocks
        const std::string name = "BM_Matvec/" + type_name(type) + "/" + shape.name + "/cold";
        benchmark::RegisterBenchmark(name.c_str(), BM_Matvec, type, best, shape, true);
    }
    benchmark::RegisterBenchmark("BM_TokenMatvecs/q4_1", BM_TokenMatvecs, GgmlType::Q4_1, GgmlType::Q8_0, best)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("BM_TokenMatvecs/q4_1_scalar", BM_TokenMatvecs, GgmlType::Q4_1, GgmlType::Q8_0,
                                 MatvecIsa::Scalar)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("BM_TokenMatvecs/f32", BM_TokenMatvecs, GgmlType::F32, GgmlType::F32, best)
        ->Unit(benchmark::kMillisecond);
    return true;
}();

} // namespace
