#include "sessions/model_hash.h"

#include "core/error.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

namespace kvscope {

namespace {

std::string hex(const unsigned char* bytes, unsigned n) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < n; ++i) {
        out += digits[bytes[i] >> 4];
        out += digits[bytes[i] & 15];
    }
    return out;
}

class Sha256 {
public:
    Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
        if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
            throw Error("model hash", "SHA-256", "OpenSSL could not start a digest");
    }
    void add(const void* data, size_t n) { EVP_DigestUpdate(ctx_.get(), data, n); }
    std::string hex_digest() {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        EVP_DigestFinal_ex(ctx_.get(), digest, &n);
        return hex(digest, n);
    }

private:
    std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

std::string sha256_of_file(const std::string& path) {
    std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!file) throw Error(path, "model hash", "cannot be read");
    Sha256 sha;
    std::vector<char> buffer(1 << 20);
    while (const size_t n = std::fread(buffer.data(), 1, buffer.size(), file.get())) sha.add(buffer.data(), n);
    if (std::ferror(file.get())) throw Error(path, "model hash", "read failed");
    return sha.hex_digest();
}

bool is_model_file(const std::filesystem::path& p) {
    return std::filesystem::is_regular_file(p) && (p.extension() == ".json" || p.extension() == ".safetensors");
}

std::string sha256_of_directory(const std::string& path) {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path))
        if (is_model_file(entry.path())) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    Sha256 sha;
    for (const std::string& name : names) {
        const std::string line = sha256_of_file(path + "/" + name) + "  " + name + "\n";
        sha.add(line.data(), line.size());
    }
    return sha.hex_digest();
}

} // namespace

std::string model_hash(const std::string& path) {
    std::error_code ec;
    const bool directory = std::filesystem::is_directory(path, ec);
    return "sha256:" + (directory ? sha256_of_directory(path) : sha256_of_file(path));
}

} // namespace kvscope
