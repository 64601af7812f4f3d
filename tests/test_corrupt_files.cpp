// The enumerated corrupt files of issue 10, in one place: each test writes one kind of
// damage to disk on purpose and opens it the way the app does (GgufFile::open,
// SafetensorsFile::open, Model::load, Tokenizer::from_hf_dir, config_from_hf_json). The
// error must be ONE printable line that starts with the file's path and names the field.
// NaN/Inf weights are the exception: the model loads and the loader warns, naming the
// file and the tensor.
//
// The readers' finer cases live beside them (test_gguf.cpp, test_safetensors.cpp,
// test_tokenizer.cpp, test_cli_errors.cpp); the fuzz targets (tests/fuzz/) look for the
// damage nobody listed.
//
// [SECTION] A small GGUF writer (from the specification, independent of the reader)
// [SECTION] Checking an error
// [SECTION] GGUF
// [SECTION] safetensors
// [SECTION] The model loader (a tiny Llama written here)
// [SECTION] tokenizer.json and config.json
#include "test_util.h"

#include "core/gguf.h"
#include "core/model.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "core/tokenizer.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>

namespace kvscope {
namespace {

//-----------------------------------------------------------------------------
// [SECTION] A small GGUF writer (from the specification, independent of the reader)
//-----------------------------------------------------------------------------

constexpr uint32_t kString = 8, kArray = 9, kU32 = 4, kI32 = 5, kF32 = 6; // value type ids
constexpr uint32_t kTypeF32 = 0;                                          // ggml type id

struct Bytes {
    std::string b;
    template <class T> Bytes& put(T v) {
        b.append(reinterpret_cast<const char*>(&v), sizeof v);
        return *this;
    }
    Bytes& str(const std::string& s) {
        put<uint64_t>(s.size());
        b += s;
        return *this;
    }
};

struct Tensor {
    std::string name;
    std::vector<int64_t> ne; // ggml order, fastest first
    std::vector<float> data; // F32
    uint32_t type = kTypeF32;
    int64_t offset = -1;     // data-relative; -1: packed after the previous one (32-aligned)
};

struct GgufSpec {
    uint32_t version = 3;
    std::vector<std::pair<std::string, std::string>> kv; // key, already-encoded type + value
    std::vector<Tensor> tensors;
    int64_t n_tensors = -1; // -1: tensors.size()

    GgufSpec& string(const std::string& key, const std::string& v) {
        kv.emplace_back(key, Bytes().put(kString).str(v).b);
        return *this;
    }
    GgufSpec& u32(const std::string& key, uint32_t v) {
        kv.emplace_back(key, Bytes().put(kU32).put(v).b);
        return *this;
    }
    GgufSpec& f32(const std::string& key, float v) {
        kv.emplace_back(key, Bytes().put(kF32).put(v).b);
        return *this;
    }
    GgufSpec& strings(const std::string& key, const std::vector<std::string>& v) {
        Bytes b;
        b.put(kArray).put(kString).put<uint64_t>(v.size());
        for (const std::string& s : v) b.str(s);
        kv.emplace_back(key, b.b);
        return *this;
    }
    GgufSpec& tensor(Tensor t) {
        tensors.push_back(std::move(t));
        return *this;
    }

    std::string bytes() const {
        Bytes out;
        out.b = "GGUF";
        out.put(version).put<uint64_t>(n_tensors < 0 ? tensors.size() : uint64_t(n_tensors)).put<uint64_t>(kv.size());
        for (const auto& [key, value] : kv) {
            out.str(key);
            out.b += value;
        }
        std::vector<uint64_t> offsets;
        uint64_t next = 0;
        for (const Tensor& t : tensors) {
            const uint64_t at = t.offset >= 0 ? uint64_t(t.offset) : (next + 31) / 32 * 32;
            offsets.push_back(at);
            next = std::max(next, at + t.data.size() * sizeof(float));
            out.str(t.name).put<uint32_t>(t.ne.size());
            for (int64_t d : t.ne) out.put(d);
            out.put(t.type).put(at);
        }
        out.b.resize((out.b.size() + 31) / 32 * 32, '\0');
        const size_t data_start = out.b.size();
        out.b.resize(data_start + next, '\0');
        for (size_t i = 0; i < tensors.size(); ++i)
            if (!tensors[i].data.empty())
                std::memcpy(&out.b[data_start + offsets[i]], tensors[i].data.data(), tensors[i].data.size() * sizeof(float));
        return out.b;
    }
};

Tensor f32_tensor(const std::string& name, std::vector<int64_t> ne, float value = 0.5f) {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    return Tensor{name, std::move(ne), std::vector<float>(size_t(n), value)};
}

// Two small tensors "a" and "b" after one string key: the base most damage starts from.
GgufSpec two_tensors() {
    GgufSpec s;
    s.string("general.architecture", "llama");
    s.tensor(f32_tensor("a", {8, 2})).tensor(f32_tensor("b", {8}));
    return s;
}

std::string write(const std::string& dir, const std::string& name, const std::string& bytes) {
    const std::string path = dir + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
}

//-----------------------------------------------------------------------------
// [SECTION] Checking an error
//-----------------------------------------------------------------------------

// `open` must throw a kvscope::Error, and nothing else, whose message is one printable line
// "<path>: <field>: ..." holding every one of `words`.
void expect_one_line_error(const std::function<void()>& open, const std::string& path, const std::string& field,
                           const std::vector<std::string>& words) {
    try {
        open();
        ADD_FAILURE() << path << ": no error";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_EQ(what.rfind(path + ": " + field + ": ", 0), 0u) << what;
        for (unsigned char c : what) EXPECT_TRUE(c >= 0x20 && c != 0x7f) << "not one printable line: " << what;
        for (const std::string& w : words) EXPECT_NE(what.find(w), std::string::npos) << "no '" << w << "' in: " << what;
    } catch (const std::exception& e) {
        ADD_FAILURE() << path << ": an exception other than kvscope::Error: " << e.what();
    }
}

class CorruptFiles : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = test::scratch_dir(std::string("corrupt_files/") +
                                 ::testing::UnitTest::GetInstance()->current_test_info()->name());
    }
    // Writes `bytes` as NAME and expects GgufFile::open to refuse it.
    void expect_gguf_error(const std::string& name, const std::string& bytes, const std::string& field,
                           const std::vector<std::string>& words) {
        const std::string path = write(dir_, name, bytes);
        expect_one_line_error([&] { GgufFile::open(path); }, path, field, words);
    }
    void expect_safetensors_error(const std::string& name, const std::string& bytes, const std::string& field,
                                  const std::vector<std::string>& words) {
        const std::string path = write(dir_, name, bytes);
        expect_one_line_error([&] { SafetensorsFile::open(path); }, path, field, words);
    }
    std::string dir_;
};

//-----------------------------------------------------------------------------
// [SECTION] GGUF
//-----------------------------------------------------------------------------

TEST_F(CorruptFiles, GgufBadMagic) {
    std::string bytes = two_tensors().bytes();
    bytes.replace(0, 4, "GGML");
    expect_gguf_error("bad-magic.gguf", bytes, "magic", {"not a GGUF file"});
}

TEST_F(CorruptFiles, GgufUnsupportedVersion) {
    GgufSpec s = two_tensors();
    s.version = 4;
    expect_gguf_error("version-4.gguf", s.bytes(), "version", {"version 4", "not supported"});
}

TEST_F(CorruptFiles, GgufTruncatedHeader) {
    // Cut inside the value of a long string key (the counts still fit): the reader names the key.
    GgufSpec s;
    s.string("general.name", std::string(1000, 'x')).tensor(f32_tensor("a", {8}));
    const std::string bytes = s.bytes().substr(0, 4 + 4 + 8 + 8 + (8 + 12) + 4 + 8 + 500);
    expect_gguf_error("truncated-header.gguf", bytes, "general.name", {"truncated", "needs 1000 bytes"});
}

TEST_F(CorruptFiles, GgufTruncatedData) {
    const std::string bytes = two_tensors().bytes();
    expect_gguf_error("truncated-data.gguf", bytes.substr(0, bytes.size() - 4), "tensor 'b'", {"past the end"});
}

TEST_F(CorruptFiles, GgufDuplicateKey) {
    GgufSpec s = two_tensors();
    s.u32("llama.block_count", 1).u32("llama.block_count", 2);
    expect_gguf_error("duplicate-key.gguf", s.bytes(), "llama.block_count", {"duplicate key"});
}

TEST_F(CorruptFiles, GgufKeyOfWrongType) {
    GgufSpec s;
    s.u32("general.architecture", 7);
    const std::string path = write(dir_, "wrong-type.gguf", s.bytes());
    expect_one_line_error([&] { config_from_gguf(GgufFile::open(path)); }, path, "general.architecture",
                          {"expected string", "uint32"});
}

TEST_F(CorruptFiles, GgufTensorCountLargerThanTheFile) {
    GgufSpec s = two_tensors();
    s.n_tensors = 1000000;
    expect_gguf_error("tensor-count.gguf", s.bytes(), "n_tensors", {"1000000 tensor infos cannot fit"});
}

TEST_F(CorruptFiles, GgufOffsetPastTheEnd) {
    GgufSpec s = two_tensors();
    s.tensors[1].offset = 1 << 20;
    s.tensors[1].data.clear();
    expect_gguf_error("offset-past-end.gguf", s.bytes(), "tensor 'b'", {"offset 1048576", "past the end"});
}

TEST_F(CorruptFiles, GgufOverlappingTensors) {
    GgufSpec s = two_tensors();
    s.tensors[1].offset = 32; // inside "a", which takes 64 bytes from 0
    expect_gguf_error("overlap.gguf", s.bytes(), "tensor 'b'", {"overlaps tensor 'a'"});
}

TEST_F(CorruptFiles, GgufMisalignedOffset) {
    GgufSpec s = two_tensors();
    s.tensors[1].offset = 70;
    expect_gguf_error("misaligned.gguf", s.bytes(), "tensor 'b'", {"offset 70", "alignment 32"});
}

TEST_F(CorruptFiles, GgufShapeProductOverflows64Bits) {
    GgufSpec s = two_tensors();
    s.tensors[0].ne = {int64_t(1) << 32, int64_t(1) << 32};
    expect_gguf_error("shape-overflow.gguf", s.bytes(), "tensor 'a'", {"more than 2^63-1 elements"});
}

TEST_F(CorruptFiles, GgufUnknownDtype) {
    GgufSpec s = two_tensors();
    s.tensors[0].type = 99;
    expect_gguf_error("dtype-99.gguf", s.bytes(), "tensor 'a'", {"ggml type id 99"});
}

TEST_F(CorruptFiles, GgufMoreThanFourDims) {
    GgufSpec s = two_tensors();
    s.tensors[0].ne = {2, 2, 2, 1, 2};
    expect_gguf_error("five-dims.gguf", s.bytes(), "tensor 'a'", {"n_dims 5", "1..4"});
}

// A hostile key name cannot break the one line: its control bytes are written as \xNN
// (found by fuzz_gguf: a key holding a newline).
TEST_F(CorruptFiles, GgufKeyWithControlBytesStaysOneLine) {
    GgufSpec s = two_tensors();
    s.kv.emplace_back("evil\nkey\x1b[2J", Bytes().put<uint32_t>(77).b); // unknown value type 77
    expect_gguf_error("control-bytes.gguf", s.bytes(), "evil\\x0akey\\x1b[2J", {"unknown value type 77"});
}

//-----------------------------------------------------------------------------
// [SECTION] safetensors
//-----------------------------------------------------------------------------

std::string safetensors(const std::string& header, size_t data_bytes) {
    return Bytes().put<uint64_t>(header.size()).b + header + std::string(data_bytes, '\0');
}

TEST_F(CorruptFiles, SafetensorsHeaderLengthLargerThanTheFile) {
    std::string bytes = safetensors(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
    bytes.replace(0, 8, Bytes().put<uint64_t>(1u << 30).b);
    expect_safetensors_error("header-length.safetensors", bytes, "header length",
                             {"1073741824 bytes", "only"});
}

TEST_F(CorruptFiles, SafetensorsTruncatedHeader) {
    const std::string bytes = safetensors(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
    expect_safetensors_error("truncated-header.safetensors", bytes.substr(0, 30), "header length", {"follow"});
}

TEST_F(CorruptFiles, SafetensorsTruncatedData) {
    const std::string bytes = safetensors(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
    expect_safetensors_error("truncated-data.safetensors", bytes.substr(0, bytes.size() - 3), "tensor 'w'",
                             {"past the data section"});
}

TEST_F(CorruptFiles, SafetensorsDuplicateKey) {
    expect_safetensors_error("duplicate.safetensors",
                             safetensors(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                         R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                             "tensor 'w'", {"duplicate name"});
}

TEST_F(CorruptFiles, SafetensorsKeyOfWrongType) {
    expect_safetensors_error("wrong-type.safetensors",
                             safetensors(R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", 8), "tensor 'w'",
                             {"\"shape\" is not an array"});
}

TEST_F(CorruptFiles, SafetensorsOffsetPastTheEnd) {
    expect_safetensors_error("offset-past-end.safetensors",
                             safetensors(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[64,72]}})", 8),
                             "tensor 'w'", {"data ends at 72", "8 bytes"});
}

TEST_F(CorruptFiles, SafetensorsOverlappingTensors) {
    expect_safetensors_error("overlap.safetensors",
                             safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
                             "tensor 'b'", {"overlaps tensor 'a'"});
}

TEST_F(CorruptFiles, SafetensorsShapeProductOverflows64Bits) {
    expect_safetensors_error("shape-overflow.safetensors",
                             safetensors(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
                             "tensor 'w'", {"overflows 64 bits"});
}

TEST_F(CorruptFiles, SafetensorsUnknownDtype) {
    expect_safetensors_error("dtype.safetensors",
                             safetensors(R"({"w":{"dtype":"F8_E9M9","shape":[2],"data_offsets":[0,2]}})", 2),
                             "tensor 'w'", {"dtype 'F8_E9M9'"});
}

//-----------------------------------------------------------------------------
// [SECTION] The model loader (a tiny Llama written here)
//-----------------------------------------------------------------------------

// One layer, n_embd 8, 2 heads of 4, 1 KV head, n_ff 16, 16 one-letter tokens: every
// tensor F32 and filled with 0.01 (ggml order: [in, out]).
GgufSpec tiny_llama() {
    constexpr int64_t E = 8, F = 16, V = 16, KV = 4;
    GgufSpec s;
    s.string("general.architecture", "llama")
        .u32("llama.block_count", 1)
        .u32("llama.context_length", 32)
        .u32("llama.embedding_length", E)
        .u32("llama.feed_forward_length", F)
        .u32("llama.attention.head_count", 2)
        .u32("llama.attention.head_count_kv", 1)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5f)
        .string("tokenizer.ggml.model", "gpt2");
    std::vector<std::string> tokens;
    for (char c = 'a'; c < 'a' + V; ++c) tokens.push_back(std::string(1, c));
    s.strings("tokenizer.ggml.tokens", tokens).strings("tokenizer.ggml.merges", {});
    const float w = 0.01f;
    s.tensor(f32_tensor("token_embd.weight", {E, V}, w))
        .tensor(f32_tensor("output_norm.weight", {E}, 1))
        .tensor(f32_tensor("output.weight", {E, V}, w))
        .tensor(f32_tensor("blk.0.attn_norm.weight", {E}, 1))
        .tensor(f32_tensor("blk.0.attn_q.weight", {E, E}, w))
        .tensor(f32_tensor("blk.0.attn_k.weight", {E, KV}, w))
        .tensor(f32_tensor("blk.0.attn_v.weight", {E, KV}, w))
        .tensor(f32_tensor("blk.0.attn_output.weight", {E, E}, w))
        .tensor(f32_tensor("blk.0.ffn_norm.weight", {E}, 1))
        .tensor(f32_tensor("blk.0.ffn_gate.weight", {E, F}, w))
        .tensor(f32_tensor("blk.0.ffn_up.weight", {E, F}, w))
        .tensor(f32_tensor("blk.0.ffn_down.weight", {F, E}, w));
    return s;
}

Tensor& tensor_named(GgufSpec& s, const std::string& name) {
    for (Tensor& t : s.tensors)
        if (t.name == name) return t;
    throw std::logic_error("no tensor " + name);
}

TEST_F(CorruptFiles, TinyModelLoads) { // the base of the next two: valid as written
    const std::string path = write(dir_, "tiny.gguf", tiny_llama().bytes());
    const Model model = Model::load(path);
    EXPECT_EQ(model.config().n_layer, 1);
    EXPECT_EQ(model.tokenizer().n_vocab(), 16);
    EXPECT_TRUE(model.warnings().empty());
}

TEST_F(CorruptFiles, ShapeThatContradictsTheConfig) {
    GgufSpec s = tiny_llama();
    tensor_named(s, "blk.0.attn_k.weight") = f32_tensor("blk.0.attn_k.weight", {8, 6});
    const std::string path = write(dir_, "shape-vs-config.gguf", s.bytes());
    expect_one_line_error([&] { Model::load(path); }, path, "tensor 'blk.0.attn_k.weight'",
                          {"shape [6, 8] contradicts the config", "[4, 8]"});
}

TEST_F(CorruptFiles, NanAndInfWeightsAreWarnedNotFatal) {
    GgufSpec s = tiny_llama();
    std::vector<float>& ffn = tensor_named(s, "blk.0.ffn_up.weight").data;
    ffn[3] = std::numeric_limits<float>::quiet_NaN();
    ffn[5] = std::numeric_limits<float>::infinity();
    tensor_named(s, "output_norm.weight").data[0] = -std::numeric_limits<float>::infinity();
    const std::string path = write(dir_, "nan-inf.gguf", s.bytes());
    const Model model = Model::load(path);
    ASSERT_EQ(model.warnings().size(), 2u);
    std::string all;
    for (const std::string& w : model.warnings()) {
        EXPECT_EQ(w.find('\n'), std::string::npos) << w;
        EXPECT_EQ(w.rfind(path + ": tensor '", 0), 0u) << w;
        all += w + "|";
    }
    EXPECT_NE(all.find("tensor 'blk.0.ffn_up.weight': 2 NaN or Inf values"), std::string::npos) << all;
    EXPECT_NE(all.find("tensor 'output_norm.weight': 1 NaN or Inf values"), std::string::npos) << all;
}

TEST_F(CorruptFiles, GgufMergesNamingUnknownTokens) {
    GgufSpec s = tiny_llama();
    s.strings("tokenizer.ggml.merges", {"a b"}); // "ab" is not a token
    s.kv.erase(s.kv.end() - 2);                 // the empty merges written by tiny_llama()
    const std::string path = write(dir_, "merges.gguf", s.bytes());
    expect_one_line_error([&] { Model::load(path); }, path, "tokenizer.ggml.merges[0]",
                          {"names unknown token \"ab\""});
}

//-----------------------------------------------------------------------------
// [SECTION] tokenizer.json and config.json
//-----------------------------------------------------------------------------

TEST_F(CorruptFiles, TokenizerJsonMergesNamingUnknownTokens) {
    write(dir_, "tokenizer.json", R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2,"c":3},)"
                                  R"("merges":["a b","ab q"]},"pre_tokenizer":{"type":"ByteLevel"}})");
    expect_one_line_error([&] { Tokenizer::from_hf_dir(dir_); }, dir_ + "/tokenizer.json", "model.merges[1]",
                          {"merge \"ab q\" names unknown token \"q\""});
}

TEST_F(CorruptFiles, TokenizerJsonIdOfWrongType) { // a float id was cast unchecked (found by fuzz_tokenizer_json)
    write(dir_, "tokenizer.json", R"({"model":{"type":"BPE","vocab":{"a":1.2e67},"merges":[]},)"
                                  R"("pre_tokenizer":{"type":"ByteLevel"}})");
    expect_one_line_error([&] { Tokenizer::from_hf_dir(dir_); }, dir_ + "/tokenizer.json", "model.vocab",
                          {"id of \"a\" is not an integer"});
}

TEST_F(CorruptFiles, ConfigJsonKeyOfWrongType) {
    const std::string path = write(dir_, "config.json",
                                   R"({"model_type":"llama","num_hidden_layers":"2","hidden_size":64})");
    expect_one_line_error([&] { config_from_hf_json(path); }, path, "num_hidden_layers", {"must be an integer"});
}

TEST_F(CorruptFiles, ConfigJsonNumberTooLarge) { // was a json::out_of_range, not an Error
    const std::string path = write(dir_, "config.json", R"({"model_type":"llama","num_hidden_layers":1e999})");
    expect_one_line_error([&] { config_from_hf_json(path); }, path, "json", {"number overflow"});
}

} // namespace
} // namespace kvscope
