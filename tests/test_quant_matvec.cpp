// quant_matvec tests: every type it reads, on both instruction sets, against dequantize() of
// each row and a double-precision dot product.
//
// [1] Accuracy: random blocks (random fp16 scales of both signs and many magnitudes, random
//     nibbles / bytes), random x, several shapes and row subranges; |y - ref| must be within
//     1e-5 of sum |w*x| (the fp32 dequantized product differs only by summation order).
// [2] Split invariance: any partition of the row range gives bit-identical y, and rows
//     outside the range are not written.
// [3] The dispatching entry point, threads, unaligned inputs, padded rows, bad arguments.
#include "kernels/dequant.h"
#include "kernels/ggml_types.h"
#include "kernels/quant_matvec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using kvscope::kernels::dequantize;
using kvscope::kernels::ggml_type_info;
using kvscope::kernels::GgmlType;
using kvscope::kernels::GgmlTypeInfo;
using kvscope::kernels::MatvecIsa;
using kvscope::kernels::quant_matvec;
using kvscope::kernels::quant_matvec_has_kernel;
using kvscope::kernels::quant_matvec_isa;
using kvscope::kernels::quant_matvec_isa_supported;
using kvscope::kernels::quant_matvec_with_isa;

const GgmlType kTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                           GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

const GgmlTypeInfo& info_of(GgmlType type) { return *ggml_type_info(static_cast<uint32_t>(type)); }

std::string isa_name(MatvecIsa isa) { return isa == MatvecIsa::Avx2 ? "avx2" : "scalar"; }

void put_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, sizeof v); }

// A random finite half: either sign, exponent 2^-10 .. 2^4, sometimes zero or subnormal.
uint16_t random_half(std::mt19937& rng) {
    const uint32_t r = rng();
    const uint16_t sign = (r & 1) ? 0x8000 : 0;
    const uint16_t mantissa = (r >> 1) & 0x3ff;
    const uint32_t kind = (r >> 11) % 16;
    if (kind == 0) return sign;                             // zero
    if (kind == 1) return static_cast<uint16_t>(sign | mantissa); // subnormal
    const uint16_t exponent = static_cast<uint16_t>(5 + (r >> 15) % 15); // 2^-10 .. 2^4
    return static_cast<uint16_t>(sign | (exponent << 10) | mantissa);
}

float random_float(std::mt19937& rng) { return std::uniform_real_distribution<float>(-2.0f, 2.0f)(rng); }

// One row of n_cols elements of `type` with random contents (finite values only).
void fill_row(GgmlType type, int64_t n_cols, std::mt19937& rng, uint8_t* row) {
    const GgmlTypeInfo& info = info_of(type);
    const int64_t n_blocks = n_cols / info.block_elems;
    const size_t bytes = static_cast<size_t>(n_blocks) * info.block_bytes;
    for (size_t i = 0; i < bytes; ++i) row[i] = static_cast<uint8_t>(rng());
    for (int64_t b = 0; b < n_blocks; ++b) {
        uint8_t* blk = row + b * info.block_bytes;
        switch (type) {
        case GgmlType::F32: {
            const float v = random_float(rng);
            std::memcpy(blk, &v, sizeof v);
            break;
        }
        case GgmlType::F16: put_u16(blk, random_half(rng)); break;
        case GgmlType::BF16: {
            const float v = random_float(rng);
            uint32_t bits;
            std::memcpy(&bits, &v, sizeof bits);
            put_u16(blk, static_cast<uint16_t>(bits >> 16));
            break;
        }
        case GgmlType::Q4_0:
        case GgmlType::Q8_0: put_u16(blk, random_half(rng)); break;
        case GgmlType::Q4_1:
        case GgmlType::Q4_K:
        case GgmlType::Q5_K:
            put_u16(blk, random_half(rng));
            put_u16(blk + 2, random_half(rng));
            break;
        case GgmlType::Q6_K: put_u16(blk + 208, random_half(rng)); break;
        }
    }
}

struct Matrix {
    GgmlType type;
    int64_t rows, n_cols, row_bytes;
    std::vector<uint8_t> data;
};

// pad: extra bytes after each row (row_bytes > the row's size).
Matrix random_matrix(GgmlType type, int64_t rows, int64_t n_cols, int64_t pad, std::mt19937& rng) {
    const GgmlTypeInfo& info = info_of(type);
    Matrix m{type, rows, n_cols, n_cols / info.block_elems * static_cast<int64_t>(info.block_bytes) + pad, {}};
    m.data.assign(static_cast<size_t>(m.rows * m.row_bytes), 0xAB);
    for (int64_t r = 0; r < rows; ++r) fill_row(type, n_cols, rng, m.data.data() + r * m.row_bytes);
    return m;
}

std::vector<float> random_x(int64_t n, std::mt19937& rng) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = random_float(rng);
    return x;
}

struct Reference {
    std::vector<double> y;   // sum w*x in double
    std::vector<double> abs; // sum |w*x|
};

Reference reference(const Matrix& m, const float* x) {
    Reference ref;
    std::vector<float> w(static_cast<size_t>(m.n_cols));
    for (int64_t r = 0; r < m.rows; ++r) {
        dequantize(m.type, m.data.data() + r * m.row_bytes, w.data(), m.n_cols);
        double s = 0.0, a = 0.0;
        for (int64_t c = 0; c < m.n_cols; ++c) {
            const double p = static_cast<double>(w[c]) * static_cast<double>(x[c]);
            s += p;
            a += std::fabs(p);
        }
        ref.y.push_back(s);
        ref.abs.push_back(a);
    }
    return ref;
}

uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

constexpr uint32_t kSentinel = 0x7fc0dead; // a NaN no kernel produces from finite inputs

float sentinel() {
    float f;
    std::memcpy(&f, &kSentinel, sizeof f);
    return f;
}

std::vector<MatvecIsa> isas() {
    std::vector<MatvecIsa> out{MatvecIsa::Scalar};
    if (quant_matvec_isa_supported(MatvecIsa::Avx2)) out.push_back(MatvecIsa::Avx2);
    return out;
}

std::vector<int64_t> column_counts(GgmlType type) {
    const int64_t be = info_of(type).block_elems;
    if (be == 1) return {1, 7, 8, 15, 16, 33, 100, 576, 1536, 2048};
    if (be == 32) return {32, 64, 96, 160, 576, 1536, 2048};
    return {256, 512, 768, 1536, 2048};
}

// ---------------------------------------------------------------------------------------
// [1] Accuracy

TEST(QuantMatvec, MatchesDequantizedDoubleReference) {
    std::mt19937 rng(1234);
    const int64_t row_counts[] = {1, 3, 17, 300};
    for (GgmlType type : kTypes) {
        for (int64_t n_cols : column_counts(type)) {
            for (int64_t rows : row_counts) {
                if (rows * n_cols > 300 * 576 && rows > 17) continue; // keep the big ones few
                const Matrix m = random_matrix(type, rows, n_cols, 0, rng);
                const std::vector<float> x = random_x(n_cols, rng);
                const Reference ref = reference(m, x.data());
                for (MatvecIsa isa : isas()) {
                    SCOPED_TRACE(std::string(info_of(type).name) + " " + isa_name(isa) + " cols=" +
                                 std::to_string(n_cols) + " rows=" + std::to_string(rows));
                    // The whole range, then a middle subrange into a fresh y.
                    std::vector<float> y(static_cast<size_t>(rows), sentinel());
                    quant_matvec_with_isa(isa, type, m.data.data(), m.row_bytes, 0, rows, n_cols, x.data(),
                                          y.data());
                    for (int64_t r = 0; r < rows; ++r) {
                        ASSERT_TRUE(std::isfinite(y[r])) << "row " << r;
                        ASSERT_LE(std::fabs(y[r] - ref.y[r]), 1e-5 * ref.abs[r])
                            << "row " << r << ": " << y[r] << " vs " << ref.y[r] << " (sum |w*x| " << ref.abs[r]
                            << ")";
                    }
                    const int64_t begin = rows / 3, end = rows - rows / 4;
                    std::vector<float> sub(static_cast<size_t>(rows), sentinel());
                    quant_matvec_with_isa(isa, type, m.data.data(), m.row_bytes, begin, end, n_cols, x.data(),
                                          sub.data());
                    for (int64_t r = 0; r < rows; ++r) {
                        if (r >= begin && r < end)
                            ASSERT_EQ(bits_of(sub[r]), bits_of(y[r])) << "row " << r;
                        else
                            ASSERT_EQ(bits_of(sub[r]), kSentinel) << "row " << r << " outside the range was written";
                    }
                }
            }
        }
    }
}

// Hand-built blocks with known values, independent of dequantize().
TEST(QuantMatvec, HandBuiltBlocks) {
    std::vector<float> x(32);
    for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i + 1);
    double sum_x = 0.0, sum_ix = 0.0;
    for (int i = 0; i < 32; ++i) {
        sum_x += x[i];
        sum_ix += (i % 16) * x[i];
    }
    // Q4_1, d = 0.5 (0x3800), m = -2 (0xC000); element i has q = i % 16 (byte j: j | j << 4).
    uint8_t q41[20];
    put_u16(q41, 0x3800);
    put_u16(q41 + 2, 0xC000);
    for (int j = 0; j < 16; ++j) q41[4 + j] = static_cast<uint8_t>(j | (j << 4));
    // Q8_0, d = 0.25 (0x3400); q_i = i - 16.
    uint8_t q80[34];
    put_u16(q80, 0x3400);
    for (int i = 0; i < 32; ++i) q80[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
    double sum_q80 = 0.0;
    for (int i = 0; i < 32; ++i) sum_q80 += 0.25 * (i - 16) * x[i];
    // Q4_0, d = -1 (0xBC00); same nibbles: w_i = -(i % 16 - 8).
    uint8_t q40[18];
    put_u16(q40, 0xBC00);
    std::memcpy(q40 + 2, q41 + 4, 16);
    double sum_q40 = 0.0;
    for (int i = 0; i < 32; ++i) sum_q40 += -1.0 * (i % 16 - 8) * x[i];
    for (MatvecIsa isa : isas()) {
        float y = 0.0f;
        quant_matvec_with_isa(isa, GgmlType::Q4_1, q41, 20, 0, 1, 32, x.data(), &y);
        EXPECT_EQ(y, 0.5 * sum_ix - 2.0 * sum_x) << isa_name(isa);
        quant_matvec_with_isa(isa, GgmlType::Q8_0, q80, 34, 0, 1, 32, x.data(), &y);
        EXPECT_EQ(y, sum_q80) << isa_name(isa);
        quant_matvec_with_isa(isa, GgmlType::Q4_0, q40, 18, 0, 1, 32, x.data(), &y);
        EXPECT_EQ(y, sum_q40) << isa_name(isa);
    }
}

// ---------------------------------------------------------------------------------------
// [2] Split invariance

TEST(QuantMatvec, AnyRowSplitGivesIdenticalResults) {
    std::mt19937 rng(99);
    for (GgmlType type : kTypes) {
        const int64_t n_cols = info_of(type).block_elems == 256 ? 512 : 96;
        const int64_t rows = 67;
        const Matrix m = random_matrix(type, rows, n_cols, 0, rng);
        const std::vector<float> x = random_x(n_cols, rng);
        for (MatvecIsa isa : isas()) {
            SCOPED_TRACE(std::string(info_of(type).name) + " " + isa_name(isa));
            std::vector<float> whole(rows);
            quant_matvec_with_isa(isa, type, m.data.data(), m.row_bytes, 0, rows, n_cols, x.data(), whole.data());
            // One row at a time, then random partitions.
            std::vector<float> y(rows, sentinel());
            for (int64_t r = 0; r < rows; ++r)
                quant_matvec_with_isa(isa, type, m.data.data(), m.row_bytes, r, r + 1, n_cols, x.data(), y.data());
            ASSERT_EQ(0, std::memcmp(y.data(), whole.data(), rows * sizeof(float)));
            for (int trial = 0; trial < 10; ++trial) {
                std::fill(y.begin(), y.end(), sentinel());
                int64_t begin = 0;
                while (begin < rows) {
                    const int64_t end = std::min<int64_t>(rows, begin + 1 + static_cast<int64_t>(rng() % 13));
                    quant_matvec_with_isa(isa, type, m.data.data(), m.row_bytes, begin, end, n_cols, x.data(),
                                          y.data());
                    begin = end;
                }
                ASSERT_EQ(0, std::memcmp(y.data(), whole.data(), rows * sizeof(float))) << "trial " << trial;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// [3] Entry point, threads, alignment, padding, arguments

TEST(QuantMatvec, DispatchUsesTheBestIsa) {
    EXPECT_TRUE(quant_matvec_isa_supported(MatvecIsa::Scalar));
    EXPECT_TRUE(quant_matvec_isa_supported(quant_matvec_isa()));
    std::printf("quant_matvec runs on: %s\n", isa_name(quant_matvec_isa()).c_str());
    std::mt19937 rng(5);
    for (GgmlType type : kTypes) {
        const int64_t n_cols = info_of(type).block_elems == 256 ? 256 : 64;
        const Matrix m = random_matrix(type, 9, n_cols, 0, rng);
        const std::vector<float> x = random_x(n_cols, rng);
        std::vector<float> a(9), b(9);
        quant_matvec(type, m.data.data(), m.row_bytes, 0, 9, n_cols, x.data(), a.data());
        quant_matvec_with_isa(quant_matvec_isa(), type, m.data.data(), m.row_bytes, 0, 9, n_cols, x.data(),
                              b.data());
        EXPECT_EQ(0, std::memcmp(a.data(), b.data(), sizeof(float) * 9)) << info_of(type).name;
    }
    EXPECT_FALSE(quant_matvec_has_kernel(GgmlType::Q5_K));
    for (GgmlType type : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                          GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K})
        EXPECT_TRUE(quant_matvec_has_kernel(type)) << info_of(type).name;
}

TEST(QuantMatvec, UnalignedInputsAndPaddedRows) {
    std::mt19937 rng(7);
    for (GgmlType type : kTypes) {
        const int64_t n_cols = info_of(type).block_elems == 256 ? 512 : 160;
        const int64_t rows = 11;
        const Matrix m = random_matrix(type, rows, n_cols, 3, rng); // odd padding: rows at odd offsets
        // Weights, x and y all one byte (or one float) off their natural alignment.
        std::vector<uint8_t> w(m.data.size() + 1);
        std::memcpy(w.data() + 1, m.data.data(), m.data.size());
        std::vector<float> x(n_cols + 1);
        for (int64_t c = 0; c < n_cols; ++c) x[c + 1] = random_float(rng);
        const Reference ref = reference(m, x.data() + 1);
        for (MatvecIsa isa : isas()) {
            std::vector<float> y(rows + 1);
            quant_matvec_with_isa(isa, type, w.data() + 1, m.row_bytes, 0, rows, n_cols, x.data() + 1, y.data() + 1);
            for (int64_t r = 0; r < rows; ++r)
                ASSERT_LE(std::fabs(y[r + 1] - ref.y[r]), 1e-5 * ref.abs[r])
                    << info_of(type).name << " " << isa_name(isa) << " row " << r;
        }
    }
}

TEST(QuantMatvec, ThreadsSplittingRowsAgreeWithOneCall) {
    std::mt19937 rng(11);
    const int64_t rows = 1000, n_cols = 576;
    for (GgmlType type : {GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q5_K}) {
        const int64_t cols = info_of(type).block_elems == 256 ? 512 : n_cols;
        const Matrix m = random_matrix(type, rows, cols, 0, rng);
        const std::vector<float> x = random_x(cols, rng);
        std::vector<float> one(rows), split(rows);
        quant_matvec(type, m.data.data(), m.row_bytes, 0, rows, cols, x.data(), one.data());
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t)
            threads.emplace_back([&, t] {
                for (int rep = 0; rep < 20; ++rep)
                    quant_matvec(type, m.data.data(), m.row_bytes, rows * t / 4, rows * (t + 1) / 4, cols, x.data(),
                                 split.data());
            });
        for (std::thread& th : threads) th.join();
        EXPECT_EQ(0, std::memcmp(one.data(), split.data(), sizeof(float) * rows)) << info_of(type).name;
    }
}

TEST(QuantMatvec, EmptyRangeAndZeroColumns) {
    const uint8_t w[20] = {};
    const float x[32] = {};
    float y[3] = {sentinel(), sentinel(), sentinel()};
    quant_matvec(GgmlType::Q4_1, w, 20, 1, 1, 32, x, y);
    for (float v : y) EXPECT_EQ(bits_of(v), kSentinel);
    quant_matvec(GgmlType::Q4_1, w, 0, 0, 3, 0, x, y); // no columns: every y is 0
    for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(QuantMatvec, RejectsBadArguments) {
    const uint8_t w[64] = {};
    const float x[64] = {};
    float y[2];
    EXPECT_THROW(quant_matvec(static_cast<GgmlType>(99), w, 18, 0, 1, 32, x, y), std::invalid_argument);
    EXPECT_THROW(quant_matvec(GgmlType::Q4_0, w, 18, 0, 1, 33, x, y), std::invalid_argument); // not whole blocks
    EXPECT_THROW(quant_matvec(GgmlType::Q4_0, w, 17, 0, 1, 32, x, y), std::invalid_argument); // row too short
    EXPECT_THROW(quant_matvec(GgmlType::Q4_0, w, 18, 1, 0, 32, x, y), std::invalid_argument); // reversed
    EXPECT_THROW(quant_matvec(GgmlType::Q4_0, w, 18, -1, 1, 32, x, y), std::invalid_argument);
    EXPECT_THROW(quant_matvec(GgmlType::Q4_K, w, 144, 0, 1, 32, x, y), std::invalid_argument);
}

} // namespace
