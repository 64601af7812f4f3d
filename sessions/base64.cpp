#include "sessions/base64.h"

#include <algorithm>
#include <cstdint>

namespace kvscope {

namespace {
constexpr char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    for (size_t i = 0; i < bytes.size(); i += 3) {
        const size_t n = std::min<size_t>(3, bytes.size() - i);
        uint32_t v = 0;
        for (size_t k = 0; k < 3; ++k) v = v << 8 | (k < n ? uint8_t(bytes[i + k]) : 0);
        for (size_t k = 0; k < 4; ++k) out += k <= n ? kDigits[v >> (18 - 6 * k) & 63] : '=';
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
    if (text.size() % 4) return std::nullopt;
    size_t padding = 0;
    while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') ++padding;
    std::string out;
    out.reserve(text.size() / 4 * 3);
    for (size_t i = 0; i < text.size(); i += 4) {
        uint32_t v = 0;
        for (size_t at = i; at < i + 4; ++at) {
            const bool pad = at >= text.size() - padding;
            const char* digit = std::find(kDigits, kDigits + 64, text[at]);
            if (!pad && digit == kDigits + 64) return std::nullopt; // a stray '=' too
            v = v << 6 | (pad ? 0 : uint32_t(digit - kDigits));
        }
        const size_t n = i + 4 < text.size() ? 3 : 3 - padding;
        for (size_t k = 0; k < n; ++k) out += char(v >> (16 - 8 * k) & 0xff);
    }
    return out;
}

} // namespace kvscope
