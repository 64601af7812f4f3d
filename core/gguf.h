// GGUF reader (versions 2 and 3): header, metadata key/values, tensor infos, data.
//
// Everything is validated at open: counts against the bytes left, string and array
// lengths, tensor dims (1..4, positive, product without overflow), tensor types, data
// offsets (aligned, inside the file, not overlapping). Any violation throws
// kvscope::Error naming the file and the field. After open, every accessor is safe.
#pragma once

#include "core/mapped_file.h"
#include "kernels/ggml_types.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kvscope {

enum class GgufValueType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

const char* gguf_value_type_name(GgufValueType type);

// One metadata value. Scalars are widened on read; arrays keep their element type.
struct GgufValue {
    GgufValueType type = GgufValueType::U8;
    GgufValueType elem_type = GgufValueType::U8; // for ARRAY
    uint64_t u = 0;                              // unsigned ints and BOOL
    int64_t i = 0;                               // signed ints
    double f = 0;                                // F32/F64
    std::string str;                             // STRING
    std::vector<GgufValue> array;                // ARRAY
};

struct GgufTensorInfo {
    std::string name;
    kernels::GgmlType type = kernels::GgmlType::F32;
    std::vector<int64_t> ne;     // ggml order: ne[0] is the contiguous (fastest) dim
    uint64_t offset = 0;         // absolute offset of the data in the file
    uint64_t n_bytes = 0;
    int64_t n_elements() const;
};

class GgufFile {
public:
    // Memory-maps and validates `path`.
    static GgufFile open(const std::string& path);
    // Validates a buffer the caller keeps alive (fuzzing, tests). `name` appears in errors.
    static GgufFile parse(const uint8_t* data, size_t size, const std::string& name);

    const std::string& path() const { return name_; }
    uint32_t version() const { return version_; }
    uint64_t alignment() const { return alignment_; }

    // Metadata, in file order.
    const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
    const GgufValue* find(const std::string& key) const;

    // Typed getters: throw Error(file, key, ...) when missing or of another type.
    // get_uint/get_int accept any integer type whose value fits; get_float F32/F64.
    std::string get_string(const std::string& key) const;
    uint64_t get_uint(const std::string& key) const;
    int64_t get_int(const std::string& key) const;
    double get_float(const std::string& key) const;
    bool get_bool(const std::string& key) const;
    // An ARRAY of STRING; of any integer type; of F32/F64.
    std::vector<std::string> get_string_array(const std::string& key) const;
    std::vector<int64_t> get_int_array(const std::string& key) const;
    std::vector<double> get_float_array(const std::string& key) const;

    const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
    const GgufTensorInfo* tensor(const std::string& name) const; // nullptr if absent
    const uint8_t* tensor_data(const GgufTensorInfo& info) const { return data_ + info.offset; }

private:
    std::shared_ptr<MappedFile> file_; // empty for parse()
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
    std::string name_;
    uint32_t version_ = 0;
    uint64_t alignment_ = 32;
    std::vector<std::pair<std::string, GgufValue>> kv_;
    std::map<std::string, size_t> kv_index_;
    std::vector<GgufTensorInfo> tensors_;
    std::map<std::string, size_t> tensor_index_;
};

} // namespace kvscope
