// A read-only memory map of a whole file. Parsers read through it and check every
// offset against size() before use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kvscope {

class MappedFile {
public:
    // Maps `path` read-only. Throws kvscope::Error if it cannot be opened or mapped.
    static MappedFile open(const std::string& path);

    MappedFile() = default;
    MappedFile(MappedFile&& other) noexcept;
    MappedFile& operator=(MappedFile&& other) noexcept;
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile();

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::string& path() const { return path_; }

private:
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
    std::string path_;
};

} // namespace kvscope
