// Reading the scalar fields of ggml blocks: unaligned little-endian loads and the exact
// fp16 / bf16 to fp32 conversions. Shared by dequant.cpp and quant_matvec.cpp.
#pragma once

#include <cstdint>
#include <cstring>

namespace kvscope::kernels {

inline uint16_t load_u16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

inline uint32_t load_u32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

inline float float_from_bits(uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

// IEEE half -> float, exact for every input (fp32 has a wider exponent and mantissa).
inline float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) // inf or nan; the nan payload (and quiet bit) moves up unchanged
        return float_from_bits(sign | 0x7f800000u | (mantissa << 13));
    if (exponent != 0) // normal: rebias the exponent from 15 to 127
        return float_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    // subnormal: mantissa * 2^-24, exact in fp32
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
}

// bf16 is the top half of an fp32.
inline float bf16_to_fp32(uint16_t h) { return float_from_bits(static_cast<uint32_t>(h) << 16); }

inline float load_fp16(const uint8_t* p) { return fp16_to_fp32(load_u16(p)); }
inline float load_bf16(const uint8_t* p) { return bf16_to_fp32(load_u16(p)); }

} // namespace kvscope::kernels
