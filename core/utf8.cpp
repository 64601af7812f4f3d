#include "core/utf8.h"

#include <cstdint>

namespace kvscope {

namespace {

// Length of the sequence a lead byte starts (0 for a continuation or invalid byte).
int sequence_length(uint8_t lead) {
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

// Whether the n-byte sequence at s is well-formed (no overlongs, surrogates, > U+10FFFF).
bool well_formed(const uint8_t* s, int n) {
    for (int i = 1; i < n; ++i)
        if ((s[i] & 0xC0) != 0x80) return false;
    if (n == 3 && s[0] == 0xE0 && s[1] < 0xA0) return false; // overlong
    if (n == 3 && s[0] == 0xED && s[1] >= 0xA0) return false; // surrogate
    if (n == 4 && s[0] == 0xF0 && s[1] < 0x90) return false; // overlong
    if (n == 4 && s[0] == 0xF4 && s[1] >= 0x90) return false; // > U+10FFFF
    return true;
}

} // namespace

size_t find_invalid_utf8(std::string_view text) {
    const auto* s = reinterpret_cast<const uint8_t*>(text.data());
    size_t i = 0;
    while (i < text.size()) {
        int n = sequence_length(s[i]);
        if (n == 0 || i + n > text.size() || !well_formed(s + i, n)) return i;
        i += size_t(n);
    }
    return std::string_view::npos;
}

size_t complete_utf8_prefix(std::string_view bytes) {
    const auto* s = reinterpret_cast<const uint8_t*>(bytes.data());
    // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
    for (size_t back = 1; back <= 3 && back <= bytes.size(); ++back) {
        uint8_t b = s[bytes.size() - back];
        if ((b & 0xC0) == 0x80) continue; // continuation: keep looking
        int n = sequence_length(b);
        return size_t(n) > back ? bytes.size() - back : bytes.size();
    }
    return bytes.size();
}

} // namespace kvscope
