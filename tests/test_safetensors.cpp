// safetensors reader: the happy path (dtypes, shapes, data, metadata, shards) and an
// enumerated list of handcrafted corruptions, each of which must give a kvscope::Error
// naming the file and the field. Files are built in memory by a tiny writer below; one
// test cross-checks against files written by the Python `safetensors` package.
//
// [SECTION] a tiny writer
// [SECTION] happy path
// [SECTION] corruptions of one file
// [SECTION] model directories
// [SECTION] cross-check with the Python writer

#include "core/error.h"
#include "core/safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using kvscope::Error;
using kvscope::SafetensorsFile;
using kvscope::SafetensorsModel;
using kvscope::StDtype;

namespace {

//-----------------------------------------------------------------------------
// [SECTION] a tiny writer
//-----------------------------------------------------------------------------

std::string u64_le(uint64_t v) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = char((v >> (8 * i)) & 0xff);
    return out;
}

// A file from raw parts, so tests can write any header text, valid or not.
std::string st_file(const std::string& header, const std::string& data = "") {
    return u64_le(header.size()) + header + data;
}

template <class T> std::string bytes_of(const std::vector<T>& values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

struct TensorSpec {
    std::string name;
    std::string dtype;
    std::vector<int64_t> shape;
    std::string bytes;
};

// A well-formed file: tensors laid out back to back in the given order.
std::string st_file(const std::vector<TensorSpec>& tensors, const nlohmann::json& metadata = nullptr) {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.is_null()) header["__metadata__"] = metadata;
    std::string data;
    for (const TensorSpec& t : tensors) {
        header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
        data += t.bytes;
    }
    return st_file(header.dump(), data);
}

// A file of one F32 tensor "w" whose entry is the given JSON text, with `data_bytes` of data.
std::string one_entry(const std::string& entry, size_t data_bytes = 8) {
    return st_file("{\"w\": " + entry + "}", std::string(data_bytes, '\x11'));
}

// Parses from an exact-size heap copy, so a read past the end is caught by ASan.
SafetensorsFile parse(const std::string& file, const std::string& name = "mem.safetensors") {
    std::vector<uint8_t> copy(file.begin(), file.end());
    return SafetensorsFile::parse(copy.data(), copy.size(), name);
}

// Passes when `fn` throws kvscope::Error "<file>: <field>: ..." containing `detail`.
::testing::AssertionResult throws_error(const std::function<void()>& fn, const std::string& file,
                                        const std::string& field, const std::string& detail) {
    try {
        fn();
    } catch (const Error& e) {
        std::string what = e.what();
        std::string prefix = file + ": " + field + ": ";
        if (what.rfind(prefix, 0) != 0) return ::testing::AssertionFailure() << "message '" << what << "' does not start with '" << prefix << "'";
        if (what.find(detail) == std::string::npos) return ::testing::AssertionFailure() << "message '" << what << "' lacks '" << detail << "'";
        return ::testing::AssertionSuccess() << what;
    } catch (const std::exception& e) {
        return ::testing::AssertionFailure() << "threw a non-kvscope exception: " << e.what();
    }
    return ::testing::AssertionFailure() << "did not throw";
}

::testing::AssertionResult bad_file(const std::string& file, const std::string& field, const std::string& detail) {
    return throws_error([&] { parse(file); }, "mem.safetensors", field, detail);
}

// A fresh, empty directory per test under the build tree.
fs::path fresh_dir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    fs::path dir = fs::path(KVSCOPE_BINARY_DIR) / "test_safetensors_tmp" / info->name();
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
}

void write_file(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string f32s(std::vector<float> v) { return bytes_of(v); }

} // namespace

//-----------------------------------------------------------------------------
// [SECTION] happy path
//-----------------------------------------------------------------------------

TEST(Safetensors, ReadsDtypesShapesDataAndMetadata) {
    std::vector<TensorSpec> specs = {
        {"model.embed_tokens.weight", "F32", {2, 3}, f32s({1, 2, 3, 4, 5, 6})},
        {"f16", "F16", {4}, bytes_of(std::vector<uint16_t>{0x3c00, 0x4000, 0xc000, 0x0000})},
        {"bf16", "BF16", {2, 2}, bytes_of(std::vector<uint16_t>{0x3f80, 0x4000, 0x4040, 0x4080})},
        {"ids", "I64", {1}, bytes_of(std::vector<int64_t>{-7})},
        {"scalar", "U8", {}, std::string("\x2a", 1)},
        {"empty", "BOOL", {0, 5}, ""},
        {"f64", "F64", {1, 1}, bytes_of(std::vector<double>{0.25})},
    };
    std::string file = st_file(specs, {{"format", "pt"}, {"note", "hi"}});
    std::vector<uint8_t> buf(file.begin(), file.end());
    SafetensorsFile st = SafetensorsFile::parse(buf.data(), buf.size(), "mem.safetensors");

    EXPECT_EQ(st.path(), "mem.safetensors");
    EXPECT_EQ(st.metadata().size(), 2u);
    EXPECT_EQ(st.metadata().at("format"), "pt");
    ASSERT_EQ(st.tensors().size(), specs.size());
    uint64_t header_len = 0;
    std::memcpy(&header_len, buf.data(), 8); // little-endian host
    const uint8_t* data_start = buf.data() + 8 + header_len;
    for (size_t i = 0; i < specs.size(); ++i) { // file order = order of data_offsets
        const kvscope::StTensor& t = st.tensors()[i];
        SCOPED_TRACE(t.name);
        EXPECT_EQ(t.name, specs[i].name);
        EXPECT_EQ(std::string(kvscope::st_dtype_name(t.dtype)), specs[i].dtype);
        EXPECT_EQ(t.shape, specs[i].shape);
        EXPECT_EQ(t.n_bytes, specs[i].bytes.size());
        EXPECT_EQ(t.file, "mem.safetensors");
        EXPECT_GE(t.data, data_start);
        EXPECT_LE(t.data + t.n_bytes, buf.data() + buf.size());
        EXPECT_EQ(std::memcmp(t.data, specs[i].bytes.data(), t.n_bytes), 0);
    }
    EXPECT_EQ(st.tensors()[0].data, data_start);
    float first_row[3];
    std::memcpy(first_row, st.tensors()[0].data, sizeof first_row);
    EXPECT_EQ(first_row[2], 3.0f);
    EXPECT_EQ(st.tensors()[1].dtype, StDtype::F16);
    EXPECT_EQ(st.tensors()[2].dtype, StDtype::BF16);
}

TEST(Safetensors, DtypeTable) {
    struct { StDtype dtype; const char* name; size_t size; } table[] = {
        {StDtype::F32, "F32", 4}, {StDtype::F16, "F16", 2}, {StDtype::BF16, "BF16", 2}, {StDtype::F64, "F64", 8},
        {StDtype::I64, "I64", 8}, {StDtype::I32, "I32", 4}, {StDtype::I16, "I16", 2},  {StDtype::I8, "I8", 1},
        {StDtype::U8, "U8", 1},   {StDtype::BOOL, "BOOL", 1},
    };
    for (const auto& row : table) {
        EXPECT_STREQ(kvscope::st_dtype_name(row.dtype), row.name);
        EXPECT_EQ(kvscope::st_dtype_size(row.dtype), row.size);
    }
}

TEST(Safetensors, OrdersTensorsByOffsetAndAcceptsPaddingAndExtraKeys) {
    // Entries listed out of data order, header padded with spaces (as the Python writer
    // does), an unknown extra key in an entry, and an empty header.
    std::string header = R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8], "extra": 1},)"
                         R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}      )";
    SafetensorsFile st = parse(st_file(header, f32s({1, 2})));
    ASSERT_EQ(st.tensors().size(), 2u);
    EXPECT_EQ(st.tensors()[0].name, "a");
    EXPECT_EQ(st.tensors()[1].name, "b");
    EXPECT_TRUE(st.metadata().empty());

    EXPECT_TRUE(parse(st_file("{}")).tensors().empty());
}

//-----------------------------------------------------------------------------
// [SECTION] corruptions of one file
//-----------------------------------------------------------------------------

TEST(SafetensorsCorrupt, HeaderLength) {
    EXPECT_TRUE(bad_file("", "header length", "fewer than 8"));
    EXPECT_TRUE(bad_file("\x01\x00\x00", "header length", "fewer than 8"));
    EXPECT_TRUE(bad_file(u64_le(3) + "{}", "header length", "only 2 follow"));
    EXPECT_TRUE(bad_file(u64_le(~0ull) + "{}", "header length", "only 2 follow"));
    // A valid file cut inside its header.
    std::string valid = st_file({{"w", "F32", {2}, f32s({1, 2})}});
    EXPECT_TRUE(bad_file(valid.substr(0, 20), "header length", "follow"));
}

TEST(SafetensorsCorrupt, HeaderNotJsonOrNotObject) {
    EXPECT_TRUE(bad_file(st_file("{\"w\": {\"dtype\""), "header", "not valid JSON"));
    EXPECT_TRUE(bad_file(st_file("hello"), "header", "not valid JSON"));
    EXPECT_TRUE(bad_file(st_file(""), "header", "not valid JSON"));
    EXPECT_TRUE(bad_file(st_file("{} trailing"), "header", "not valid JSON"));
    EXPECT_TRUE(bad_file(st_file(std::string("{\"\xff\": 1}")), "header", "not valid JSON")); // bad UTF-8
    EXPECT_TRUE(bad_file(st_file("[1, 2]"), "header", "not a JSON object"));
    EXPECT_TRUE(bad_file(st_file("\"text\""), "header", "not a JSON object"));
    EXPECT_TRUE(bad_file(st_file("null"), "header", "not a JSON object"));
}

TEST(SafetensorsCorrupt, MissingMembers) {
    EXPECT_TRUE(bad_file(one_entry(R"({"shape": [2], "data_offsets": [0, 8]})"), "tensor 'w'", "missing \"dtype\""));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "data_offsets": [0, 8]})"), "tensor 'w'", "missing \"shape\""));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [2]})"), "tensor 'w'", "missing \"data_offsets\""));
}

TEST(SafetensorsCorrupt, WrongJsonTypes) {
    EXPECT_TRUE(bad_file(one_entry("5"), "tensor 'w'", "not an object"));
    EXPECT_TRUE(bad_file(one_entry("[\"F32\"]"), "tensor 'w'", "not an object"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": 4, "shape": [2], "data_offsets": [0, 8]})"), "tensor 'w'", "\"dtype\" is not a string"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": "2", "data_offsets": [0, 8]})"), "tensor 'w'", "\"shape\" is not an array"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]})"), "tensor 'w'", "not an integer"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [[2]], "data_offsets": [0, 8]})"), "tensor 'w'", "not an integer"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [2], "data_offsets": [0]})"), "tensor 'w'", "not an array of 2"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]})"), "tensor 'w'", "not an array of 2"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [2], "data_offsets": {"a": 0, "b": 8}})"), "tensor 'w'", "not an array of 2"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [2], "data_offsets": ["0", 8]})"), "tensor 'w'", "not non-negative integers"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [2], "data_offsets": [-8, 8]})"), "tensor 'w'", "not non-negative integers"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 8.0]})"), "tensor 'w'", "not non-negative integers"));
    EXPECT_TRUE(bad_file(st_file(R"({"__metadata__": ["a"]})"), "__metadata__", "not an object"));
    EXPECT_TRUE(bad_file(st_file(R"({"__metadata__": {"format": 1}})"), "__metadata__", "'format' is not a string"));
}

TEST(SafetensorsCorrupt, UnknownDtype) {
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]})"), "tensor 'w'", "unknown or unsupported dtype 'F8_E4M3'"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "f32", "shape": [2], "data_offsets": [0, 8]})"), "tensor 'w'", "dtype 'f32'"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "", "shape": [2], "data_offsets": [0, 8]})"), "tensor 'w'", "dtype ''"));
}

TEST(SafetensorsCorrupt, BadDimensions) {
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]})"), "tensor 'w'", "negative dimension -2"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]})"), "tensor 'w'", "negative dimension -1"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 8]})"), "tensor 'w'", "dimension too large"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "U8", "shape": [18446744073709551616], "data_offsets": [0, 8]})"), "tensor 'w'", "not an integer"));
}

TEST(SafetensorsCorrupt, ShapeProductOverflow) {
    // 2^32 * 2^32 elements: the element count itself overflows.
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]})"), "tensor 'w'", "overflows 64 bits"));
    // 2^62 elements fit, but 2^62 * 4 bytes does not.
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 8]})"), "tensor 'w'", "overflows 64 bits"));
    // Wraps to exactly 0 in 64 bits: must not be mistaken for an empty tensor.
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]})"), "tensor 'w'", "overflows 64 bits"));
}

TEST(SafetensorsCorrupt, OffsetsOutOfOrderOrPastEnd) {
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [0], "data_offsets": [8, 0]})"), "tensor 'w'", "out of order (8 > 0)"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [2], "data_offsets": [4, 12]})"), "tensor 'w'", "past the data section (8 bytes)"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [0], "data_offsets": [9, 9]})"), "tensor 'w'", "past the data section"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551615, 0]})"), "tensor 'w'", "out of order"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "U8", "shape": [0], "data_offsets": [18446744073709551615, 18446744073709551615]})"), "tensor 'w'", "past the data section"));
}

TEST(SafetensorsCorrupt, SizeMismatch) {
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]})"), "tensor 'w'", "shape needs 12 bytes, data_offsets give 8"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F16", "shape": [2], "data_offsets": [0, 8]})"), "tensor 'w'", "shape needs 4 bytes"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "shape": [], "data_offsets": [0, 8]})"), "tensor 'w'", "shape needs 4 bytes"));
}

TEST(SafetensorsCorrupt, OverlappingTensors) {
    std::string header = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                         R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})";
    EXPECT_TRUE(bad_file(st_file(header, std::string(12, '\0')), "tensor 'b'", "overlaps tensor 'a'"));
    std::string same = R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                       R"( "b": {"dtype": "I32", "shape": [1], "data_offsets": [0, 4]}})";
    EXPECT_TRUE(bad_file(st_file(same, std::string(4, '\0')), "tensor 'b'", "overlaps tensor 'a'"));
    std::string inside = R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},)"
                         R"( "b": {"dtype": "U8", "shape": [2], "data_offsets": [3, 5]}})";
    EXPECT_TRUE(bad_file(st_file(inside, std::string(8, '\0')), "tensor 'b'", "overlaps tensor 'a'"));
}

TEST(SafetensorsCorrupt, DuplicateNames) {
    std::string header = R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                         R"( "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})";
    EXPECT_TRUE(bad_file(st_file(header, std::string(8, '\0')), "tensor 'w'", "duplicate name"));
    EXPECT_TRUE(bad_file(one_entry(R"({"dtype": "F32", "dtype": "F16", "shape": [2], "data_offsets": [0, 8]})"), "header", "duplicate key 'dtype' in 'w'"));
    EXPECT_TRUE(bad_file(st_file(R"({"__metadata__": {"a": "1", "a": "2"}})"), "header", "duplicate key 'a' in '__metadata__'"));
    EXPECT_TRUE(bad_file(st_file(R"({"__metadata__": {}, "__metadata__": {}})"), "tensor '__metadata__'", "duplicate name"));
}

// A hostile header nested very deeply must not exhaust the stack (nlohmann's parser
// and destructor are iterative).
TEST(SafetensorsCorrupt, DeeplyNestedHeader) {
    const int depth = 100000;
    EXPECT_TRUE(bad_file(st_file(std::string(depth, '[') + std::string(depth, ']')), "header", "not a JSON object"));
    std::string nested;
    for (int i = 0; i < depth; ++i) nested += "{\"a\":";
    nested += "1" + std::string(depth, '}');
    EXPECT_TRUE(bad_file(st_file(nested), "tensor 'a'", "missing \"dtype\""));
}

// Every prefix of a valid file is a corrupt file: a clean Error, never a crash or a read
// past the end (the parse copies into an exact-size buffer for ASan).
TEST(SafetensorsCorrupt, EveryTruncationIsAnError) {
    std::string valid = st_file({{"a", "F32", {2, 2}, f32s({1, 2, 3, 4})}, {"b", "BF16", {3}, std::string(6, '\x01')}},
                                {{"format", "pt"}});
    ASSERT_NO_THROW(parse(valid));
    for (size_t n = 0; n < valid.size(); ++n) {
        SCOPED_TRACE("prefix of " + std::to_string(n) + " bytes");
        try {
            parse(valid.substr(0, n));
            ADD_FAILURE() << "no error";
        } catch (const Error& e) {
            EXPECT_EQ(std::string(e.what()).rfind("mem.safetensors: ", 0), 0u) << e.what();
        }
    }
}

// Every byte of the length and header overwritten with a few values: each result either
// parses or gives a kvscope::Error; nothing else escapes.
TEST(SafetensorsCorrupt, ByteMutationsNeverCrash) {
    std::string valid = st_file({{"a", "F32", {2}, f32s({1, 2})}, {"b", "U8", {3}, "xyz"}}, {{"k", "v"}});
    const char values[] = {'\0', '\xff', '"', '{', '}', '[', '-', '9', ',', ':', '\\'};
    size_t parsed = 0, refused = 0;
    for (size_t i = 0; i < valid.size() - 11; ++i) {
        for (char v : values) {
            std::string mutated = valid;
            mutated[i] = v;
            try {
                parse(mutated);
                ++parsed;
            } catch (const Error&) {
                ++refused;
            }
        }
    }
    EXPECT_GT(refused, 0u);
    EXPECT_GT(parsed, 0u); // e.g. a changed metadata value or tensor name
}

//-----------------------------------------------------------------------------
// [SECTION] model directories
//-----------------------------------------------------------------------------

namespace {

std::string index_json(const nlohmann::json& weight_map) {
    return nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump();
}

// Two shards: "a" and "b" in the first, "c" in the second.
void write_two_shards(const fs::path& dir) {
    write_file(dir / "model-00001-of-00002.safetensors",
               st_file({{"a", "F32", {1}, f32s({1})}, {"b", "F32", {2}, f32s({2, 3})}}, {{"format", "pt"}}));
    write_file(dir / "model-00002-of-00002.safetensors", st_file({{"c", "F32", {1}, f32s({4})}}));
}

const nlohmann::json kTwoShardMap = {
    {"a", "model-00001-of-00002.safetensors"},
    {"b", "model-00001-of-00002.safetensors"},
    {"c", "model-00002-of-00002.safetensors"},
};

} // namespace

TEST(SafetensorsDir, SingleFile) {
    fs::path dir = fresh_dir();
    write_file(dir / "model.safetensors", st_file({{"x", "F32", {2}, f32s({5, 6})}, {"y", "I32", {1}, std::string("\x01\0\0\0", 4)}}));
    SafetensorsModel model = SafetensorsModel::open_dir(dir.string());
    EXPECT_EQ(model.names(), (std::vector<std::string>{"x", "y"}));
    const kvscope::StTensor* x = model.find("x");
    ASSERT_NE(x, nullptr);
    EXPECT_EQ(x->file, (dir / "model.safetensors").string());
    float v[2];
    std::memcpy(v, x->data, sizeof v);
    EXPECT_EQ(v[1], 6.0f);
    EXPECT_EQ(model.find("z"), nullptr);

    SafetensorsModel moved = std::move(model); // pointers stay valid after a move
    ASSERT_NE(moved.find("y"), nullptr);
    EXPECT_EQ(moved.find("y")->dtype, StDtype::I32);
}

TEST(SafetensorsDir, ShardedIndex) {
    fs::path dir = fresh_dir();
    write_two_shards(dir);
    write_file(dir / "model.safetensors.index.json", index_json(kTwoShardMap));
    // The index wins over a stray single file.
    write_file(dir / "model.safetensors", st_file({{"stray", "F32", {1}, f32s({0})}}));
    SafetensorsModel model = SafetensorsModel::open_dir(dir.string());
    EXPECT_EQ(model.names(), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(model.find("stray"), nullptr);
    const kvscope::StTensor* c = model.find("c");
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->file, (dir / "model-00002-of-00002.safetensors").string());
    float v;
    std::memcpy(&v, c->data, 4);
    EXPECT_EQ(v, 4.0f);
    EXPECT_EQ(model.find("b")->shape, (std::vector<int64_t>{2}));
}

TEST(SafetensorsDir, NoModelFile) {
    fs::path dir = fresh_dir();
    EXPECT_TRUE(throws_error([&] { SafetensorsModel::open_dir(dir.string()); }, dir.string(), "model directory",
                             "no model.safetensors or model.safetensors.index.json"));
    std::string missing = (dir / "nope").string();
    EXPECT_TRUE(throws_error([&] { SafetensorsModel::open_dir(missing); }, missing, "model directory", "no model.safetensors"));
}

TEST(SafetensorsDir, CorruptShardNamesTheShard) {
    fs::path dir = fresh_dir();
    write_two_shards(dir);
    write_file(dir / "model-00002-of-00002.safetensors", u64_le(100) + "{}");
    write_file(dir / "model.safetensors.index.json", index_json(kTwoShardMap));
    EXPECT_TRUE(throws_error([&] { SafetensorsModel::open_dir(dir.string()); },
                             (dir / "model-00002-of-00002.safetensors").string(), "header length", "follow"));
}

TEST(SafetensorsDir, IndexNamesMissingShard) {
    fs::path dir = fresh_dir();
    write_two_shards(dir);
    nlohmann::json map = kTwoShardMap;
    map["d"] = "model-00003-of-00003.safetensors";
    write_file(dir / "model.safetensors.index.json", index_json(map));
    std::string index = (dir / "model.safetensors.index.json").string();
    EXPECT_TRUE(throws_error([&] { SafetensorsModel::open_dir(dir.string()); }, index, "tensor 'd'",
                             "shard 'model-00003-of-00003.safetensors' does not exist"));
}

TEST(SafetensorsDir, IndexWithPathTraversal) {
    fs::path dir = fresh_dir();
    write_two_shards(dir);
    std::string index = (dir / "model.safetensors.index.json").string();
    for (const char* shard : {"../model-00002-of-00002.safetensors", "..", ".", "sub/x.safetensors",
                              "/etc/passwd", "..\\x.safetensors", ""}) {
        SCOPED_TRACE(shard);
        nlohmann::json map = kTwoShardMap;
        map["c"] = shard;
        write_file(index, index_json(map));
        EXPECT_TRUE(throws_error([&] { SafetensorsModel::open_dir(dir.string()); }, index, "tensor 'c'", "not a plain file name"));
    }
}

TEST(SafetensorsDir, IndexNamesTensorAbsentFromShard) {
    fs::path dir = fresh_dir();
    write_two_shards(dir);
    nlohmann::json map = kTwoShardMap;
    map["ghost"] = "model-00002-of-00002.safetensors";
    std::string index = (dir / "model.safetensors.index.json").string();
    write_file(index, index_json(map));
    EXPECT_TRUE(throws_error([&] { SafetensorsModel::open_dir(dir.string()); }, index, "tensor 'ghost'",
                             "shard 'model-00002-of-00002.safetensors' does not hold it"));
}

TEST(SafetensorsDir, ShardHoldsTensorTheIndexDoesNotGiveIt) {
    fs::path dir = fresh_dir();
    write_two_shards(dir);
    std::string index = (dir / "model.safetensors.index.json").string();
    std::string shard1 = (dir / "model-00001-of-00002.safetensors").string();

    nlohmann::json without_b = kTwoShardMap;
    without_b.erase("b");
    write_file(index, index_json(without_b));
    EXPECT_TRUE(throws_error([&] { SafetensorsModel::open_dir(dir.string()); }, shard1, "tensor 'b'", "not in the weight_map"));

    // "c" in both shards, the index names the second: the first holds a tensor it shouldn't.
    write_file(dir / "model-00001-of-00002.safetensors",
               st_file({{"a", "F32", {1}, f32s({1})}, {"b", "F32", {2}, f32s({2, 3})}, {"c", "F32", {1}, f32s({9})}}));
    write_file(index, index_json(kTwoShardMap));
    EXPECT_TRUE(throws_error([&] { SafetensorsModel::open_dir(dir.string()); }, shard1, "tensor 'c'",
                             "puts it in 'model-00002-of-00002.safetensors'"));
}

TEST(SafetensorsDir, MalformedIndex) {
    fs::path dir = fresh_dir();
    write_two_shards(dir);
    std::string index = (dir / "model.safetensors.index.json").string();
    auto open = [&] { SafetensorsModel::open_dir(dir.string()); };

    write_file(index, "{\"weight_map\": ");
    EXPECT_TRUE(throws_error(open, index, "index", "not valid JSON"));
    write_file(index, "[]");
    EXPECT_TRUE(throws_error(open, index, "index", "not a JSON object"));
    write_file(index, "{\"metadata\": {}}");
    EXPECT_TRUE(throws_error(open, index, "weight_map", "missing"));
    write_file(index, "{\"weight_map\": [\"a\"]}");
    EXPECT_TRUE(throws_error(open, index, "weight_map", "not an object"));
    write_file(index, "{\"weight_map\": {}}");
    EXPECT_TRUE(throws_error(open, index, "weight_map", "empty"));
    write_file(index, "{\"weight_map\": {\"a\": 1}}");
    EXPECT_TRUE(throws_error(open, index, "tensor 'a'", "shard name is not a string"));
    write_file(index, R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "a": "model-00002-of-00002.safetensors"}})");
    EXPECT_TRUE(throws_error(open, index, "index", "duplicate key 'a' in 'weight_map'"));
}

//-----------------------------------------------------------------------------
// [SECTION] cross-check with the Python writer
//-----------------------------------------------------------------------------

TEST(SafetensorsPython, ReadsWhatThePythonWriterWrites) {
    const char* env = std::getenv("KVSCOPE_PYTHON");
    std::string python = env ? env : std::string(KVSCOPE_SOURCE_DIR) + "/.venv/bin/python";
    if (!fs::exists(python)) GTEST_SKIP() << "no Python at " << python;
    fs::path dir = fresh_dir();
    fs::path out = dir / "py.safetensors";
    std::string script =
        "import sys, numpy as np\n"
        "from safetensors.numpy import save_file\n"
        "save_file({'m.w': np.arange(6, dtype=np.float32).reshape(2, 3),\n"
        "           'h': np.array([1.5, -2], dtype=np.float16),\n"
        "           'i': np.array([[7]], dtype=np.int64),\n"
        "           'b': np.array([True, False, True]),\n"
        "           'u': np.array(5, dtype=np.uint8)}, sys.argv[1], metadata={'format': 'pt'})\n";
    write_file(dir / "write.py", script);
    std::string command = "'" + python + "' '" + (dir / "write.py").string() + "' '" + out.string() + "' 2>/dev/null";
    if (std::system(command.c_str()) != 0) GTEST_SKIP() << "Python lacks numpy or safetensors";

    SafetensorsFile st = SafetensorsFile::open(out.string());
    EXPECT_EQ(st.metadata().at("format"), "pt");
    std::map<std::string, const kvscope::StTensor*> by_name;
    for (const auto& t : st.tensors()) by_name[t.name] = &t;
    ASSERT_EQ(by_name.size(), 5u);
    EXPECT_EQ(by_name["m.w"]->dtype, StDtype::F32);
    EXPECT_EQ(by_name["m.w"]->shape, (std::vector<int64_t>{2, 3}));
    float w[6];
    std::memcpy(w, by_name["m.w"]->data, sizeof w);
    EXPECT_EQ(w[5], 5.0f);
    EXPECT_EQ(by_name["h"]->dtype, StDtype::F16);
    uint16_t h[2];
    std::memcpy(h, by_name["h"]->data, sizeof h);
    EXPECT_EQ(h[0], 0x3e00); // 1.5 in IEEE half
    EXPECT_EQ(by_name["i"]->dtype, StDtype::I64);
    EXPECT_EQ(by_name["i"]->shape, (std::vector<int64_t>{1, 1}));
    EXPECT_EQ(by_name["b"]->dtype, StDtype::BOOL);
    EXPECT_EQ(by_name["u"]->shape, std::vector<int64_t>{});
    EXPECT_EQ(by_name["u"]->n_bytes, 1u);
}
