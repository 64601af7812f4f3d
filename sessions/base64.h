// Base64 (RFC 4648, with padding), for binary inside text formats: the report's inlined
// PNGs and the JSON export's attention blobs.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kvscope {

std::string base64_encode(std::string_view bytes);
// The bytes, or nothing when `text` is not padded base64.
std::optional<std::string> base64_decode(std::string_view text);

} // namespace kvscope
