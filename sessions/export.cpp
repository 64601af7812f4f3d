#include "sessions/export.h"

#include "core/error.h"
#include "core/utf8.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace kvscope {

namespace {

// Beside `path` (a rename never crosses file systems), unique to this process and call.
std::string temporary_name(const std::string& path) {
    static std::atomic<int> calls{0};
    return path + ".tmp-" + std::to_string(getpid()) + "-" + std::to_string(calls++);
}

[[noreturn]] void cannot_write(const std::string& path, int error) {
    throw Error(path, "export", std::string("cannot be written (") + std::strerror(error) + ")");
}

} // namespace

void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& fill) {
    const std::string temporary = temporary_name(path);
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) cannot_write(path, errno);
    try {
        fill(out);
        out.close();
        if (!out) throw Error(path, "export", "write failed (disk full?)");
        if (std::rename(temporary.c_str(), path.c_str()) != 0) cannot_write(path, errno);
    } catch (...) {
        std::remove(temporary.c_str());
        throw;
    }
}

std::string valid_utf8(std::string_view bytes) {
    std::string out;
    for (size_t bad = find_invalid_utf8(bytes); bad != std::string_view::npos; bad = find_invalid_utf8(bytes)) {
        out.append(bytes.substr(0, bad)).append("\xEF\xBF\xBD");
        bytes.remove_prefix(bad + 1);
    }
    return out.append(bytes);
}

} // namespace kvscope
