// NumPy .npy files (format version 1.0, little-endian, C order) for arrays that cross
// between KVScope and the Python reference scripts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvscope {

struct NpyArray {
    std::string dtype;          // "<f4" or "<i4"
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;  // raw little-endian values

    int64_t numel() const;
    const float* f32() const { return reinterpret_cast<const float*>(data.data()); }
    const int32_t* i32() const { return reinterpret_cast<const int32_t*>(data.data()); }
};

void write_npy(const std::string& path, const float* values, const std::vector<int64_t>& shape);
void write_npy(const std::string& path, const int32_t* values, const std::vector<int64_t>& shape);
// Reads "<f4" and "<i4" arrays; throws kvscope::Error naming the file and the field.
NpyArray read_npy(const std::string& path);

} // namespace kvscope
