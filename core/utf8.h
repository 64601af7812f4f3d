// Small UTF-8 checks for text crossing into or out of the tokenizer.
#pragma once

#include <cstddef>
#include <string_view>

namespace kvscope {

// Byte offset of the first invalid UTF-8 sequence in `text`, or npos when it is valid.
size_t find_invalid_utf8(std::string_view text);

// Length of the longest prefix of `bytes` that does not end inside a multi-byte
// sequence: what can be printed now while a token's bytes are still arriving.
size_t complete_utf8_prefix(std::string_view bytes);

} // namespace kvscope
