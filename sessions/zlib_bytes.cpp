#include "sessions/zlib_bytes.h"

#include "core/error.h"

#include <zlib.h>

namespace kvscope {

namespace {

constexpr int64_t kMaxSize = int64_t(1) << 30;

} // namespace

std::string deflate_bytes(std::string_view raw, const std::string& what) {
    std::string out(compressBound(uLong(raw.size())), '\0');
    uLongf n = uLongf(out.size());
    if (compress(reinterpret_cast<Bytef*>(out.data()), &n, reinterpret_cast<const Bytef*>(raw.data()),
                 uLong(raw.size())) != Z_OK)
        throw Error(what, "compressing", "zlib failed");
    out.resize(n);
    return out;
}

std::string inflate_bytes(std::string_view data, int64_t size, const std::string& where, const std::string& what) {
    if (size < 0 || size > kMaxSize) throw Error(where, what, "implausible size " + std::to_string(size));
    std::string raw(size_t(size), '\0');
    uLongf n = uLongf(raw.size());
    const int rc = uncompress(reinterpret_cast<Bytef*>(raw.data()), &n, reinterpret_cast<const Bytef*>(data.data()),
                              uLong(data.size()));
    if (rc != Z_OK || n != raw.size()) throw Error(where, what, "blob is not the zlib data of its size");
    return raw;
}

} // namespace kvscope
