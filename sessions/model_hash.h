// The identity of a model's files, stored with every run: "sha256:<64 hex digits>".
//
// SHA-256, not a faster 64-bit hash, because it is the checksum others publish: for a GGUF
// file it equals `sha256sum`, the SHA-256 Hugging Face shows for the file, and the one in
// assets/default_model.env. For a Hugging Face directory it is the SHA-256 of the lines
// "<sha256 of the file>  <name>\n" (sha256sum's own format) for its *.json and
// *.safetensors files, sorted by name. OpenSSL's SHA-256 runs at about 1 GB/s here: 0.1 s
// for the default model, seconds for a 7B one.
#pragma once

#include <string>

namespace kvscope {

// Throws Error naming the file that cannot be read.
std::string model_hash(const std::string& path);

} // namespace kvscope
