// One attention sample as a blob: the data column of the `attention_samples` table, zlib
// (RFC 1950) over float32 little-endian values, [n_queries, n_keys] row-major.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace kvscope {

std::string encode_attention(const float* values, size_t count);

// Throws Error("<where>", "attention_samples", ...) unless `data` inflates to exactly
// `count` floats: a damaged or hostile database never crashes the reader.
std::vector<float> decode_attention(std::string_view data, size_t count, const std::string& where);

} // namespace kvscope
