// safetensors reader: one file, or a sharded model through model.safetensors.index.json.
//
// Validated at open: header length within the file, header JSON well-formed, every
// tensor's dtype known, shape non-negative with a product that fits, data_offsets
// [begin, end) inside the data section, in order of size = product(shape) * dtype size,
// not overlapping. Violations throw kvscope::Error naming the file and the tensor.
#pragma once

#include "core/mapped_file.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kvscope {

enum class StDtype { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };
const char* st_dtype_name(StDtype dtype);
size_t st_dtype_size(StDtype dtype);

struct StTensor {
    std::string name;
    StDtype dtype = StDtype::F32;
    std::vector<int64_t> shape; // row-major, as PyTorch
    const uint8_t* data = nullptr;
    uint64_t n_bytes = 0;
    std::string file; // the shard it lives in
};

class SafetensorsFile {
public:
    static SafetensorsFile open(const std::string& path);
    static SafetensorsFile parse(const uint8_t* data, size_t size, const std::string& name);

    const std::string& path() const { return name_; }
    const std::vector<StTensor>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

private:
    std::shared_ptr<MappedFile> file_;
    std::string name_;
    std::vector<StTensor> tensors_;
    std::map<std::string, std::string> metadata_;
};

// All tensors of a Hugging Face model directory: model.safetensors, or the shards named
// by model.safetensors.index.json (each shard opened once; the index's weight_map must
// agree with what the shards hold).
class SafetensorsModel {
public:
    static SafetensorsModel open_dir(const std::string& dir);

    // Movable, not copyable: by_name_ points into files_, so a copy would point into
    // the original.
    SafetensorsModel() = default;
    SafetensorsModel(SafetensorsModel&&) = default;
    SafetensorsModel& operator=(SafetensorsModel&&) = default;
    SafetensorsModel(const SafetensorsModel&) = delete;
    SafetensorsModel& operator=(const SafetensorsModel&) = delete;

    const StTensor* find(const std::string& name) const; // nullptr if absent
    std::vector<std::string> names() const;

private:
    std::vector<SafetensorsFile> files_;
    std::map<std::string, const StTensor*> by_name_;
};

} // namespace kvscope
