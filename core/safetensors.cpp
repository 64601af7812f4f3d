// safetensors reader. Layout of one file:
//
//   u64 little-endian N | N bytes of UTF-8 JSON header | data section
//
// The header is an object: tensor name -> {"dtype", "shape", "data_offsets": [begin, end]}
// with offsets relative to the data section, plus an optional "__metadata__" object of
// string -> string. Everything is checked here, once, so a StTensor handed out is always
// inside the mapping. Data pointers are only as aligned as the writer made them (the
// Python writer pads the header to 8 bytes; others may not): read them with memcpy.
//
// [SECTION] dtypes
// [SECTION] header JSON (duplicate keys refused)
// [SECTION] one tensor entry
// [SECTION] SafetensorsFile
// [SECTION] SafetensorsModel (single file or sharded index)

#include "core/safetensors.h"

#include "core/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <set>
#include <utility>

namespace kvscope {

using json = nlohmann::json;

//-----------------------------------------------------------------------------
// [SECTION] dtypes
//-----------------------------------------------------------------------------

namespace {

struct DtypeInfo {
    StDtype dtype;
    const char* name; // as written in the header
    size_t size;
};

const DtypeInfo kDtypes[] = {
    {StDtype::F32, "F32", 4},  {StDtype::F16, "F16", 2}, {StDtype::BF16, "BF16", 2},
    {StDtype::F64, "F64", 8},  {StDtype::I64, "I64", 8}, {StDtype::I32, "I32", 4},
    {StDtype::I16, "I16", 2},  {StDtype::I8, "I8", 1},   {StDtype::U8, "U8", 1},
    {StDtype::BOOL, "BOOL", 1},
};

const DtypeInfo* find_dtype(const std::string& name) {
    for (const DtypeInfo& info : kDtypes)
        if (name == info.name) return &info;
    return nullptr;
}

const DtypeInfo& dtype_info(StDtype dtype) {
    for (const DtypeInfo& info : kDtypes)
        if (info.dtype == dtype) return info;
    return kDtypes[0]; // unreachable: the table covers the enum
}

} // namespace

const char* st_dtype_name(StDtype dtype) { return dtype_info(dtype).name; }
size_t st_dtype_size(StDtype dtype) { return dtype_info(dtype).size; }

//-----------------------------------------------------------------------------
// [SECTION] header JSON (duplicate keys refused)
//-----------------------------------------------------------------------------

namespace {

std::string tensor_field(const std::string& name) { return "tensor '" + name + "'"; }

// nlohmann keeps the last of two equal keys; safetensors (and we) refuse them, since the
// first one's bytes would silently become unnamed. A parser callback sees every key.
// A duplicate at the top of a header is a tensor name; deeper ones are named with the
// key of the object they sit in.
json parse_json_refusing_duplicates(const char* begin, const char* end, const std::string& file,
                                    const std::string& field) {
    struct OpenObject {
        std::set<std::string> keys;
        std::string last_key;
    };
    std::vector<OpenObject> open_objects;
    auto on_event = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
        if (event == json::parse_event_t::object_start) {
            open_objects.emplace_back();
        } else if (event == json::parse_event_t::object_end) {
            open_objects.pop_back();
        } else if (event == json::parse_event_t::key) {
            const std::string& key = parsed.get_ref<const std::string&>();
            if (!open_objects.back().keys.insert(key).second) {
                if (open_objects.size() == 1 && field == "header")
                    throw Error(file, tensor_field(key), "duplicate name in the header");
                std::string parent = open_objects.size() > 1 ? open_objects[open_objects.size() - 2].last_key : "";
                throw Error(file, field, "duplicate key '" + key + "'" + (parent.empty() ? "" : " in '" + parent + "'"));
            }
            open_objects.back().last_key = key;
        }
        return true;
    };
    try {
        return json::parse(begin, end, on_event);
    } catch (const json::exception& e) {
        // what() starts with "[json.exception.parse_error.101] "; keep the readable part.
        std::string what = e.what();
        size_t bracket = what.find("] ");
        throw Error(file, field, "not valid JSON: " + (bracket == std::string::npos ? what : what.substr(bracket + 2)));
    }
}

uint64_t read_u64_le(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

std::map<std::string, std::string> read_metadata(const json& value, const std::string& file) {
    if (!value.is_object()) throw Error(file, "__metadata__", "not an object");
    std::map<std::string, std::string> metadata;
    for (const auto& [key, item] : value.items()) {
        if (!item.is_string()) throw Error(file, "__metadata__", "value of '" + key + "' is not a string");
        metadata[key] = item.get<std::string>();
    }
    return metadata;
}

//-----------------------------------------------------------------------------
// [SECTION] one tensor entry
//-----------------------------------------------------------------------------

struct Entry {
    StTensor tensor;
    uint64_t begin = 0, end = 0; // relative to the data section
};

const json& member(const json& entry, const char* key, const std::string& file, const std::string& field) {
    auto it = entry.find(key);
    if (it == entry.end()) throw Error(file, field, std::string("missing \"") + key + "\"");
    return *it;
}

StDtype read_dtype(const json& value, const std::string& file, const std::string& field) {
    if (!value.is_string()) throw Error(file, field, "\"dtype\" is not a string");
    const DtypeInfo* info = find_dtype(value.get<std::string>());
    if (!info) throw Error(file, field, "unknown or unsupported dtype '" + value.get<std::string>() + "'");
    return info->dtype;
}

std::vector<int64_t> read_shape(const json& value, const std::string& file, const std::string& field) {
    if (!value.is_array()) throw Error(file, field, "\"shape\" is not an array");
    std::vector<int64_t> shape;
    for (const json& dim : value) {
        // nlohmann stores non-negative literals as unsigned, negative ones as signed,
        // and anything else (fractions, exponents, > 2^64) as float.
        if (dim.is_number_unsigned()) {
            uint64_t d = dim.get<uint64_t>();
            if (d > uint64_t(std::numeric_limits<int64_t>::max())) throw Error(file, field, "dimension too large");
            shape.push_back(int64_t(d));
        } else if (dim.is_number_integer()) {
            throw Error(file, field, "negative dimension " + std::to_string(dim.get<int64_t>()));
        } else {
            throw Error(file, field, "dimension is not an integer");
        }
    }
    return shape;
}

std::pair<uint64_t, uint64_t> read_offsets(const json& value, const std::string& file, const std::string& field) {
    if (!value.is_array() || value.size() != 2) throw Error(file, field, "\"data_offsets\" is not an array of 2");
    if (!value[0].is_number_unsigned() || !value[1].is_number_unsigned())
        throw Error(file, field, "\"data_offsets\" are not non-negative integers");
    return {value[0].get<uint64_t>(), value[1].get<uint64_t>()};
}

// Bytes the shape needs, or throws when the count does not fit in 64 bits.
uint64_t shape_bytes(const std::vector<int64_t>& shape, StDtype dtype, const std::string& file,
                     const std::string& field) {
    uint64_t bytes = st_dtype_size(dtype);
    for (int64_t d : shape)
        if (__builtin_mul_overflow(bytes, uint64_t(d), &bytes))
            throw Error(file, field, "shape product overflows 64 bits");
    return bytes;
}

Entry read_entry(const std::string& name, const json& value, uint64_t data_size, const std::string& file) {
    const std::string field = tensor_field(name);
    if (!value.is_object()) throw Error(file, field, "not an object");
    Entry entry;
    entry.tensor.name = name;
    entry.tensor.file = file;
    entry.tensor.dtype = read_dtype(member(value, "dtype", file, field), file, field);
    entry.tensor.shape = read_shape(member(value, "shape", file, field), file, field);
    std::tie(entry.begin, entry.end) = read_offsets(member(value, "data_offsets", file, field), file, field);
    if (entry.begin > entry.end)
        throw Error(file, field, "data_offsets out of order (" + std::to_string(entry.begin) + " > " +
                                     std::to_string(entry.end) + ")");
    if (entry.end > data_size)
        throw Error(file, field, "data ends at " + std::to_string(entry.end) + ", past the data section (" +
                                     std::to_string(data_size) + " bytes)");
    uint64_t want = shape_bytes(entry.tensor.shape, entry.tensor.dtype, file, field);
    if (want != entry.end - entry.begin)
        throw Error(file, field, "shape needs " + std::to_string(want) + " bytes, data_offsets give " +
                                     std::to_string(entry.end - entry.begin));
    entry.tensor.n_bytes = want;
    return entry;
}

// Sorts by offset and refuses two tensors sharing a byte. Empty tensors own no bytes.
void sort_and_check_overlap(std::vector<Entry>& entries, const std::string& file) {
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return std::tie(a.begin, a.end, a.tensor.name) < std::tie(b.begin, b.end, b.tensor.name);
    });
    const Entry* previous = nullptr;
    for (const Entry& e : entries) {
        if (e.begin == e.end) continue;
        if (previous && e.begin < previous->end)
            throw Error(file, tensor_field(e.tensor.name), "data overlaps tensor '" + previous->tensor.name + "'");
        previous = &e;
    }
}

} // namespace

//-----------------------------------------------------------------------------
// [SECTION] SafetensorsFile
//-----------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const std::string& path) {
    auto mapped = std::make_shared<MappedFile>(MappedFile::open(path));
    SafetensorsFile file = parse(mapped->data(), mapped->size(), path);
    file.file_ = std::move(mapped);
    return file;
}

SafetensorsFile SafetensorsFile::parse(const uint8_t* data, size_t size, const std::string& name) {
    if (size < 8) throw Error(name, "header length", "file has " + std::to_string(size) + " bytes, fewer than 8");
    const uint64_t header_len = read_u64_le(data);
    if (header_len > size - 8)
        throw Error(name, "header length", std::to_string(header_len) + " bytes, but only " +
                                               std::to_string(size - 8) + " follow");
    const char* header = reinterpret_cast<const char*>(data + 8);
    json root = parse_json_refusing_duplicates(header, header + header_len, name, "header");
    if (!root.is_object()) throw Error(name, "header", "not a JSON object");

    const uint8_t* data_section = data + 8 + header_len;
    const uint64_t data_size = size - 8 - header_len;
    SafetensorsFile file;
    file.name_ = name;
    std::vector<Entry> entries;
    for (const auto& [key, value] : root.items()) {
        if (key == "__metadata__")
            file.metadata_ = read_metadata(value, name);
        else
            entries.push_back(read_entry(key, value, data_size, name));
    }
    sort_and_check_overlap(entries, name);
    for (Entry& e : entries) {
        e.tensor.data = data_section + e.begin;
        file.tensors_.push_back(std::move(e.tensor));
    }
    return file;
}

//-----------------------------------------------------------------------------
// [SECTION] SafetensorsModel (single file or sharded index)
//-----------------------------------------------------------------------------

namespace {

namespace fs = std::filesystem;

const char* kIndexName = "model.safetensors.index.json";
const char* kSingleName = "model.safetensors";

// A shard must be a file right inside the model directory: no path, no way out.
bool is_plain_file_name(const std::string& name) {
    return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
           name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}

// weight_map of the index: tensor name -> shard file name.
std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
    MappedFile mapped = MappedFile::open(index_path);
    const char* text = reinterpret_cast<const char*>(mapped.data());
    json root = parse_json_refusing_duplicates(text, text + mapped.size(), index_path, "index");
    if (!root.is_object()) throw Error(index_path, "index", "not a JSON object");
    auto it = root.find("weight_map");
    if (it == root.end()) throw Error(index_path, "weight_map", "missing");
    if (!it->is_object()) throw Error(index_path, "weight_map", "not an object");
    if (it->empty()) throw Error(index_path, "weight_map", "empty");
    std::map<std::string, std::string> weight_map;
    for (const auto& [tensor, shard] : it->items()) {
        if (!shard.is_string()) throw Error(index_path, tensor_field(tensor), "shard name is not a string");
        const std::string& shard_name = shard.get_ref<const std::string&>();
        if (!is_plain_file_name(shard_name))
            throw Error(index_path, tensor_field(tensor), "shard '" + shard_name + "' is not a plain file name");
        weight_map[tensor] = shard_name;
    }
    return weight_map;
}

// Every name the index gives this shard is in it, and it holds nothing else.
void check_shard_against_index(const SafetensorsFile& shard, const std::string& shard_name,
                               const std::map<std::string, std::string>& weight_map, const std::string& index_path) {
    std::set<std::string> held;
    for (const StTensor& t : shard.tensors()) {
        held.insert(t.name);
        auto it = weight_map.find(t.name);
        if (it == weight_map.end())
            throw Error(shard.path(), tensor_field(t.name), std::string("not in the weight_map of ") + kIndexName);
        if (it->second != shard_name)
            throw Error(shard.path(), tensor_field(t.name), std::string(kIndexName) + " puts it in '" + it->second + "'");
    }
    for (const auto& [tensor, name] : weight_map)
        if (name == shard_name && !held.count(tensor))
            throw Error(index_path, tensor_field(tensor), "shard '" + shard_name + "' does not hold it");
}

} // namespace

SafetensorsModel SafetensorsModel::open_dir(const std::string& dir) {
    const fs::path index_path = fs::path(dir) / kIndexName;
    const fs::path single_path = fs::path(dir) / kSingleName;
    SafetensorsModel model;
    if (fs::is_regular_file(index_path)) {
        const std::string index = index_path.string();
        const std::map<std::string, std::string> weight_map = read_weight_map(index);
        std::set<std::string> shard_names;
        for (const auto& [tensor, shard] : weight_map) {
            if (!fs::is_regular_file(fs::path(dir) / shard))
                throw Error(index, tensor_field(tensor), "shard '" + shard + "' does not exist");
            shard_names.insert(shard);
        }
        for (const std::string& shard : shard_names) {
            model.files_.push_back(SafetensorsFile::open((fs::path(dir) / shard).string()));
            check_shard_against_index(model.files_.back(), shard, weight_map, index);
        }
    } else if (fs::is_regular_file(single_path)) {
        model.files_.push_back(SafetensorsFile::open(single_path.string()));
    } else {
        throw Error(dir, "model directory", std::string("no ") + kSingleName + " or " + kIndexName);
    }
    // Pointers are taken only now that files_ no longer grows. Names are unique across
    // shards: each shard holds exactly the names the index gives it.
    for (const SafetensorsFile& file : model.files_)
        for (const StTensor& t : file.tensors()) model.by_name_[t.name] = &t;
    return model;
}

const StTensor* SafetensorsModel::find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::string> SafetensorsModel::names() const {
    std::vector<std::string> names;
    names.reserve(by_name_.size());
    for (const auto& [name, tensor] : by_name_) names.push_back(name);
    return names;
}

} // namespace kvscope
