// CPU dequantization of ggml block formats to fp32, following ggml's reference
// (dequantize_row_*) formulas and evaluation order, so results match ggml bit for bit.
//
// Blocks are read byte-wise (memcpy for the fp16 scales), so any source alignment works.
// GGUF data is little-endian and so are the hosts we build for.
#include "kernels/dequant.h"

#include "kernels/ggml_bytes.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace kvscope::kernels {

namespace {

void dequant_f32(const uint8_t* src, float* dst, int64_t n) {
    if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void dequant_f16(const uint8_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = load_fp16(src + 2 * i);
}

void dequant_bf16(const uint8_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
}

// Q4_0: fp16 d, 16 bytes; byte j holds element j (low nibble) and j+16 (high). y = (q-8)*d.
void dequant_q4_0(const uint8_t* src, float* dst, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, src += 18, dst += 32) {
        const float d = load_fp16(src);
        const uint8_t* qs = src + 2;
        for (int j = 0; j < 16; ++j) {
            dst[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
            dst[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
        }
    }
}

// Q4_1: fp16 d, fp16 m, 16 nibble bytes as Q4_0. y = q*d + m.
void dequant_q4_1(const uint8_t* src, float* dst, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, src += 20, dst += 32) {
        const float d = load_fp16(src);
        const float m = load_fp16(src + 2);
        const uint8_t* qs = src + 4;
        for (int j = 0; j < 16; ++j) {
            dst[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
            dst[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
        }
    }
}

// Q8_0: fp16 d, 32 int8. y = q*d.
void dequant_q8_0(const uint8_t* src, float* dst, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, src += 34, dst += 32) {
        const float d = load_fp16(src);
        const int8_t* qs = reinterpret_cast<const int8_t*>(src + 2);
        for (int j = 0; j < 32; ++j) dst[j] = static_cast<float>(qs[j]) * d;
    }
}

// The 12 scale bytes of Q4_K/Q5_K pack eight 6-bit scales and eight 6-bit mins, one pair
// per 32-element sub-block: sub-blocks 0-3 use the low 6 bits of bytes 0-3 (scale) and
// 4-7 (min); sub-blocks 4-7 take their low 4 bits from bytes 8-11 and their top 2 bits
// from the spare top bits of bytes 0-3 (scale) and 4-7 (min).
void scale_min_k4(int sub, const uint8_t* packed, uint8_t* scale, uint8_t* min) {
    if (sub < 4) {
        *scale = packed[sub] & 63;
        *min = packed[sub + 4] & 63;
    } else {
        *scale = static_cast<uint8_t>((packed[sub + 4] & 0x0f) | ((packed[sub - 4] >> 6) << 4));
        *min = static_cast<uint8_t>((packed[sub + 4] >> 4) | ((packed[sub] >> 6) << 4));
    }
}

// Q4_K: fp16 d, fp16 dmin, 12 scale bytes, 128 nibble bytes. Each 64-element group uses
// 32 bytes: low nibbles are sub-block 2g, high nibbles 2g+1. y = d*sc*q - dmin*m.
void dequant_q4_k(const uint8_t* src, float* dst, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, src += 144) {
        const float d = load_fp16(src);
        const float dmin = load_fp16(src + 2);
        const uint8_t* scales = src + 4;
        const uint8_t* qs = src + 16;
        for (int group = 0; group < 4; ++group, qs += 32, dst += 64) {
            uint8_t sc_lo, m_lo, sc_hi, m_hi;
            scale_min_k4(2 * group, scales, &sc_lo, &m_lo);
            scale_min_k4(2 * group + 1, scales, &sc_hi, &m_hi);
            const float d_lo = d * sc_lo, min_lo = dmin * m_lo;
            const float d_hi = d * sc_hi, min_hi = dmin * m_hi;
            for (int l = 0; l < 32; ++l) {
                dst[l] = d_lo * static_cast<float>(qs[l] & 0x0f) - min_lo;
                dst[l + 32] = d_hi * static_cast<float>(qs[l] >> 4) - min_hi;
            }
        }
    }
}

// Q5_K: as Q4_K plus 32 bytes of fifth bits between the scales and the nibbles; group g
// takes its fifth bits from bits 2g (low nibbles) and 2g+1 (high nibbles) of qh[l].
void dequant_q5_k(const uint8_t* src, float* dst, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, src += 176) {
        const float d = load_fp16(src);
        const float dmin = load_fp16(src + 2);
        const uint8_t* scales = src + 4;
        const uint8_t* qh = src + 16;
        const uint8_t* qs = src + 48;
        for (int group = 0; group < 4; ++group, qs += 32, dst += 64) {
            uint8_t sc_lo, m_lo, sc_hi, m_hi;
            scale_min_k4(2 * group, scales, &sc_lo, &m_lo);
            scale_min_k4(2 * group + 1, scales, &sc_hi, &m_hi);
            const float d_lo = d * sc_lo, min_lo = dmin * m_lo;
            const float d_hi = d * sc_hi, min_hi = dmin * m_hi;
            const int shift_lo = 2 * group, shift_hi = 2 * group + 1;
            for (int l = 0; l < 32; ++l) {
                const int q_lo = (qs[l] & 0x0f) | (((qh[l] >> shift_lo) & 1) << 4);
                const int q_hi = (qs[l] >> 4) | (((qh[l] >> shift_hi) & 1) << 4);
                dst[l] = d_lo * static_cast<float>(q_lo) - min_lo;
                dst[l + 32] = d_hi * static_cast<float>(q_hi) - min_hi;
            }
        }
    }
}

// Q6_K: ql[128] low nibbles, qh[64] high bit pairs, int8 scales[16] (one per 16 elements),
// fp16 d at the end. Each 128-element half uses 64 ql bytes, 32 qh bytes and 8 scales;
// element quarter k (of 32) takes nibble (k&1 ? ql[l+32] : ql[l]) >> (k/2*4) and bits
// 2k..2k+1 of qh[l]. y = d*scale*(q-32).
void dequant_q6_k(const uint8_t* src, float* dst, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, src += 210) {
        const uint8_t* ql = src;
        const uint8_t* qh = src + 128;
        const int8_t* sc = reinterpret_cast<const int8_t*>(src + 192);
        const float d = load_fp16(src + 208);
        for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, dst += 128) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                dst[l] = d * sc[is + 0] * static_cast<float>(q1);
                dst[l + 32] = d * sc[is + 2] * static_cast<float>(q2);
                dst[l + 64] = d * sc[is + 4] * static_cast<float>(q3);
                dst[l + 96] = d * sc[is + 6] * static_cast<float>(q4);
            }
        }
    }
}

} // namespace

void dequantize(GgmlType type, const void* src, float* dst, int64_t n) {
    const GgmlTypeInfo* info = ggml_type_info(static_cast<uint32_t>(type));
    if (!info) throw std::invalid_argument("dequantize: unsupported ggml type id " +
                                           std::to_string(static_cast<uint32_t>(type)));
    if (n < 0 || n % info->block_elems != 0)
        throw std::invalid_argument(std::string("dequantize: ") + std::to_string(n) +
                                    " elements is not a whole number of " + info->name + " blocks");
    const auto* bytes = static_cast<const uint8_t*>(src);
    const int64_t n_blocks = n / info->block_elems;
    switch (type) {
    case GgmlType::F32: return dequant_f32(bytes, dst, n);
    case GgmlType::F16: return dequant_f16(bytes, dst, n);
    case GgmlType::BF16: return dequant_bf16(bytes, dst, n);
    case GgmlType::Q4_0: return dequant_q4_0(bytes, dst, n_blocks);
    case GgmlType::Q4_1: return dequant_q4_1(bytes, dst, n_blocks);
    case GgmlType::Q8_0: return dequant_q8_0(bytes, dst, n_blocks);
    case GgmlType::Q4_K: return dequant_q4_k(bytes, dst, n_blocks);
    case GgmlType::Q5_K: return dequant_q5_k(bytes, dst, n_blocks);
    case GgmlType::Q6_K: return dequant_q6_k(bytes, dst, n_blocks);
    }
}

} // namespace kvscope::kernels
