// Token ids as a BLOB of int32 little-endian values (the runs table's prompt_tokens).
#pragma once

#include "core/error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kvscope {

inline std::string pack_tokens(const std::vector<int32_t>& ids) {
    std::string out;
    out.reserve(ids.size() * 4);
    for (int32_t id : ids)
        for (int shift = 0; shift < 32; shift += 8) out += char(uint32_t(id) >> shift & 0xff);
    return out;
}

inline std::vector<int32_t> unpack_tokens(const std::string& bytes, const std::string& where) {
    if (bytes.size() % 4 != 0) throw Error(where, "prompt_tokens", "is not a whole number of int32 ids");
    std::vector<int32_t> ids(bytes.size() / 4);
    for (size_t i = 0; i < ids.size(); ++i) {
        uint32_t v = 0;
        for (int b = 0; b < 4; ++b) v |= uint32_t(uint8_t(bytes[4 * i + b])) << (8 * b);
        ids[i] = int32_t(v);
    }
    return ids;
}

} // namespace kvscope
