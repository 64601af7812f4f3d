// Dequantization tests.
//
// [1] Block unit tests: blocks are packed here from chosen quantized values, following the
//     ggml formats as described element by element (which nibble, which scale), and the
//     expected fp32 values come from the format's formula. fp16/bf16 cover all 65536 inputs.
// [2] Parity with an independent reference, PyPI gguf's NumPy dequantizer, run once through
//     tests/reference/dequant_reference.py (cached under the build folder): every tensor of
//     the default model, and a small GGUF the script writes with every type we read
//     (Q4_K/Q5_K/Q6_K included, which the default model lacks).
#include "core/default_model.h"
#include "core/gguf.h"
#include "kernels/dequant.h"
#include "kernels/ggml_types.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <sys/wait.h>

namespace {

namespace fs = std::filesystem;
using kvscope::kernels::dequantize;
using kvscope::kernels::GgmlType;

// ---------------------------------------------------------------------------------------
// Helpers

uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// An IEEE half's value by the textbook formula (finite inputs only).
double half_value(uint16_t h) {
    const int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    const double magnitude = exponent == 0 ? std::ldexp(mantissa, -24)
                                           : std::ldexp(1024 + mantissa, exponent - 25);
    return sign ? -magnitude : magnitude;
}

float half(uint16_t h) { return static_cast<float>(half_value(h)); }

// Quantized bytes placed one byte past an allocation's start, so the kernels must cope with
// unaligned blocks (UBSan flags a misaligned load).
struct Blocks {
    std::vector<uint8_t> storage{0};
    void u8(uint8_t v) { storage.push_back(v); }
    void u16(uint16_t v) { u8(static_cast<uint8_t>(v & 0xff)); u8(static_cast<uint8_t>(v >> 8)); }
    const void* data() const { return storage.data() + 1; }
    size_t size() const { return storage.size() - 1; }
};

std::vector<float> run(GgmlType type, const Blocks& blocks, size_t n) {
    const kvscope::kernels::GgmlTypeInfo* info = kvscope::kernels::ggml_type_info(static_cast<uint32_t>(type));
    EXPECT_EQ(blocks.size(), n / static_cast<size_t>(info->block_elems) * info->block_bytes);
    std::vector<float> out(n, -12345.0f);
    dequantize(type, blocks.data(), out.data(), static_cast<int64_t>(n));
    return out;
}

void expect_same(const std::vector<float>& got, const std::vector<float>& want) {
    ASSERT_EQ(got.size(), want.size());
    int reported = 0;
    for (size_t i = 0; i < got.size() && reported < 10; ++i)
        if (bits_of(got[i]) != bits_of(want[i])) {
            ADD_FAILURE() << "element " << i << ": got " << got[i] << ", want " << want[i];
            ++reported;
        }
}

// fp16 scales used by the block tests: ordinary, negative, tiny, subnormal, zero, largest.
const std::vector<uint16_t> kScales = {0x3C00 /* 1 */,      0xB800 /* -0.5 */, 0x2E66 /* ~0.1 */,
                                       0x1A3F /* ~0.0031 */, 0x0001 /* 2^-24 */, 0x0000,
                                       0x7BFF /* 65504 */,   0xA4D2 /* ~-0.019 */};

// ---------------------------------------------------------------------------------------
// [1] Types and plain floats

TEST(GgmlTypes, BlockLayouts) {
    struct Row { uint32_t id; const char* name; int64_t elems; size_t bytes; };
    const Row rows[] = {{0, "F32", 1, 4},       {1, "F16", 1, 2},       {30, "BF16", 1, 2},
                        {2, "Q4_0", 32, 18},    {3, "Q4_1", 32, 20},    {8, "Q8_0", 32, 34},
                        {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176}, {14, "Q6_K", 256, 210}};
    for (const Row& r : rows) {
        const kvscope::kernels::GgmlTypeInfo* info = kvscope::kernels::ggml_type_info(r.id);
        ASSERT_NE(info, nullptr) << r.name;
        EXPECT_STREQ(info->name, r.name);
        EXPECT_EQ(info->block_elems, r.elems) << r.name;
        EXPECT_EQ(info->block_bytes, r.bytes) << r.name;
    }
    for (uint32_t unsupported : {6u, 7u, 9u, 10u, 11u, 15u, 16u, 24u, 28u, 99u, ~0u})
        EXPECT_EQ(kvscope::kernels::ggml_type_info(unsupported), nullptr) << unsupported;
}

TEST(DequantFloats, EveryFp16Value) {
    Blocks in;
    for (uint32_t h = 0; h < 65536; ++h) in.u16(static_cast<uint16_t>(h));
    const std::vector<float> out = run(GgmlType::F16, in, 65536);
    for (uint32_t h = 0; h < 65536; ++h) {
        const uint32_t sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
        uint32_t want;
        if (exponent == 0x1f) // inf, or nan with its payload kept
            want = sign | 0x7f800000u | (mantissa << 13);
        else
            want = bits_of(half(static_cast<uint16_t>(h))); // exact: fp32 holds every half
        ASSERT_EQ(bits_of(out[h]), want) << "half 0x" << std::hex << h;
    }
    // Spot checks written out.
    EXPECT_EQ(out[0x3C00], 1.0f);
    EXPECT_EQ(out[0xC000], -2.0f);
    EXPECT_EQ(out[0x7BFF], 65504.0f);
    EXPECT_EQ(out[0x0400], std::ldexp(1.0f, -14)); // smallest normal
    EXPECT_EQ(out[0x0001], std::ldexp(1.0f, -24)); // smallest subnormal
    EXPECT_EQ(out[0x03FF], std::ldexp(1023.0f, -24));
    EXPECT_TRUE(std::signbit(out[0x8000]) && out[0x8000] == 0.0f);
    EXPECT_EQ(out[0x7C00], INFINITY);
    EXPECT_EQ(out[0xFC00], -INFINITY);
    EXPECT_TRUE(std::isnan(out[0x7E00]) && std::isnan(out[0xFC01]));
}

TEST(DequantFloats, EveryBf16Value) {
    Blocks in;
    for (uint32_t h = 0; h < 65536; ++h) in.u16(static_cast<uint16_t>(h));
    const std::vector<float> out = run(GgmlType::BF16, in, 65536);
    for (uint32_t h = 0; h < 65536; ++h) ASSERT_EQ(bits_of(out[h]), h << 16) << h;
    EXPECT_EQ(out[0x3F80], 1.0f);
    EXPECT_EQ(out[0xC040], -3.0f);
}

TEST(DequantFloats, F32IsCopied) {
    const std::vector<uint32_t> bits = {0x3F800000u, 0x80000000u, 0x7FC00001u, 0x00000001u, 0xFF800000u};
    Blocks in;
    for (uint32_t b : bits) for (int k = 0; k < 4; ++k) in.u8(static_cast<uint8_t>(b >> (8 * k)));
    const std::vector<float> out = run(GgmlType::F32, in, bits.size());
    for (size_t i = 0; i < bits.size(); ++i) EXPECT_EQ(bits_of(out[i]), bits[i]);
}

TEST(DequantFloats, RefusesPartialBlocks) {
    float out[32];
    uint8_t in[34] = {};
    EXPECT_THROW(dequantize(GgmlType::Q8_0, in, out, 31), std::invalid_argument);
    EXPECT_NO_THROW(dequantize(GgmlType::Q8_0, in, out, 0));
    EXPECT_THROW(dequantize(static_cast<GgmlType>(6), in, out, 32), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------
// [1] 32-element blocks: element e < 16 is the low nibble of byte e, e >= 16 the high
// nibble of byte e - 16.

TEST(DequantBlocks, Q4_0) {
    Blocks in;
    std::vector<float> want;
    for (size_t b = 0; b < kScales.size(); ++b) {
        uint8_t q[32];
        for (int e = 0; e < 32; ++e) q[e] = static_cast<uint8_t>((e * 7 + e / 16 * 5 + b) % 16);
        in.u16(kScales[b]);
        for (int j = 0; j < 16; ++j) in.u8(static_cast<uint8_t>(q[j] | (q[j + 16] << 4)));
        for (int e = 0; e < 32; ++e) want.push_back(static_cast<float>(q[e] - 8) * half(kScales[b]));
    }
    expect_same(run(GgmlType::Q4_0, in, want.size()), want);
}

TEST(DequantBlocks, Q4_1) {
    Blocks in;
    std::vector<float> want;
    for (size_t b = 0; b < kScales.size(); ++b) {
        const uint16_t d = kScales[b], m = kScales[(b + 3) % kScales.size()];
        uint8_t q[32];
        for (int e = 0; e < 32; ++e) q[e] = static_cast<uint8_t>((e * 5 + e / 16 * 3 + 3 * b) % 16);
        in.u16(d);
        in.u16(m);
        for (int j = 0; j < 16; ++j) in.u8(static_cast<uint8_t>(q[j] | (q[j + 16] << 4)));
        for (int e = 0; e < 32; ++e) want.push_back(static_cast<float>(q[e]) * half(d) + half(m));
    }
    expect_same(run(GgmlType::Q4_1, in, want.size()), want);
}

TEST(DequantBlocks, Q8_0) {
    Blocks in;
    std::vector<float> want;
    for (size_t b = 0; b < kScales.size(); ++b) {
        in.u16(kScales[b]);
        for (int e = 0; e < 32; ++e) {
            const int q = static_cast<int>((e * 37 + b * 11) % 256) - 128; // -128..127 over the blocks
            in.u8(static_cast<uint8_t>(q));
            want.push_back(static_cast<float>(q) * half(kScales[b]));
        }
    }
    expect_same(run(GgmlType::Q8_0, in, want.size()), want);
}

// ---------------------------------------------------------------------------------------
// [1] K-quants: 256-element super-blocks.

// The 12-byte scale field of Q4_K/Q5_K: eight 6-bit scales and eight 6-bit mins. Sub-blocks
// 0-3 keep theirs whole in the low 6 bits of bytes 0-3 (scale) and 4-7 (min); sub-blocks 4-7
// keep their low 4 bits in byte 8+i (scale low nibble, min high nibble) and their top 2 bits
// in the top 2 bits of byte i (scale) and byte 4+i (min).
void pack_k4_scales(const uint8_t sc[8], const uint8_t mn[8], Blocks& out) {
    uint8_t bytes[12];
    for (int i = 0; i < 4; ++i) {
        bytes[i] = static_cast<uint8_t>(sc[i] | ((sc[i + 4] >> 4) << 6));
        bytes[i + 4] = static_cast<uint8_t>(mn[i] | ((mn[i + 4] >> 4) << 6));
        bytes[i + 8] = static_cast<uint8_t>((sc[i + 4] & 0x0f) | ((mn[i + 4] & 0x0f) << 4));
    }
    for (uint8_t b : bytes) out.u8(b);
}

struct KBlock {
    uint16_t d, dmin;
    uint8_t sc[8], mn[8];
    uint8_t q[256];
};

// Random super-blocks; the first has every edge value of the 6-bit fields.
std::vector<KBlock> random_k_blocks(int n, int q_bits, std::mt19937& rng) {
    std::vector<KBlock> blocks(n);
    for (int b = 0; b < n; ++b) {
        KBlock& k = blocks[b];
        k.d = kScales[rng() % kScales.size()];
        k.dmin = kScales[rng() % kScales.size()];
        for (int s = 0; s < 8; ++s) {
            k.sc[s] = static_cast<uint8_t>(rng() % 64);
            k.mn[s] = static_cast<uint8_t>(rng() % 64);
        }
        for (int e = 0; e < 256; ++e) k.q[e] = static_cast<uint8_t>(rng() % (1u << q_bits));
    }
    const uint8_t edge_sc[8] = {0, 63, 1, 32, 63, 16, 48, 15};
    const uint8_t edge_mn[8] = {63, 0, 31, 32, 47, 63, 1, 16};
    std::memcpy(blocks[0].sc, edge_sc, 8);
    std::memcpy(blocks[0].mn, edge_mn, 8);
    blocks[0].d = 0x2E66;
    blocks[0].dmin = 0x1A3F;
    return blocks;
}

// In Q4_K and Q5_K, element e lies in 64-element group g = e/64; its sub-block is 2g for the
// first 32 elements of the group and 2g+1 for the next 32; both share the 32 bytes
// qs[32g .. 32g+31]: the first half takes low nibbles, the second half high nibbles.
int k4_sub_block(int e) { return e / 32; }
int k4_byte(int e) { return 32 * (e / 64) + e % 32; }
int k4_shift(int e) { return (e % 64) < 32 ? 0 : 4; }

float k4_value(const KBlock& k, int e, int q) {
    const int s = k4_sub_block(e);
    return half(k.d) * static_cast<float>(k.sc[s]) * static_cast<float>(q) - half(k.dmin) * static_cast<float>(k.mn[s]);
}

TEST(DequantBlocks, Q4_K) {
    std::mt19937 rng(1234);
    const std::vector<KBlock> blocks = random_k_blocks(5, 4, rng);
    Blocks in;
    std::vector<float> want;
    for (const KBlock& k : blocks) {
        in.u16(k.d);
        in.u16(k.dmin);
        pack_k4_scales(k.sc, k.mn, in);
        uint8_t qs[128] = {};
        for (int e = 0; e < 256; ++e) qs[k4_byte(e)] |= static_cast<uint8_t>(k.q[e] << k4_shift(e));
        for (uint8_t b : qs) in.u8(b);
        for (int e = 0; e < 256; ++e) want.push_back(k4_value(k, e, k.q[e]));
    }
    expect_same(run(GgmlType::Q4_K, in, want.size()), want);
}

// Q5_K adds a fifth bit per element: bit (sub-block) of qh[e % 32], stored between the
// scales and the nibbles.
TEST(DequantBlocks, Q5_K) {
    std::mt19937 rng(5678);
    const std::vector<KBlock> blocks = random_k_blocks(5, 5, rng);
    Blocks in;
    std::vector<float> want;
    for (const KBlock& k : blocks) {
        in.u16(k.d);
        in.u16(k.dmin);
        pack_k4_scales(k.sc, k.mn, in);
        uint8_t qh[32] = {}, qs[128] = {};
        for (int e = 0; e < 256; ++e) {
            qs[k4_byte(e)] |= static_cast<uint8_t>((k.q[e] & 0x0f) << k4_shift(e));
            qh[e % 32] |= static_cast<uint8_t>((k.q[e] >> 4) << k4_sub_block(e));
        }
        for (uint8_t b : qh) in.u8(b);
        for (uint8_t b : qs) in.u8(b);
        for (int e = 0; e < 256; ++e) want.push_back(k4_value(k, e, k.q[e]));
    }
    expect_same(run(GgmlType::Q5_K, in, want.size()), want);
}

// Q6_K: ql[128], qh[64], int8 scales[16], fp16 d. One scale per 16 consecutive elements.
// Element e: half h = e/128, quarter k = (e%128)/32, l = e%32. Its low 4 bits are nibble
// k/2 of ql[64h + 32(k%2) + l], its high 2 bits are bits 2k, 2k+1 of qh[32h + l]; the 6-bit
// value is offset by 32.
TEST(DequantBlocks, Q6_K) {
    std::mt19937 rng(91011);
    Blocks in;
    std::vector<float> want;
    for (int b = 0; b < 5; ++b) {
        uint8_t q[256];
        int8_t scales[16];
        for (uint8_t& v : q) v = static_cast<uint8_t>(rng() % 64);
        for (int8_t& s : scales) s = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
        if (b == 0) { // edge values
            q[0] = 0; q[1] = 63; q[255] = 32;
            scales[0] = -128; scales[15] = 127; scales[7] = 0;
        }
        const uint16_t d = kScales[(b * 3) % kScales.size()];
        uint8_t ql[128] = {}, qh[64] = {};
        for (int e = 0; e < 256; ++e) {
            const int h = e / 128, k = (e % 128) / 32, l = e % 32;
            ql[64 * h + 32 * (k % 2) + l] |= static_cast<uint8_t>((q[e] & 0x0f) << (4 * (k / 2)));
            qh[32 * h + l] |= static_cast<uint8_t>((q[e] >> 4) << (2 * k));
            want.push_back(half(d) * static_cast<float>(scales[e / 16]) * static_cast<float>(q[e] - 32));
        }
        for (uint8_t v : ql) in.u8(v);
        for (uint8_t v : qh) in.u8(v);
        for (int8_t s : scales) in.u8(static_cast<uint8_t>(s));
        in.u16(d);
    }
    expect_same(run(GgmlType::Q6_K, in, want.size()), want);
}

// ---------------------------------------------------------------------------------------
// [2] Parity with PyPI gguf's dequantizer

std::string shell_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

std::string reference_python() {
    if (const char* env = std::getenv("KVSCOPE_PYTHON"); env && *env) return env;
    const std::string venv = std::string(KVSCOPE_SOURCE_DIR) + "/.venv/bin/python";
    return fs::exists(venv) ? venv : "";
}

struct Reference {
    std::string error; // why there is no reference; empty when loaded
    std::string dir;
    nlohmann::json model, synthetic;
};

nlohmann::json read_json(const std::string& path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// The cached output is reused while it is newer than the model and the script and was made
// from this model file.
bool reference_is_fresh(const std::string& dir, const std::string& model, const std::string& script) {
    for (const char* name : {"model_reference.json", "synthetic_reference.json", "synthetic.gguf"}) {
        const fs::path p = fs::path(dir) / name;
        std::error_code ec;
        if (!fs::exists(p, ec)) return false;
        const auto t = fs::last_write_time(p, ec);
        if (ec || t < fs::last_write_time(model, ec) || t < fs::last_write_time(script, ec)) return false;
    }
    const nlohmann::json j = read_json(dir + "/model_reference.json");
    return !j.is_discarded() && j.value("model", "") == model &&
           j.value("model_size", uint64_t{0}) == fs::file_size(model);
}

Reference load_reference() {
    Reference ref;
    const std::string model = kvscope::default_model_path();
    if (!fs::exists(model)) {
        ref.error = "the default model is missing at " + model + ": run ./setup.sh to fetch it";
        return ref;
    }
    const std::string script = std::string(KVSCOPE_SOURCE_DIR) + "/tests/reference/dequant_reference.py";
    ref.dir = std::string(KVSCOPE_BINARY_DIR) + "/dequant_reference";
    if (!reference_is_fresh(ref.dir, model, script)) {
        const std::string python = reference_python();
        if (python.empty()) {
            ref.error = "no Python for the reference: set KVSCOPE_PYTHON or run ./setup.sh (makes .venv)";
            return ref;
        }
        const std::string command =
            shell_quote(python) + " " + shell_quote(script) + " " + shell_quote(model) + " " + shell_quote(ref.dir);
        const int status = std::system(command.c_str());
        if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ref.error = "the reference script failed (status " + std::to_string(status) + "): " + command;
            return ref;
        }
    }
    ref.model = read_json(ref.dir + "/model_reference.json");
    ref.synthetic = read_json(ref.dir + "/synthetic_reference.json");
    if (ref.model.is_discarded() || ref.synthetic.is_discarded())
        ref.error = "unreadable reference JSON in " + ref.dir;
    return ref;
}

// Runs the script at most once per test run.
const Reference& reference() {
    static const Reference ref = load_reference();
    return ref;
}

constexpr double kRelTol = 1e-6;

bool close_value(float ours, float theirs) {
    if (std::isnan(ours) || std::isnan(theirs)) return std::isnan(ours) && std::isnan(theirs);
    if (ours == theirs) return true; // also equal infinities
    return std::fabs(double(ours) - double(theirs)) <= kRelTol * std::max(std::fabs(double(ours)), std::fabs(double(theirs)));
}

// The record the script writes, computed on our values (sums over finite values).
struct Sums { double sum = 0, sum_abs = 0, sum_sq = 0, weighted = 0, weighted_abs = 0; };

Sums sums_of(const float* x, int64_t n, int64_t period) {
    Sums s;
    for (int64_t i = 0; i < n; ++i) {
        if (!std::isfinite(x[i])) continue;
        const double v = x[i], w = static_cast<double>(i % period + 1);
        s.sum += v;
        s.sum_abs += std::fabs(v);
        s.sum_sq += v * v;
        s.weighted += v * w;
        s.weighted_abs += std::fabs(v) * w;
    }
    return s;
}

bool close_sum(double ours, double theirs, double scale) {
    return std::fabs(ours - theirs) <= kRelTol * scale + 1e-30;
}

// Compares one tensor's values against its reference record; returns the number of values
// compared.
size_t check_tensor(const nlohmann::json& rec, const float* x, int64_t n, bool all_values) {
    const std::string name = rec.at("name");
    SCOPED_TRACE("tensor " + name);
    EXPECT_EQ(rec.at("count").get<int64_t>(), n);
    size_t compared = 0;
    int reported = 0;
    auto compare = [&](int64_t index, uint32_t ref_bits, const char* what) {
        ++compared;
        if (index < 0 || index >= n) { ADD_FAILURE() << what << " index " << index << " out of range"; return; }
        if (!close_value(x[index], float_of(ref_bits)) && reported++ < 5)
            ADD_FAILURE() << what << " element " << index << ": ours " << x[index] << ", reference "
                          << float_of(ref_bits);
    };
    const std::vector<uint32_t> head = rec.at("head"), tail = rec.at("tail"), spread = rec.at("spread");
    const std::vector<int64_t> spread_index = rec.at("spread_index");
    for (size_t i = 0; i < head.size(); ++i) compare(static_cast<int64_t>(i), head[i], "head");
    for (size_t i = 0; i < tail.size(); ++i)
        compare(n - static_cast<int64_t>(tail.size()) + static_cast<int64_t>(i), tail[i], "tail");
    EXPECT_EQ(spread.size(), spread_index.size());
    for (size_t i = 0; i < spread.size() && i < spread_index.size(); ++i) compare(spread_index[i], spread[i], "spread");
    if (all_values) {
        const std::vector<uint32_t> values = rec.at("values");
        EXPECT_EQ(static_cast<int64_t>(values.size()), n);
        for (size_t i = 0; i < values.size(); ++i) compare(static_cast<int64_t>(i), values[i], "value");
    }

    const Sums ours = sums_of(x, n, 251);
    EXPECT_TRUE(close_sum(ours.sum, rec.at("sum"), std::max(ours.sum_abs, 1e-30)))
        << "sum " << ours.sum << " vs " << rec.at("sum").get<double>();
    EXPECT_TRUE(close_sum(ours.sum_abs, rec.at("sum_abs"), ours.sum_abs))
        << "sum_abs " << ours.sum_abs << " vs " << rec.at("sum_abs").get<double>();
    EXPECT_TRUE(close_sum(ours.sum_sq, rec.at("sum_sq"), ours.sum_sq))
        << "sum_sq " << ours.sum_sq << " vs " << rec.at("sum_sq").get<double>();
    EXPECT_TRUE(close_sum(ours.weighted, rec.at("weighted_sum"), std::max(ours.weighted_abs, 1e-30)))
        << "weighted_sum " << ours.weighted << " vs " << rec.at("weighted_sum").get<double>();
    return compared;
}

// Dequantizes every tensor of `file` named in `records` with our code and checks it.
void check_file(const kvscope::GgufFile& file, const nlohmann::json& records, bool all_values,
                std::set<std::string>* types_seen) {
    std::vector<float> buffer;
    size_t compared = 0;
    for (const nlohmann::json& rec : records) {
        const std::string name = rec.at("name");
        const kvscope::GgufTensorInfo* t = file.tensor(name);
        if (!t) { ADD_FAILURE() << "our reader does not find tensor " << name; continue; }
        const kvscope::kernels::GgmlTypeInfo* info = kvscope::kernels::ggml_type_info(static_cast<uint32_t>(t->type));
        EXPECT_EQ(std::string(info->name), rec.at("type").get<std::string>()) << name;
        types_seen->insert(info->name);
        const int64_t n = t->n_elements();
        buffer.resize(static_cast<size_t>(n));
        dequantize(t->type, file.tensor_data(*t), buffer.data(), n);
        compared += check_tensor(rec, buffer.data(), n, all_values);
    }
    EXPECT_EQ(records.size(), file.tensors().size());
    std::printf("[ info     ] compared %zu tensors, %zu sampled values, and their sums\n", records.size(), compared);
}

TEST(DequantParity, EveryTensorOfTheDefaultModel) {
    const Reference& ref = reference();
    ASSERT_TRUE(ref.error.empty()) << ref.error;
    const kvscope::GgufFile file = kvscope::GgufFile::open(kvscope::default_model_path());
    std::set<std::string> types;
    check_file(file, ref.model.at("tensors"), /*all_values=*/false, &types);
    EXPECT_EQ(ref.model.at("tensors").size(), 272u);
    EXPECT_EQ(types, (std::set<std::string>{"F32", "Q4_1", "Q8_0"}));
}

TEST(DequantParity, SyntheticFileWithEveryType) {
    const Reference& ref = reference();
    ASSERT_TRUE(ref.error.empty()) << ref.error;
    const kvscope::GgufFile file = kvscope::GgufFile::open(ref.dir + "/synthetic.gguf");
    std::set<std::string> types;
    check_file(file, ref.synthetic.at("tensors"), /*all_values=*/true, &types);
    EXPECT_EQ(types, (std::set<std::string>{"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"}));
}

} // namespace
