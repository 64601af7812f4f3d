// GGUF reader tests: valid v2/v3 files built in memory by a small writer written here from
// the GGUF specification (independent of the reader), an enumerated list of hostile or
// corrupted files that must each give a clean kvscope::Error naming the file and the field,
// and the real default model.
//
// [SECTION] Spec numbers (value and tensor type ids, block layouts)
// [SECTION] Byte builder and GgufWriter (the test-side writer)
// [SECTION] Valid files (v2, v3, alignment, open/mmap)
// [SECTION] Typed getters
// [SECTION] Corrupted and hostile files
// [SECTION] The real default model
#include "core/default_model.h"
#include "core/error.h"
#include "core/gguf.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

using kvscope::Error;
using kvscope::GgufFile;
using kvscope::GgufValue;
using kvscope::GgufValueType;

// ---------------------------------------------------------------------------------------
// The GGUF specification's numbers, written out here rather than taken from the reader.

namespace vt { // metadata value types
constexpr uint32_t U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
                   STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12;
} // namespace vt
static_assert(static_cast<uint32_t>(GgufValueType::ARRAY) == vt::ARRAY);
static_assert(static_cast<uint32_t>(GgufValueType::F64) == vt::F64);

namespace gt { // ggml tensor types
constexpr uint32_t F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q8_0 = 8, Q4_K = 12,
                   Q5_K = 13, Q6_K = 14, BF16 = 30;
} // namespace gt

struct BlockLayout { int64_t elems; uint64_t bytes; };
const std::map<uint32_t, BlockLayout> kBlocks = {
    {gt::F32, {1, 4}},     {gt::F16, {1, 2}},      {gt::BF16, {1, 2}},
    {gt::Q4_0, {32, 18}},  {gt::Q4_1, {32, 20}},   {gt::Q8_0, {32, 34}},
    {gt::Q4_K, {256, 144}}, {gt::Q5_K, {256, 176}}, {gt::Q6_K, {256, 210}},
};

// Bytes a tensor takes, or 0 when the shape or type is invalid (the corrupt cases).
uint64_t tensor_bytes(const std::vector<int64_t>& ne, uint32_t type) {
    auto it = kBlocks.find(type);
    if (it == kBlocks.end() || ne.empty()) return 0;
    unsigned __int128 n = 1;
    for (int64_t d : ne) {
        if (d <= 0) return 0;
        n *= static_cast<uint64_t>(d);
        if (n > (static_cast<unsigned __int128>(1) << 62)) return 0;
    }
    if (ne[0] % it->second.elems != 0) return 0;
    return static_cast<uint64_t>(n / static_cast<uint64_t>(it->second.elems) * it->second.bytes);
}

// ---------------------------------------------------------------------------------------
// A little-endian byte builder and a GGUF writer on top of it.

struct Bytes {
    std::vector<uint8_t> b;
    template <typename T> Bytes& put(T v) {
        uint8_t raw[sizeof(T)];
        std::memcpy(raw, &v, sizeof(T));
        b.insert(b.end(), raw, raw + sizeof(T));
        return *this;
    }
    Bytes& str(const std::string& s) {
        put<uint64_t>(s.size());
        b.insert(b.end(), s.begin(), s.end());
        return *this;
    }
    Bytes& raw(const Bytes& other) {
        b.insert(b.end(), other.b.begin(), other.b.end());
        return *this;
    }
};

template <typename T> Bytes array_of(uint32_t elem_type, const std::vector<T>& values) {
    Bytes v;
    v.put<uint32_t>(elem_type).put<uint64_t>(values.size());
    for (const T& x : values) v.put<T>(x);
    return v;
}

Bytes string_array(const std::vector<std::string>& values) {
    Bytes v;
    v.put<uint32_t>(vt::STRING).put<uint64_t>(values.size());
    for (const std::string& s : values) v.str(s);
    return v;
}

struct TensorSpec {
    std::string name;
    std::vector<int64_t> ne;
    uint32_t type;
    std::optional<uint64_t> offset; // relative to the data section; auto-laid-out if empty
};

class GgufWriter {
public:
    uint32_t version = 3;
    uint8_t magic[4] = {'G', 'G', 'U', 'F'};
    std::optional<uint64_t> n_tensors_override, n_kv_override;
    uint64_t layout_alignment = 32; // must agree with any general.alignment written

    GgufWriter& kv(const std::string& key, uint32_t type, const Bytes& value) {
        kvs_.put<uint64_t>(key.size());
        kvs_.b.insert(kvs_.b.end(), key.begin(), key.end());
        kvs_.put<uint32_t>(type).raw(value);
        ++n_kv_;
        return *this;
    }
    template <typename T> GgufWriter& scalar(const std::string& key, uint32_t type, T v) {
        return kv(key, type, Bytes().put<T>(v));
    }
    GgufWriter& string(const std::string& key, const std::string& s) {
        return kv(key, vt::STRING, Bytes().str(s));
    }
    GgufWriter& tensor(TensorSpec spec) {
        tensors_.push_back(std::move(spec));
        return *this;
    }

    // Relative data offsets of the tensors, as build() lays them out.
    std::vector<uint64_t> offsets() const {
        std::vector<uint64_t> out;
        uint64_t next = 0;
        for (const TensorSpec& t : tensors_) {
            const uint64_t off = t.offset ? *t.offset : next;
            out.push_back(off);
            next = align(off + tensor_bytes(t.ne, t.type));
        }
        return out;
    }

    // Header + metadata + infos, padded to the alignment; the data section starts here.
    std::vector<uint8_t> header() const {
        Bytes f;
        for (uint8_t m : magic) f.put<uint8_t>(m);
        f.put<uint32_t>(version);
        f.put<uint64_t>(n_tensors_override ? *n_tensors_override : tensors_.size());
        f.put<uint64_t>(n_kv_override ? *n_kv_override : n_kv_);
        f.raw(kvs_);
        const std::vector<uint64_t> offs = offsets();
        for (size_t i = 0; i < tensors_.size(); ++i) {
            const TensorSpec& t = tensors_[i];
            f.str(t.name).put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
            for (int64_t d : t.ne) f.put<int64_t>(d);
            f.put<uint32_t>(t.type).put<uint64_t>(offs[i]);
        }
        f.b.resize(align(f.b.size()), 0);
        return f.b;
    }

    // The whole file. Tensor i's data bytes are pattern_byte(i, k); the file ends right after
    // the last byte of tensor data, so any shorter prefix misses data.
    std::vector<uint8_t> build() const {
        std::vector<uint8_t> file = header();
        const size_t data_start = file.size();
        const std::vector<uint64_t> offs = offsets();
        uint64_t end = 0;
        for (size_t i = 0; i < tensors_.size(); ++i)
            end = std::max(end, offs[i] + tensor_bytes(tensors_[i].ne, tensors_[i].type));
        file.resize(data_start + end, 0);
        for (size_t i = 0; i < tensors_.size(); ++i) {
            const uint64_t n = tensor_bytes(tensors_[i].ne, tensors_[i].type);
            for (uint64_t k = 0; k < n && offs[i] + k < end; ++k)
                file[data_start + offs[i] + k] = pattern_byte(i, k);
        }
        return file;
    }

    static uint8_t pattern_byte(size_t tensor, uint64_t k) {
        return static_cast<uint8_t>(k * 7 + tensor * 31 + 1);
    }

private:
    uint64_t align(uint64_t x) const {
        return (x + layout_alignment - 1) / layout_alignment * layout_alignment;
    }
    Bytes kvs_;
    uint64_t n_kv_ = 0;
    std::vector<TensorSpec> tensors_;
};

// A heap copy of exactly the file's size, so AddressSanitizer flags any read past the end.
class ExactBuffer {
public:
    explicit ExactBuffer(const std::vector<uint8_t>& bytes)
        : size_(bytes.size()), data_(new uint8_t[bytes.size() ? bytes.size() : 1]) {
        if (size_) std::memcpy(data_.get(), bytes.data(), size_);
    }
    const uint8_t* data() const { return data_.get(); }
    size_t size() const { return size_; }

private:
    size_t size_;
    std::unique_ptr<uint8_t[]> data_;
};

constexpr const char* kBadName = "bad.gguf";

// Parses `bytes` expecting a kvscope::Error (and nothing else) whose message starts with the
// file name and contains every one of `needles`. Returns the message.
std::string expect_error(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> needles) {
    ExactBuffer buf(bytes);
    try {
        GgufFile::parse(buf.data(), buf.size(), kBadName);
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_EQ(msg.rfind(std::string(kBadName) + ": ", 0), 0u) << msg;
        for (const std::string& needle : needles)
            EXPECT_NE(msg.find(needle), std::string::npos) << "'" << needle << "' not in: " << msg;
        return msg;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "threw a non-kvscope exception: " << e.what();
        return {};
    }
    ADD_FAILURE() << "parsed without error";
    return {};
}

// A valid file with one of every metadata type (nested arrays too) and five tensors.
GgufWriter rich_writer(uint32_t version, uint64_t alignment) {
    GgufWriter w;
    w.version = version;
    w.layout_alignment = alignment;
    w.string("general.architecture", "llama")
        .scalar<uint32_t>("general.alignment", vt::U32, static_cast<uint32_t>(alignment))
        .scalar<uint8_t>("t.u8", vt::U8, 200)
        .scalar<int8_t>("t.i8", vt::I8, -100)
        .scalar<uint16_t>("t.u16", vt::U16, 60000)
        .scalar<int16_t>("t.i16", vt::I16, -30000)
        .scalar<uint32_t>("t.u32", vt::U32, 4000000000u)
        .scalar<int32_t>("t.i32", vt::I32, -2000000000)
        .scalar<float>("t.f32", vt::F32, 1.5f)
        .scalar<uint8_t>("t.bool", vt::BOOL, 1)
        .string("t.string", std::string("h\xc3\xa9llo\0x", 8))
        .scalar<uint64_t>("t.u64", vt::U64, 18000000000000000000ull)
        .scalar<int64_t>("t.i64", vt::I64, -9000000000000000000ll)
        .scalar<double>("t.f64", vt::F64, -2.25)
        .kv("t.arr_u8", vt::ARRAY, array_of<uint8_t>(vt::U8, {1, 2, 255}))
        .kv("t.arr_i32", vt::ARRAY, array_of<int32_t>(vt::I32, {-1, 0, 7}))
        .kv("t.arr_f32", vt::ARRAY, array_of<float>(vt::F32, {0.5f, -4.0f}))
        .kv("t.arr_f64", vt::ARRAY, array_of<double>(vt::F64, {1e300}))
        .kv("t.arr_bool", vt::ARRAY, array_of<uint8_t>(vt::BOOL, {0, 1}))
        .kv("t.arr_str", vt::ARRAY, string_array({"a", "", "ccc"}))
        .kv("t.arr_empty", vt::ARRAY, array_of<uint64_t>(vt::U64, {}));
    // An array of two arrays of u16: [[1, 2], [3]].
    Bytes nested;
    nested.put<uint32_t>(vt::ARRAY).put<uint64_t>(2);
    nested.raw(array_of<uint16_t>(vt::U16, {1, 2})).raw(array_of<uint16_t>(vt::U16, {3}));
    w.kv("t.nested", vt::ARRAY, nested);

    w.tensor({"tok.weight", {64, 3}, gt::Q8_0, std::nullopt})
        .tensor({"norm.weight", {5}, gt::F32, std::nullopt})
        .tensor({"q4.weight", {32, 2, 1, 2}, gt::Q4_1, std::nullopt})
        .tensor({"k.weight", {256, 2}, gt::Q6_K, std::nullopt})
        .tensor({"h.weight", {3, 1, 1}, gt::F16, std::nullopt});
    return w;
}

// A small valid file for corruption tests: one string key, two tensors.
GgufWriter small_writer() {
    GgufWriter w;
    w.string("general.architecture", "llama").scalar<uint32_t>("llama.block_count", vt::U32, 2);
    w.tensor({"a", {32}, gt::Q4_0, std::nullopt}).tensor({"b", {4, 2}, gt::F32, std::nullopt});
    return w;
}

// ---------------------------------------------------------------------------------------
// Valid files

void check_rich_file(uint32_t version, uint64_t alignment) {
    const GgufWriter w = rich_writer(version, alignment);
    const std::vector<uint8_t> bytes = w.build();
    ExactBuffer buf(bytes);
    const GgufFile f = GgufFile::parse(buf.data(), buf.size(), "rich.gguf");

    EXPECT_EQ(f.version(), version);
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.path(), "rich.gguf");
    ASSERT_EQ(f.metadata().size(), 22u);
    EXPECT_EQ(f.metadata()[0].first, "general.architecture"); // file order kept
    EXPECT_EQ(f.metadata()[21].first, "t.nested");

    EXPECT_EQ(f.get_string("general.architecture"), "llama");
    EXPECT_EQ(f.get_uint("t.u8"), 200u);
    EXPECT_EQ(f.get_int("t.i8"), -100);
    EXPECT_EQ(f.get_uint("t.u16"), 60000u);
    EXPECT_EQ(f.get_int("t.i16"), -30000);
    EXPECT_EQ(f.get_uint("t.u32"), 4000000000u);
    EXPECT_EQ(f.get_int("t.u32"), 4000000000); // unsigned that fits int64
    EXPECT_EQ(f.get_int("t.i32"), -2000000000);
    EXPECT_EQ(f.get_float("t.f32"), 1.5);
    EXPECT_TRUE(f.get_bool("t.bool"));
    EXPECT_EQ(f.get_string("t.string"), std::string("h\xc3\xa9llo\0x", 8));
    EXPECT_EQ(f.get_uint("t.u64"), 18000000000000000000ull);
    EXPECT_EQ(f.get_int("t.i64"), -9000000000000000000ll);
    EXPECT_EQ(f.get_float("t.f64"), -2.25);

    EXPECT_EQ(f.find("t.u8")->type, GgufValueType::U8);
    EXPECT_EQ(f.find("t.i16")->type, GgufValueType::I16);
    EXPECT_EQ(f.find("t.f32")->type, GgufValueType::F32);
    EXPECT_EQ(f.find("nope"), nullptr);

    EXPECT_EQ(f.get_int_array("t.arr_u8"), (std::vector<int64_t>{1, 2, 255}));
    EXPECT_EQ(f.get_int_array("t.arr_i32"), (std::vector<int64_t>{-1, 0, 7}));
    EXPECT_EQ(f.get_float_array("t.arr_f32"), (std::vector<double>{0.5, -4.0}));
    EXPECT_EQ(f.get_float_array("t.arr_f64"), (std::vector<double>{1e300}));
    EXPECT_EQ(f.get_string_array("t.arr_str"), (std::vector<std::string>{"a", "", "ccc"}));
    EXPECT_TRUE(f.get_int_array("t.arr_empty").empty());
    const GgufValue* bools = f.find("t.arr_bool");
    ASSERT_NE(bools, nullptr);
    EXPECT_EQ(bools->elem_type, GgufValueType::BOOL);
    ASSERT_EQ(bools->array.size(), 2u);
    EXPECT_EQ(bools->array[1].u, 1u);

    const GgufValue* nested = f.find("t.nested");
    ASSERT_NE(nested, nullptr);
    EXPECT_EQ(nested->type, GgufValueType::ARRAY);
    EXPECT_EQ(nested->elem_type, GgufValueType::ARRAY);
    ASSERT_EQ(nested->array.size(), 2u);
    EXPECT_EQ(nested->array[0].elem_type, GgufValueType::U16);
    ASSERT_EQ(nested->array[0].array.size(), 2u);
    EXPECT_EQ(nested->array[0].array[1].u, 2u);
    ASSERT_EQ(nested->array[1].array.size(), 1u);
    EXPECT_EQ(nested->array[1].array[0].u, 3u);

    // Tensor infos, in file order, with absolute data offsets.
    const size_t data_start = w.header().size();
    const std::vector<uint64_t> rel = w.offsets();
    struct Expected { const char* name; kvscope::kernels::GgmlType type; std::vector<int64_t> ne; uint64_t bytes; };
    using kvscope::kernels::GgmlType;
    const std::vector<Expected> expected = {
        {"tok.weight", GgmlType::Q8_0, {64, 3}, 6 * 34},
        {"norm.weight", GgmlType::F32, {5}, 20},
        {"q4.weight", GgmlType::Q4_1, {32, 2, 1, 2}, 4 * 20},
        {"k.weight", GgmlType::Q6_K, {256, 2}, 2 * 210},
        {"h.weight", GgmlType::F16, {3, 1, 1}, 6},
    };
    ASSERT_EQ(f.tensors().size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
        SCOPED_TRACE(expected[i].name);
        const kvscope::GgufTensorInfo& t = f.tensors()[i];
        EXPECT_EQ(t.name, expected[i].name);
        EXPECT_EQ(t.type, expected[i].type);
        EXPECT_EQ(t.ne, expected[i].ne);
        EXPECT_EQ(t.n_bytes, expected[i].bytes);
        EXPECT_EQ(t.offset, data_start + rel[i]);
        EXPECT_EQ(t.offset % alignment, 0u);
        EXPECT_EQ(f.tensor(t.name), &t);
        const uint8_t* p = f.tensor_data(t);
        EXPECT_EQ(p, buf.data() + data_start + rel[i]);
        for (uint64_t k = 0; k < t.n_bytes; ++k)
            ASSERT_EQ(p[k], GgufWriter::pattern_byte(i, k)) << "byte " << k;
    }
    EXPECT_EQ(f.tensors()[2].n_elements(), 128);
    EXPECT_EQ(f.tensor("absent"), nullptr);
}

TEST(Gguf, ParsesV3WithEveryValueType) { check_rich_file(3, 64); }
TEST(Gguf, ParsesV2WithEveryValueType) { check_rich_file(2, 32); }
TEST(Gguf, HonoursLargeAlignment) { check_rich_file(3, 256); }

TEST(Gguf, DefaultAlignmentIs32) {
    GgufWriter w;
    w.string("general.architecture", "llama");
    w.tensor({"x", {3}, gt::F32, std::nullopt}).tensor({"y", {7}, gt::F16, std::nullopt});
    const std::vector<uint8_t> bytes = w.build();
    ExactBuffer buf(bytes);
    const GgufFile f = GgufFile::parse(buf.data(), buf.size(), "d.gguf");
    EXPECT_EQ(f.alignment(), 32u);
    EXPECT_EQ(f.tensors()[1].offset, w.header().size() + 32);
}

TEST(Gguf, EmptyFileWithNoTensorsIsValid) {
    GgufWriter w;
    const std::vector<uint8_t> bytes = w.build();
    ExactBuffer buf(bytes);
    const GgufFile f = GgufFile::parse(buf.data(), buf.size(), "e.gguf");
    EXPECT_TRUE(f.metadata().empty());
    EXPECT_TRUE(f.tensors().empty());
}

TEST(Gguf, OpenMapsTheFileAndCopiesShareIt) {
    const std::vector<uint8_t> bytes = rich_writer(3, 32).build();
    const std::string path =
        (std::filesystem::temp_directory_path() / ("kvscope_test_gguf_" + std::to_string(::getpid()) + ".gguf"))
            .string();
    {
        std::ofstream out(path, std::ios::binary);
        out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
    std::optional<GgufFile> copy;
    {
        const GgufFile f = GgufFile::open(path);
        EXPECT_EQ(f.path(), path);
        copy = f;
    }
    std::filesystem::remove(path); // the mapping outlives the name
    const kvscope::GgufTensorInfo* t = copy->tensor("norm.weight");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(copy->tensor_data(*t)[0], GgufWriter::pattern_byte(1, 0));
    EXPECT_EQ(copy->get_string("general.architecture"), "llama");
}

TEST(Gguf, OpenMissingFileNamesIt) {
    try {
        GgufFile::open("/nonexistent/dir/model.gguf");
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/model.gguf"), std::string::npos);
    }
}

// ---------------------------------------------------------------------------------------
// Typed getters

std::string getter_error(const std::function<void()>& call) {
    try {
        call();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(Gguf, TypedGettersRefuseOtherTypes) {
    GgufWriter w;
    w.scalar<uint32_t>("k.u32", vt::U32, 7)
        .scalar<int32_t>("k.neg", vt::I32, -3)
        .scalar<uint64_t>("k.big", vt::U64, 1ull << 63)
        .scalar<float>("k.f32", vt::F32, 2.0f)
        .scalar<uint8_t>("k.bool", vt::BOOL, 0)
        .string("k.str", "s")
        .kv("k.ints", vt::ARRAY, array_of<int32_t>(vt::I32, {1}))
        .kv("k.bigs", vt::ARRAY, array_of<uint64_t>(vt::U64, {1ull << 63}))
        .kv("k.strs", vt::ARRAY, string_array({"x"}));
    const std::vector<uint8_t> bytes = w.build();
    ExactBuffer buf(bytes);
    const GgufFile f = GgufFile::parse(buf.data(), buf.size(), "g.gguf");

    struct Case { std::function<void()> call; std::string key, needle; };
    const std::vector<Case> cases = {
        {[&] { f.get_string("k.u32"); }, "k.u32", "string"},
        {[&] { f.get_uint("k.neg"); }, "k.neg", "negative"},
        {[&] { f.get_uint("k.str"); }, "k.str", "integer"},
        {[&] { f.get_int("k.big"); }, "k.big", "int64"},
        {[&] { f.get_int("k.f32"); }, "k.f32", "integer"},
        {[&] { f.get_float("k.u32"); }, "k.u32", "float"},
        {[&] { f.get_bool("k.u32"); }, "k.u32", "bool"},
        {[&] { f.get_uint("k.bool"); }, "k.bool", "bool"},
        {[&] { f.get_string_array("k.ints"); }, "k.ints", "array of string"},
        {[&] { f.get_int_array("k.strs"); }, "k.strs", "array of integers"},
        {[&] { f.get_int_array("k.bigs"); }, "k.bigs", "int64"},
        {[&] { f.get_float_array("k.ints"); }, "k.ints", "float"},
        {[&] { f.get_int_array("k.u32"); }, "k.u32", "uint32"},
        {[&] { f.get_string("missing.key"); }, "missing.key", "missing"},
        {[&] { f.get_uint("missing.key"); }, "missing.key", "missing"},
    };
    for (const Case& c : cases) {
        const std::string msg = getter_error(c.call);
        EXPECT_EQ(msg.rfind("g.gguf: " + c.key + ": ", 0), 0u) << msg;
        EXPECT_NE(msg.find(c.needle), std::string::npos) << msg;
    }
    EXPECT_EQ(f.get_uint("k.u32"), 7u);
    EXPECT_FALSE(f.get_bool("k.bool"));
}

// ---------------------------------------------------------------------------------------
// Corrupted and hostile files: each must give a clean Error naming the file and the field.

TEST(GgufCorrupt, BadMagic) {
    GgufWriter w = small_writer();
    w.magic[3] = 'X';
    expect_error(w.build(), {"magic"});
}

TEST(GgufCorrupt, EmptyFile) { expect_error({}, {"magic", "truncated"}); }

TEST(GgufCorrupt, UnsupportedVersions) {
    for (uint32_t version : {0u, 1u, 4u, 1000u}) {
        SCOPED_TRACE(version);
        GgufWriter w = small_writer();
        w.version = version;
        expect_error(w.build(), {"version", std::to_string(version)});
    }
}

TEST(GgufCorrupt, BigEndianFileIsNamedAsSuch) {
    GgufWriter w = small_writer();
    w.version = 0x03000000; // 3 written big-endian
    expect_error(w.build(), {"version", "big-endian"});
}

// Every strict prefix of a valid file is refused cleanly; AddressSanitizer watches the reads.
TEST(GgufCorrupt, TruncatedAtEveryByte) {
    const std::vector<uint8_t> full = rich_writer(3, 32).build();
    ExactBuffer whole(full);
    ASSERT_NO_THROW(GgufFile::parse(whole.data(), whole.size(), kBadName));
    for (size_t len = 0; len < full.size(); ++len) {
        SCOPED_TRACE("prefix of " + std::to_string(len) + " bytes");
        expect_error(std::vector<uint8_t>(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(len)), {});
    }
}

TEST(GgufCorrupt, TruncatedHeaderNamesTheField) {
    const std::vector<uint8_t> full = small_writer().build();
    expect_error({full.begin(), full.begin() + 6}, {"version", "truncated"});
    expect_error({full.begin(), full.begin() + 12}, {"n_tensors", "truncated"});
    expect_error({full.begin(), full.begin() + 20}, {"n_kv", "truncated"});
    // Mid-way through a key's value ("llama" starts at 24 + 8 + 20 + 4 + 8).
    GgufWriter one_key;
    one_key.string("general.architecture", "llama");
    const std::vector<uint8_t> kv_file = one_key.build();
    expect_error({kv_file.begin(), kv_file.begin() + 66}, {"general.architecture", "truncated"});
}

TEST(GgufCorrupt, TruncatedData) {
    std::vector<uint8_t> bytes = small_writer().build();
    bytes.resize(bytes.size() - 1);
    expect_error(bytes, {"tensor 'b'", "offset", "past the end"});
}

TEST(GgufCorrupt, DuplicateMetadataKey) {
    GgufWriter w = small_writer();
    w.scalar<uint32_t>("llama.block_count", vt::U32, 3);
    expect_error(w.build(), {"llama.block_count", "duplicate"});
}

TEST(GgufCorrupt, DuplicateTensorName) {
    GgufWriter w = small_writer();
    w.tensor({"a", {4}, gt::F32, std::nullopt});
    expect_error(w.build(), {"tensor 'a'", "duplicate"});
}

TEST(GgufCorrupt, TensorCountLargerThanTheFileCouldHold) {
    for (uint64_t n : {uint64_t{1} << 62, ~uint64_t{0}, uint64_t{1000}}) {
        SCOPED_TRACE(n);
        GgufWriter w = small_writer();
        w.n_tensors_override = n;
        expect_error(w.build(), {"n_tensors"});
    }
}

TEST(GgufCorrupt, KvCountLargerThanTheFileCouldHold) {
    for (uint64_t n : {uint64_t{1} << 62, ~uint64_t{0}, uint64_t{1000}}) {
        SCOPED_TRACE(n);
        GgufWriter w = small_writer();
        w.n_kv_override = n;
        expect_error(w.build(), {"n_kv"});
    }
}

TEST(GgufCorrupt, CountsThatFitButLieRunOutCleanly) {
    GgufWriter w = small_writer();
    w.n_kv_override = 3; // one more pair than written: the tensor infos are read as a pair
    expect_error(w.build(), {});
}

TEST(GgufCorrupt, StringLengthPastEnd) {
    GgufWriter w = small_writer();
    Bytes v;
    v.put<uint64_t>(1u << 20);
    v.b.insert(v.b.end(), {'a', 'b'});
    w.kv("general.name", vt::STRING, v);
    expect_error(w.build(), {"general.name", "truncated"});
}

TEST(GgufCorrupt, HugeStringLength) {
    GgufWriter w = small_writer();
    w.kv("general.name", vt::STRING, Bytes().put<uint64_t>(~uint64_t{0}));
    expect_error(w.build(), {"general.name", "truncated"});
}

TEST(GgufCorrupt, KeyLengthPastEnd) {
    std::vector<uint8_t> bytes = small_writer().build();
    // The first key's length field sits right after the 24-byte header.
    const uint64_t huge = uint64_t{1} << 40;
    std::memcpy(&bytes[24], &huge, sizeof huge);
    expect_error(bytes, {"key", "truncated"});
}

TEST(GgufCorrupt, HugeArrayLength) {
    for (uint32_t elem : {vt::U8, vt::U64, vt::STRING, vt::ARRAY}) {
        SCOPED_TRACE(elem);
        GgufWriter w = small_writer();
        w.kv("tokenizer.ggml.tokens", vt::ARRAY, Bytes().put<uint32_t>(elem).put<uint64_t>(uint64_t{1} << 61));
        expect_error(w.build(), {"tokenizer.ggml.tokens", "cannot fit"});
    }
}

TEST(GgufCorrupt, StringArrayLongerThanTheBytesLeft) {
    // 40 strings need at least 320 bytes of lengths; the rest of the file is shorter.
    GgufWriter w = small_writer();
    w.kv("tokenizer.ggml.tokens", vt::ARRAY, Bytes().put<uint32_t>(vt::STRING).put<uint64_t>(40));
    expect_error(w.build(), {"tokenizer.ggml.tokens"});
}

TEST(GgufCorrupt, UnknownValueType) {
    GgufWriter w = small_writer();
    w.kv("general.weird", 13, Bytes().put<uint32_t>(0));
    expect_error(w.build(), {"general.weird", "value type 13"});
    GgufWriter a = small_writer();
    a.kv("general.weird", vt::ARRAY, Bytes().put<uint32_t>(99).put<uint64_t>(1));
    expect_error(a.build(), {"general.weird", "value type 99"});
}

TEST(GgufCorrupt, BoolOtherThanZeroOrOne) {
    GgufWriter w = small_writer();
    w.scalar<uint8_t>("tokenizer.ggml.add_bos_token", vt::BOOL, 2);
    expect_error(w.build(), {"tokenizer.ggml.add_bos_token", "bool"});
}

TEST(GgufCorrupt, DeeplyNestedArrays) {
    Bytes v;
    for (int i = 0; i < 100; ++i) v.put<uint32_t>(vt::ARRAY).put<uint64_t>(1);
    v.put<uint32_t>(vt::U8).put<uint64_t>(0);
    GgufWriter w = small_writer();
    w.kv("general.deep", vt::ARRAY, v);
    expect_error(w.build(), {"general.deep", "nested"});
}

TEST(GgufCorrupt, BadAlignment) {
    for (uint32_t a : {0u, 3u, 48u}) {
        SCOPED_TRACE(a);
        GgufWriter w = small_writer();
        w.scalar<uint32_t>("general.alignment", vt::U32, a);
        expect_error(w.build(), {"general.alignment", "power of two"});
    }
    GgufWriter s = small_writer();
    s.string("general.alignment", "32");
    expect_error(s.build(), {"general.alignment", "string"});
}

TEST(GgufCorrupt, TensorOffsetPastTheEnd) {
    GgufWriter w = small_writer();
    w.tensor({"c", {8}, gt::F32, uint64_t{1} << 40});
    std::vector<uint8_t> bytes = w.header(); // build() would write c's data, 1 TiB away
    bytes.resize(bytes.size() + 64 + 32);    // a and b, then 32 more bytes
    expect_error(bytes, {"tensor 'c'", "offset", "past the end"});
}

TEST(GgufCorrupt, TensorOffsetNearUint64Max) {
    GgufWriter w = small_writer();
    w.tensor({"c", {8}, gt::F32, ~uint64_t{0} - 31}); // aligned, and offset + size wraps
    std::vector<uint8_t> bytes = w.header();
    bytes.resize(bytes.size() + 64 + 32);
    expect_error(bytes, {"tensor 'c'", "offset"});
}

TEST(GgufCorrupt, OverlappingTensors) {
    GgufWriter w;
    w.tensor({"first", {16}, gt::F32, uint64_t{0}}).tensor({"second", {16}, gt::F32, uint64_t{32}});
    expect_error(w.build(), {"tensor 'second'", "overlaps", "first", "offset"});
    GgufWriter same; // identical ranges
    same.tensor({"p", {8}, gt::F32, uint64_t{0}}).tensor({"q", {8}, gt::F32, uint64_t{0}});
    expect_error(same.build(), {"overlaps"});
}

TEST(GgufCorrupt, MisalignedOffset) {
    GgufWriter w;
    w.tensor({"a", {4}, gt::F32, uint64_t{0}}).tensor({"b", {4}, gt::F32, uint64_t{16}});
    expect_error(w.build(), {"tensor 'b'", "offset 16", "alignment 32"});
}

TEST(GgufCorrupt, MoreThanFourDims) {
    GgufWriter w;
    w.tensor({"five", {1, 1, 1, 1, 1}, gt::F32, std::nullopt});
    expect_error(w.build(), {"tensor 'five'", "n_dims 5"});
}

TEST(GgufCorrupt, ZeroDims) {
    GgufWriter w;
    w.tensor({"scalar", {}, gt::F32, std::nullopt});
    expect_error(w.build(), {"tensor 'scalar'", "n_dims 0"});
}

TEST(GgufCorrupt, ZeroOrNegativeDim) {
    for (int64_t bad : {int64_t{0}, int64_t{-1}, std::numeric_limits<int64_t>::min()}) {
        SCOPED_TRACE(bad);
        GgufWriter w;
        w.tensor({"w", {4, bad}, gt::F32, std::nullopt});
        expect_error(w.build(), {"tensor 'w'", "not positive"});
    }
}

TEST(GgufCorrupt, ShapeProductOverflows) {
    GgufWriter w;
    w.tensor({"huge", {int64_t{1} << 32, int64_t{1} << 32}, gt::F32, std::nullopt});
    expect_error(w.build(), {"tensor 'huge'", "elements"});
    // Fits in int64 elements, but the F32 byte size does not fit in 64 bits... or the file.
    GgufWriter b;
    b.tensor({"big", {int64_t{1} << 31, int64_t{1} << 31}, gt::F32, std::nullopt});
    expect_error(b.build(), {"tensor 'big'"});
}

TEST(GgufCorrupt, UnknownTensorType) {
    for (uint32_t type : {99u, gt::Q5_0, ~0u}) {
        SCOPED_TRACE(type);
        GgufWriter w;
        w.tensor({"t", {32}, type, std::nullopt});
        expect_error(w.build(), {"tensor 't'", "type id " + std::to_string(type)});
    }
}

TEST(GgufCorrupt, RowNotAWholeNumberOfBlocks) {
    GgufWriter w;
    w.tensor({"q", {48, 2}, gt::Q4_1, std::nullopt});
    expect_error(w.build(), {"tensor 'q'", "ne[0] = 48", "Q4_1", "32"});
    GgufWriter k;
    k.tensor({"k", {128}, gt::Q4_K, std::nullopt});
    expect_error(k.build(), {"tensor 'k'", "256"});
}

// Every single-byte change in the header region either parses or gives an Error: never a
// crash, a hang, a huge allocation or another exception.
TEST(GgufCorrupt, SingleByteMutationsOfTheHeader) {
    const GgufWriter w = rich_writer(3, 32);
    const std::vector<uint8_t> good = w.build();
    const size_t header_size = w.header().size();
    int parsed = 0, refused = 0;
    for (size_t pos = 0; pos < header_size; ++pos) {
        for (uint8_t value : {uint8_t{0x00}, uint8_t{0xff}, static_cast<uint8_t>(good[pos] ^ 0x80),
                              static_cast<uint8_t>(good[pos] + 1)}) {
            std::vector<uint8_t> bad = good;
            bad[pos] = value;
            ExactBuffer buf(bad);
            try {
                GgufFile::parse(buf.data(), buf.size(), kBadName);
                ++parsed;
            } catch (const Error&) {
                ++refused;
            } catch (const std::exception& e) {
                ADD_FAILURE() << "byte " << pos << " = " << int(value) << ": " << e.what();
            }
        }
    }
    EXPECT_GT(refused, 0);
    EXPECT_GT(parsed, 0); // e.g. changed string bytes or scalar values
}

// ---------------------------------------------------------------------------------------
// The real default model

TEST(GgufModel, DefaultModelHeader) {
    const std::string path = kvscope::default_model_path();
    if (!std::filesystem::exists(path))
        FAIL() << "the default model is missing at " << path << ": run ./setup.sh to fetch it";
    const GgufFile f = GgufFile::open(path);
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.get_string("general.architecture"), "llama");
    EXPECT_EQ(f.get_uint("llama.block_count"), 30u);
    EXPECT_EQ(f.get_uint("llama.attention.head_count"), 9u);
    EXPECT_EQ(f.get_uint("llama.attention.head_count_kv"), 3u);
    EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens").size(), 49152u);

    ASSERT_EQ(f.tensors().size(), 272u);
    std::map<kvscope::kernels::GgmlType, int> by_type;
    for (const kvscope::GgufTensorInfo& t : f.tensors()) ++by_type[t.type];
    using kvscope::kernels::GgmlType;
    EXPECT_EQ(by_type[GgmlType::Q4_1], 210);
    EXPECT_EQ(by_type[GgmlType::F32], 61);
    EXPECT_EQ(by_type[GgmlType::Q8_0], 1);
    const kvscope::GgufTensorInfo* embd = f.tensor("token_embd.weight");
    ASSERT_NE(embd, nullptr);
    EXPECT_EQ(embd->type, GgmlType::Q8_0);
    EXPECT_EQ(embd->ne, (std::vector<int64_t>{576, 49152}));
}

} // namespace
