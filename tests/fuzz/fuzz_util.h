// Shared by the libFuzzer targets (tests/fuzz/fuzz_*.cpp).
#pragma once

#include "core/error.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>

namespace kvscope::fuzz {

// Stops the fuzzer with `what` (libFuzzer saves the input as crash-*).
[[noreturn]] inline void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz target failed: %s\n", what.c_str());
    std::abort();
}

// Runs `body`; a kvscope::Error is the expected outcome of bad input, as long as its
// message is one non-empty line. Any other exception is a bug (the app would print an
// unhelpful message or, for a std::bad_alloc, have allocated what the input asked for).
template <class F> void expect_clean_errors(F body) {
    try {
        body();
    } catch (const Error& e) {
        const std::string what = e.what();
        bool one_line = !what.empty();
        for (unsigned char c : what) one_line = one_line && c >= 0x20 && c != 0x7f;
        if (!one_line) fail("Error message is not one printable line: " + what);
    } catch (const std::exception& e) {
        fail(std::string("an exception other than kvscope::Error: ") + e.what());
    }
}

// A heap copy of exactly `size` bytes (libFuzzer's buffer is exact too, but the copy keeps
// the parse independent of where the bytes came from).
class ExactCopy {
public:
    ExactCopy(const uint8_t* data, size_t size) : bytes_(new uint8_t[size ? size : 1]), size_(size) {
        if (size) std::memcpy(bytes_.get(), data, size);
    }
    const uint8_t* data() const { return bytes_.get(); }
    size_t size() const { return size_; }

private:
    std::unique_ptr<uint8_t[]> bytes_;
    size_t size_;
};

// A private scratch folder for targets that must go through a path (the app's own entry),
// made once per process under $TMPDIR, else /dev/shm (memory: an ext4 /tmp flushes a
// truncated file to disk and runs ~50 times slower), else /tmp.
inline const std::string& scratch_dir() {
    static const std::string& dir = *new std::string([] { // never destroyed: the exit handler reads it
        const char* tmp = std::getenv("TMPDIR");
        const std::string base = tmp && *tmp ? tmp : access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        std::string pattern = base + "/kvscope-fuzz-XXXXXX";
        if (!mkdtemp(pattern.data())) fail("cannot make a scratch folder");
        std::atexit([] { std::filesystem::remove_all(scratch_dir()); });
        return pattern;
    }());
    return dir;
}

// Writes `size` bytes to `path` (replacing it).
inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
    std::remove(path.c_str()); // a new file, not a truncated one (ext4 would flush that)
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) fail("cannot write " + path);
    if (size && std::fwrite(data, 1, size, f) != size) fail("cannot write " + path);
    std::fclose(f);
}

} // namespace kvscope::fuzz
