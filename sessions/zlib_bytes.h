// zlib (RFC 1950) over a blob's bytes, for the compressed columns (decisions.data,
// attention_samples.data). `what` names the table in errors.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kvscope {

std::string deflate_bytes(std::string_view raw, const std::string& what);

// Throws Error("<where>", "<what>", ...) unless `data` inflates to exactly `size` bytes,
// and for a size over 1 GiB: a hostile size claim never makes the reader allocate it.
std::string inflate_bytes(std::string_view data, int64_t size, const std::string& where, const std::string& what);

} // namespace kvscope
