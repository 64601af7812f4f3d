#include "sessions/attention_blob.h"

#include "sessions/zlib_bytes.h"

#include <cstdint>
#include <cstring>

namespace kvscope {

std::string encode_attention(const float* values, size_t count) {
    std::string raw(count * 4, '\0');
    for (size_t i = 0; i < count; ++i) {
        uint32_t bits;
        std::memcpy(&bits, &values[i], 4);
        for (int b = 0; b < 4; ++b) raw[4 * i + size_t(b)] = char(bits >> (8 * b) & 0xff);
    }
    return deflate_bytes(raw, "attention_samples");
}

std::vector<float> decode_attention(std::string_view data, size_t count, const std::string& where) {
    const std::string raw = inflate_bytes(data, int64_t(count) * 4, where, "attention_samples");
    std::vector<float> values(count);
    for (size_t i = 0; i < count; ++i) {
        uint32_t bits = 0;
        for (int b = 0; b < 4; ++b) bits |= uint32_t(uint8_t(raw[4 * i + size_t(b)])) << (8 * b);
        std::memcpy(&values[i], &bits, 4);
    }
    return values;
}

} // namespace kvscope
