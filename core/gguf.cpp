// GGUF reader: parses and validates the whole header at open (see core/gguf.h).
//
// Layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv, n_kv key/value
// pairs, n_tensors tensor infos, padding to the alignment, tensor data. Nothing read from
// the file is trusted: every count is checked against the bytes left before anything is
// allocated for it, and every read goes through a bounds-checked cursor.
#include "core/gguf.h"

#include "core/error.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

namespace kvscope {

namespace {

constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;      // GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 8;   // arrays of arrays; bounds the recursion
// Smallest possible encodings, used to reject counts that cannot fit in the bytes left.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;             // empty key, type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8; // empty name, 1 dim, type, offset

// Reads little-endian values from [data, data + size), throwing a kvscope::Error that names
// the file, the field being read and the offset when the bytes run out.
class Cursor {
public:
    Cursor(const uint8_t* data, size_t size, const std::string& file)
        : data_(data), size_(size), file_(file) {}

    size_t pos() const { return pos_; }
    uint64_t remaining() const { return size_ - pos_; }

    [[noreturn]] void fail(const std::string& field, const std::string& message) const {
        throw Error(file_, field, message);
    }

    void need(uint64_t n, const std::string& field) const {
        if (n > remaining())
            fail(field, "truncated: needs " + std::to_string(n) + " bytes at offset " +
                            std::to_string(pos_) + ", the file has " + std::to_string(size_));
    }

    template <typename T> T read(const std::string& field) {
        need(sizeof(T), field);
        T value;
        std::memcpy(&value, data_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return value;
    }

    std::string read_string(const std::string& field) {
        const uint64_t length = read<uint64_t>(field);
        need(length, field);
        std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(length));
        pos_ += static_cast<size_t>(length);
        return s;
    }

private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
    const std::string& file_;
};

bool is_unsigned_int(GgufValueType t) {
    return t == GgufValueType::U8 || t == GgufValueType::U16 || t == GgufValueType::U32 ||
           t == GgufValueType::U64;
}

bool is_signed_int(GgufValueType t) {
    return t == GgufValueType::I8 || t == GgufValueType::I16 || t == GgufValueType::I32 ||
           t == GgufValueType::I64;
}

bool is_float(GgufValueType t) { return t == GgufValueType::F32 || t == GgufValueType::F64; }

bool is_known_value_type(uint32_t id) { return id <= static_cast<uint32_t>(GgufValueType::F64); }

// Fewest bytes one value of type `t` takes in the file.
uint64_t min_encoded_size(GgufValueType t) {
    switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::BOOL: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
    case GgufValueType::STRING: return 8;    // the length
    case GgufValueType::ARRAY: return 4 + 8; // element type and count
    }
    return 1;
}

GgufValueType read_value_type(Cursor& in, const std::string& field) {
    const uint32_t id = in.read<uint32_t>(field);
    if (!is_known_value_type(id)) in.fail(field, "unknown value type " + std::to_string(id));
    return static_cast<GgufValueType>(id);
}

GgufValue read_value(Cursor& in, GgufValueType type, const std::string& key, int depth);

void read_array(Cursor& in, GgufValue& value, const std::string& key, int depth) {
    if (depth >= kMaxArrayNesting)
        in.fail(key, "arrays nested deeper than " + std::to_string(kMaxArrayNesting));
    value.elem_type = read_value_type(in, key);
    const uint64_t count = in.read<uint64_t>(key);
    const uint64_t min_size = min_encoded_size(value.elem_type);
    if (count > in.remaining() / min_size)
        in.fail(key, "array of " + std::to_string(count) + " " +
                         gguf_value_type_name(value.elem_type) + " cannot fit in the " +
                         std::to_string(in.remaining()) + " bytes left");
    value.array.reserve(static_cast<size_t>(count)); // bounded by the file size just above
    for (uint64_t i = 0; i < count; ++i)
        value.array.push_back(read_value(in, value.elem_type, key, depth + 1));
}

GgufValue read_value(Cursor& in, GgufValueType type, const std::string& key, int depth) {
    GgufValue value;
    value.type = type;
    switch (type) {
    case GgufValueType::U8: value.u = in.read<uint8_t>(key); break;
    case GgufValueType::U16: value.u = in.read<uint16_t>(key); break;
    case GgufValueType::U32: value.u = in.read<uint32_t>(key); break;
    case GgufValueType::U64: value.u = in.read<uint64_t>(key); break;
    case GgufValueType::I8: value.i = in.read<int8_t>(key); break;
    case GgufValueType::I16: value.i = in.read<int16_t>(key); break;
    case GgufValueType::I32: value.i = in.read<int32_t>(key); break;
    case GgufValueType::I64: value.i = in.read<int64_t>(key); break;
    case GgufValueType::F32: value.f = in.read<float>(key); break;
    case GgufValueType::F64: value.f = in.read<double>(key); break;
    case GgufValueType::BOOL:
        value.u = in.read<uint8_t>(key);
        if (value.u > 1) in.fail(key, "bool value " + std::to_string(value.u) + " is not 0 or 1");
        break;
    case GgufValueType::STRING: value.str = in.read_string(key); break;
    case GgufValueType::ARRAY: read_array(in, value, key, depth); break;
    }
    return value;
}

// An integer value as uint64 / int64, if it is an integer and fits.
bool integer_as_uint(const GgufValue& v, uint64_t* out) {
    if (is_unsigned_int(v.type)) { *out = v.u; return true; }
    if (is_signed_int(v.type) && v.i >= 0) { *out = static_cast<uint64_t>(v.i); return true; }
    return false;
}

bool integer_as_int(const GgufValue& v, int64_t* out) {
    if (is_signed_int(v.type)) { *out = v.i; return true; }
    if (is_unsigned_int(v.type) && v.u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        *out = static_cast<int64_t>(v.u);
        return true;
    }
    return false;
}

std::string describe_type(const GgufValue& v) {
    if (v.type == GgufValueType::ARRAY)
        return std::string("array of ") + gguf_value_type_name(v.elem_type);
    return gguf_value_type_name(v.type);
}

// "uint32 48", "int8 -3" or just the type name for a non-integer.
std::string describe_integer(const GgufValue& v) {
    if (is_signed_int(v.type)) return describe_type(v) + " " + std::to_string(v.i);
    if (is_unsigned_int(v.type)) return describe_type(v) + " " + std::to_string(v.u);
    return describe_type(v);
}

bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

std::string tensor_field(const std::string& name) { return "tensor '" + name + "'"; }

std::string shape_string(const std::vector<int64_t>& ne) {
    std::string s = "[";
    for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

void check_header(Cursor& in, uint32_t* version) {
    in.need(sizeof kMagic, "magic");
    uint8_t magic[4];
    for (uint8_t& b : magic) b = in.read<uint8_t>("magic");
    if (std::memcmp(magic, kMagic, sizeof kMagic) != 0)
        in.fail("magic", "not a GGUF file (the first 4 bytes are not 'GGUF')");
    *version = in.read<uint32_t>("version");
    if (*version == 0x02000000u || *version == 0x03000000u)
        in.fail("version", "the file is big-endian; only little-endian GGUF is supported");
    if (*version != 2 && *version != 3)
        in.fail("version", "version " + std::to_string(*version) +
                               " is not supported (only GGUF versions 2 and 3)");
}

// Reads the two counts and checks them against the bytes left before anything is allocated
// per entry: a hostile count must fail here, not reserve memory.
void read_counts(Cursor& in, uint64_t* n_tensors, uint64_t* n_kv) {
    *n_tensors = in.read<uint64_t>("n_tensors");
    *n_kv = in.read<uint64_t>("n_kv");
    if (*n_tensors > in.remaining() / kMinTensorInfoBytes)
        in.fail("n_tensors", std::to_string(*n_tensors) + " tensor infos cannot fit in the " +
                                 std::to_string(in.remaining()) + " bytes left");
    if (*n_kv > (in.remaining() - *n_tensors * kMinTensorInfoBytes) / kMinKvBytes)
        in.fail("n_kv", std::to_string(*n_kv) + " key/value pairs (and " + std::to_string(*n_tensors) +
                            " tensor infos) cannot fit in the " + std::to_string(in.remaining()) +
                            " bytes left");
}

// general.alignment if present (the spec writes it as uint32; any integer type is accepted).
uint64_t alignment_of(const GgufValue* value, const Cursor& in) {
    if (!value) return kDefaultAlignment;
    uint64_t a = 0;
    if (!integer_as_uint(*value, &a) || !is_power_of_two(a))
        in.fail("general.alignment", "must be a nonzero power of two, found " + describe_integer(*value));
    return a;
}

// Reads one tensor info; its offset stays relative to the data section.
GgufTensorInfo read_tensor_info(Cursor& in, uint64_t index, uint64_t alignment) {
    GgufTensorInfo t;
    t.name = in.read_string("tensor #" + std::to_string(index) + " name");
    const std::string field = tensor_field(t.name);

    const uint32_t n_dims = in.read<uint32_t>(field);
    if (n_dims < 1 || n_dims > kMaxDims)
        in.fail(field, "n_dims " + std::to_string(n_dims) + " is outside 1.." + std::to_string(kMaxDims));
    for (uint32_t d = 0; d < n_dims; ++d) t.ne.push_back(in.read<int64_t>(field));

    int64_t n_elements = 1;
    for (size_t d = 0; d < t.ne.size(); ++d) {
        if (t.ne[d] <= 0)
            in.fail(field, "dimension ne[" + std::to_string(d) + "] = " + std::to_string(t.ne[d]) +
                               " of shape " + shape_string(t.ne) + " is not positive");
        if (n_elements > std::numeric_limits<int64_t>::max() / t.ne[d])
            in.fail(field, "shape " + shape_string(t.ne) + " has more than 2^63-1 elements");
        n_elements *= t.ne[d];
    }

    const uint32_t type_id = in.read<uint32_t>(field);
    const kernels::GgmlTypeInfo* type = kernels::ggml_type_info(type_id);
    if (!type) in.fail(field, "unknown or unsupported ggml type id " + std::to_string(type_id));
    t.type = static_cast<kernels::GgmlType>(type_id);
    if (t.ne[0] % type->block_elems != 0)
        in.fail(field, "ne[0] = " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                           type->name + " block size " + std::to_string(type->block_elems));
    const uint64_t n_blocks = static_cast<uint64_t>(n_elements / type->block_elems);
    if (n_blocks > std::numeric_limits<uint64_t>::max() / type->block_bytes)
        in.fail(field, "shape " + shape_string(t.ne) + " of " + type->name + " overflows the byte size");
    t.n_bytes = n_blocks * type->block_bytes;

    t.offset = in.read<uint64_t>(field);
    if (t.offset % alignment != 0)
        in.fail(field, "offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                           std::to_string(alignment));
    return t;
}

// Moves tensor offsets from data-relative to absolute, checking each range lies in the file
// and no two ranges overlap.
void place_tensors(std::vector<GgufTensorInfo>& tensors, uint64_t data_start, uint64_t file_size,
                   const Cursor& in) {
    if (tensors.empty()) return;
    const uint64_t data_size = data_start <= file_size ? file_size - data_start : 0;
    for (GgufTensorInfo& t : tensors) {
        if (t.offset > data_size)
            in.fail(tensor_field(t.name), "offset " + std::to_string(t.offset) +
                                              " lies past the end of the file (data section of " +
                                              std::to_string(data_size) + " bytes at offset " +
                                              std::to_string(data_start) + ")");
        if (t.n_bytes > data_size - t.offset)
            in.fail(tensor_field(t.name),
                    "data at offset " + std::to_string(t.offset) + " (" + std::to_string(t.n_bytes) +
                        " bytes) extends past the end of the file (data section of " +
                        std::to_string(data_size) + " bytes)");
    }
    std::vector<size_t> by_offset(tensors.size());
    std::iota(by_offset.begin(), by_offset.end(), size_t{0});
    std::stable_sort(by_offset.begin(), by_offset.end(),
                     [&](size_t a, size_t b) { return tensors[a].offset < tensors[b].offset; });
    for (size_t k = 1; k < by_offset.size(); ++k) {
        const GgufTensorInfo& prev = tensors[by_offset[k - 1]];
        const GgufTensorInfo& cur = tensors[by_offset[k]];
        if (prev.offset + prev.n_bytes > cur.offset)
            in.fail(tensor_field(cur.name), "data at offset " + std::to_string(cur.offset) +
                                                " overlaps tensor '" + prev.name + "' at offset " +
                                                std::to_string(prev.offset));
    }
    for (GgufTensorInfo& t : tensors) t.offset += data_start;
}

} // namespace

const char* gguf_value_type_name(GgufValueType type) {
    switch (type) {
    case GgufValueType::U8: return "uint8";
    case GgufValueType::I8: return "int8";
    case GgufValueType::U16: return "uint16";
    case GgufValueType::I16: return "int16";
    case GgufValueType::U32: return "uint32";
    case GgufValueType::I32: return "int32";
    case GgufValueType::F32: return "float32";
    case GgufValueType::BOOL: return "bool";
    case GgufValueType::STRING: return "string";
    case GgufValueType::ARRAY: return "array";
    case GgufValueType::U64: return "uint64";
    case GgufValueType::I64: return "int64";
    case GgufValueType::F64: return "float64";
    }
    return "unknown";
}

int64_t GgufTensorInfo::n_elements() const {
    int64_t n = 1;
    for (int64_t d : ne) n *= d; // checked against overflow at open
    return n;
}

GgufFile GgufFile::open(const std::string& path) {
    auto mapped = std::make_shared<MappedFile>(MappedFile::open(path));
    GgufFile file = parse(mapped->data(), mapped->size(), path);
    file.file_ = std::move(mapped);
    return file;
}

GgufFile GgufFile::parse(const uint8_t* data, size_t size, const std::string& name) {
    GgufFile f;
    f.data_ = data;
    f.size_ = size;
    f.name_ = name;
    Cursor in(data, size, f.name_);

    check_header(in, &f.version_);
    uint64_t n_tensors = 0, n_kv = 0;
    read_counts(in, &n_tensors, &n_kv);

    for (uint64_t i = 0; i < n_kv; ++i) {
        std::string key = in.read_string("metadata #" + std::to_string(i) + " key");
        const GgufValueType type = read_value_type(in, key);
        GgufValue value = read_value(in, type, key, 0);
        if (!f.kv_index_.emplace(key, f.kv_.size()).second) in.fail(key, "duplicate key");
        f.kv_.emplace_back(std::move(key), std::move(value));
    }

    f.alignment_ = alignment_of(f.find("general.alignment"), in);

    for (uint64_t i = 0; i < n_tensors; ++i) {
        GgufTensorInfo t = read_tensor_info(in, i, f.alignment_);
        if (!f.tensor_index_.emplace(t.name, f.tensors_.size()).second)
            in.fail(tensor_field(t.name), "duplicate tensor name");
        f.tensors_.push_back(std::move(t));
    }

    const uint64_t pos = in.pos();
    if (pos > std::numeric_limits<uint64_t>::max() - (f.alignment_ - 1))
        in.fail("general.alignment", "alignment " + std::to_string(f.alignment_) + " overflows");
    const uint64_t data_start = (pos + f.alignment_ - 1) / f.alignment_ * f.alignment_;
    place_tensors(f.tensors_, data_start, size, in);
    return f;
}

const GgufValue* GgufFile::find(const std::string& key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufTensorInfo* GgufFile::tensor(const std::string& name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

const GgufValue& require(const GgufFile& f, const std::string& key) {
    const GgufValue* v = f.find(key);
    if (!v) throw Error(f.path(), key, "missing");
    return *v;
}

[[noreturn]] void wrong_type(const GgufFile& f, const std::string& key, const char* expected,
                             const GgufValue& v) {
    throw Error(f.path(), key, std::string("expected ") + expected + ", found " + describe_type(v));
}

uint64_t to_uint(const GgufFile& f, const std::string& key, const GgufValue& v) {
    uint64_t out = 0;
    if (integer_as_uint(v, &out)) return out;
    if (is_signed_int(v.type))
        throw Error(f.path(), key, "value " + std::to_string(v.i) + " is negative");
    wrong_type(f, key, "an integer", v);
}

int64_t to_int(const GgufFile& f, const std::string& key, const GgufValue& v) {
    int64_t out = 0;
    if (integer_as_int(v, &out)) return out;
    if (is_unsigned_int(v.type))
        throw Error(f.path(), key, "value " + std::to_string(v.u) + " does not fit in int64");
    wrong_type(f, key, "an integer", v);
}

const GgufValue& require_array(const GgufFile& f, const std::string& key, bool (*elem_ok)(GgufValueType),
                               const char* expected) {
    const GgufValue& v = require(f, key);
    if (v.type != GgufValueType::ARRAY || !elem_ok(v.elem_type)) wrong_type(f, key, expected, v);
    return v;
}

} // namespace

std::string GgufFile::get_string(const std::string& key) const {
    const GgufValue& v = require(*this, key);
    if (v.type != GgufValueType::STRING) wrong_type(*this, key, "string", v);
    return v.str;
}

uint64_t GgufFile::get_uint(const std::string& key) const {
    return to_uint(*this, key, require(*this, key));
}

int64_t GgufFile::get_int(const std::string& key) const {
    return to_int(*this, key, require(*this, key));
}

double GgufFile::get_float(const std::string& key) const {
    const GgufValue& v = require(*this, key);
    if (!is_float(v.type)) wrong_type(*this, key, "a float", v);
    return v.f;
}

bool GgufFile::get_bool(const std::string& key) const {
    const GgufValue& v = require(*this, key);
    if (v.type != GgufValueType::BOOL) wrong_type(*this, key, "bool", v);
    return v.u != 0;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
    const GgufValue& v = require_array(
        *this, key, [](GgufValueType t) { return t == GgufValueType::STRING; }, "array of string");
    std::vector<std::string> out;
    out.reserve(v.array.size());
    for (const GgufValue& e : v.array) out.push_back(e.str);
    return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
    const GgufValue& v = require_array(
        *this, key, [](GgufValueType t) { return is_signed_int(t) || is_unsigned_int(t); },
        "array of integers");
    std::vector<int64_t> out;
    out.reserve(v.array.size());
    for (const GgufValue& e : v.array) out.push_back(to_int(*this, key, e));
    return out;
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
    const GgufValue& v = require_array(*this, key, is_float, "array of floats");
    std::vector<double> out;
    out.reserve(v.array.size());
    for (const GgufValue& e : v.array) out.push_back(e.f);
    return out;
}

} // namespace kvscope
