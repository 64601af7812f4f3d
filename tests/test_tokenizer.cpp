// Tokenizer tests: exact ids against the reference tokenizers on every case of
// tests/data/tokenizer_smollm2.jsonl (written by tests/reference/tokenizer_reference.py),
// round trips, special tokens, chat formatting, the Hugging Face reader (on a
// tokenizer.json written from the GGUF by an independent Python script, and on tiny
// hand-made ones), and bad input that must give a clear kvscope::Error.
//
// [SECTION] Helpers: the model, the cases, a tiny GGUF writer
// [SECTION] Parity with the references
// [SECTION] Special tokens, BOS/EOS, chat
// [SECTION] Hugging Face directory
// [SECTION] Bad input
#include "core/error.h"
#include "core/gguf.h"
#include "core/tokenizer.h"
#include "test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

namespace kvscope {
namespace {

//-----------------------------------------------------------------------------
// [SECTION] Helpers: the model, the cases, a tiny GGUF writer
//-----------------------------------------------------------------------------

using Json = nlohmann::json;

// The default model's tokenizer, loaded once; null (and the test failed) when missing.
const Tokenizer* model_tokenizer() {
    static std::unique_ptr<Tokenizer> tokenizer;
    static bool tried = false;
    if (!tried) {
        tried = true;
        const std::string path = test::require_default_model();
        if (access(path.c_str(), R_OK) == 0)
            tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_gguf(GgufFile::open(path)));
    }
    return tokenizer.get();
}

#define REQUIRE_MODEL_TOKENIZER(name)                                        \
    const Tokenizer* name##_ptr = model_tokenizer();                         \
    ASSERT_NE(name##_ptr, nullptr) << "run ./setup.sh to fetch the model";   \
    const Tokenizer& name = *name##_ptr

struct Case {
    int line = 0;
    std::string category;
    std::string text;
    std::string expect;       // "both", "llama_cpp" or "transformers"
    std::vector<int32_t> ids; // the ids of the reference named by expect
};

std::vector<Case> load_cases() {
    const std::string path = KVSCOPE_SOURCE_DIR "/tests/data/tokenizer_smollm2.jsonl";
    std::ifstream in(path);
    std::vector<Case> cases;
    if (!in) {
        ADD_FAILURE() << "cannot read " << path << " (tests/reference/tokenizer_reference.py writes it)";
        return cases;
    }
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
        const Json j = Json::parse(line);
        Case c{n, j.at("category"), j.at("text"), j.at("expect"), {}};
        c.ids = j.at(c.expect == "transformers" ? "transformers" : "llama_cpp").get<std::vector<int32_t>>();
        cases.push_back(std::move(c));
    }
    return cases;
}

const std::vector<Case>& cases() {
    static const std::vector<Case> all = load_cases();
    return all;
}

// Text with its bytes escaped, for failure messages.
std::string printable(const std::string& text) {
    std::string out;
    for (unsigned char c : text) {
        if (c >= 0x20 && c < 0x7F && c != '\\') out += char(c);
        else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02X", c);
            out += buf;
        }
    }
    return out.size() > 300 ? out.substr(0, 300) + "..." : out;
}

// A minimal GGUF v3 (metadata only), written from the specification.
class GgufBytes {
public:
    GgufBytes& string(const std::string& key, const std::string& value) {
        entry(key, 8);
        str(value);
        return *this;
    }
    GgufBytes& strings(const std::string& key, const std::vector<std::string>& values) {
        entry(key, 9);
        u32(8);
        u64(values.size());
        for (const auto& v : values) str(v);
        return *this;
    }
    std::vector<uint8_t> bytes() const {
        std::vector<uint8_t> out;
        const auto put = [&](const void* p, size_t n) { out.insert(out.end(), (const uint8_t*)p, (const uint8_t*)p + n); };
        const uint32_t version = 3;
        const uint64_t n_tensors = 0;
        put("GGUF", 4);
        put(&version, 4);
        put(&n_tensors, 8);
        put(&n_kv_, 8);
        out.insert(out.end(), body_.begin(), body_.end());
        return out;
    }

private:
    void entry(const std::string& key, uint32_t type) { str(key); u32(type); ++n_kv_; }
    void u32(uint32_t v) { body_.insert(body_.end(), (uint8_t*)&v, (uint8_t*)&v + 4); }
    void u64(uint64_t v) { body_.insert(body_.end(), (uint8_t*)&v, (uint8_t*)&v + 8); }
    void str(const std::string& s) { u64(s.size()); body_.insert(body_.end(), s.begin(), s.end()); }
    std::vector<uint8_t> body_;
    uint64_t n_kv_ = 0;
};

void write_text(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
}

// Expects `f` to throw kvscope::Error whose message contains every one of `parts`.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
    try {
        f();
        ADD_FAILURE() << "no kvscope::Error thrown";
    } catch (const Error& e) {
        for (const std::string& part : parts)
            EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "'" << e.what() << "' lacks '" << part << "'";
    }
}

//-----------------------------------------------------------------------------
// [SECTION] Parity with the references
//-----------------------------------------------------------------------------

TEST(Tokenizer, MatchesReferenceIdsOnEveryCase) {
    REQUIRE_MODEL_TOKENIZER(tok);
    ASSERT_GE(cases().size(), 2000u);
    std::map<std::string, std::pair<int, int>> by_expect; // expect -> (passed, total)
    for (const Case& c : cases()) {
        ASSERT_NE(c.expect, "neither") << "line " << c.line << ": the references and the arbiter all disagree";
        const std::vector<int32_t> ids = tok.encode(c.text);
        auto& [passed, total] = by_expect[c.expect];
        ++total;
        if (ids == c.ids) ++passed;
        else
            ADD_FAILURE() << "line " << c.line << " (" << c.category << ", checked against " << c.expect
                          << "): \"" << printable(c.text) << "\"\n  ours: " << Json(ids).dump()
                          << "\n  want: " << Json(c.ids).dump();
    }
    for (const auto& [expect, counts] : by_expect)
        std::printf("  expect=%s: %d/%d cases equal\n", expect.c_str(), counts.first, counts.second);
}

TEST(Tokenizer, DecodeInvertsEncodeOnEveryCase) {
    REQUIRE_MODEL_TOKENIZER(tok);
    int lossy = 0;
    for (const Case& c : cases()) {
        const std::string back = tok.decode(tok.encode(c.text));
        if (tok.decode(c.ids) != c.text) {
            // The text holds bytes SmolLM2 has no token for (0x04, 0x06, 0xF1, ...): the
            // references drop them, and so do we.
            ++lossy;
            EXPECT_EQ(back, tok.decode(c.ids)) << "line " << c.line;
            continue;
        }
        EXPECT_EQ(back, c.text) << "line " << c.line << ": \"" << printable(c.text) << "\"";
    }
    std::printf("  %d of %zu cases hold bytes without a token\n", lossy, cases().size());
}

TEST(Tokenizer, InvalidUtf8RoundTripsByteForByte) {
    REQUIRE_MODEL_TOKENIZER(tok);
    for (const std::string& text : {std::string("\xe2\x82 abc \xc3"), std::string("a\xc3(b"), std::string("\xed\xa0\x80 x"),
                                   std::string("\xf4\x90\x80\x80"), std::string("\x80\x80\x80 it's 12"),
                                   std::string("\xf0\x9f\x98")}) {
        const std::vector<int32_t> ids = tok.encode(text);
        EXPECT_FALSE(ids.empty());
        EXPECT_EQ(tok.decode(ids), text) << printable(text);
    }
    // 0xFF and 0xC0 never occur in UTF-8 and have no token: dropped, as the references do
    // with the bytes they have no token for.
    EXPECT_EQ(tok.decode(tok.encode("a\xff\xc0" "b")), "ab");
}

TEST(Tokenizer, LongRunsDoNotBlowUp) {
    REQUIRE_MODEL_TOKENIZER(tok);
    for (const std::string& text : {std::string(200000, ' '), std::string(200000, 'a'), std::string(100000, '!'),
                                   std::string(50000, '\n') + "x"}) {
        EXPECT_EQ(tok.decode(tok.encode(text)), text);
    }
}

TEST(Tokenizer, ThreadsGetTheSameIds) {
    REQUIRE_MODEL_TOKENIZER(tok);
    std::vector<std::vector<int32_t>> want;
    for (const Case& c : cases()) want.push_back(c.ids);
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (size_t i = t; i < cases().size(); i += 2)
                if (tok.encode(cases()[i].text) != want[i]) ++mismatches[t];
        });
    for (auto& th : threads) th.join();
    for (int m : mismatches) EXPECT_EQ(m, 0);
}

//-----------------------------------------------------------------------------
// [SECTION] Special tokens, BOS/EOS, chat
//-----------------------------------------------------------------------------

TEST(Tokenizer, SpecialTokensParsedOnlyWhenAsked) {
    REQUIRE_MODEL_TOKENIZER(tok);
    const std::string text = "<|im_start|>user\nHi<|im_end|>";
    const std::vector<int32_t> parsed = tok.encode(text, /*parse_special=*/true);
    ASSERT_GE(parsed.size(), 3u);
    EXPECT_EQ(parsed.front(), 1);
    EXPECT_EQ(parsed.back(), 2);
    const std::vector<int32_t> plain = tok.encode(text, /*parse_special=*/false);
    for (int32_t id : plain) EXPECT_NE(tok.token_type(id), TokenType::Control) << id;
    EXPECT_EQ(tok.decode(plain), text);
    EXPECT_EQ(tok.decode(parsed), text);
    EXPECT_EQ(tok.decode(parsed, /*skip_special=*/true), "user\nHi");
    EXPECT_EQ(tok.token_type(1), TokenType::Control);
    EXPECT_EQ(tok.token_bytes(1), "<|im_start|>");
}

TEST(Tokenizer, BosEosAndEndOfGeneration) {
    REQUIRE_MODEL_TOKENIZER(tok);
    EXPECT_EQ(tok.n_vocab(), 49152);
    EXPECT_EQ(tok.bos(), 1);
    EXPECT_EQ(tok.eos(), 2);
    EXPECT_FALSE(tok.add_bos_default());
    EXPECT_EQ(tok.encode("hi", true, /*add_bos=*/true).front(), 1);
    EXPECT_NE(tok.encode("hi").front(), 1);
    EXPECT_TRUE(tok.is_end_of_generation(2)); // <|im_end|>, also EOS
    EXPECT_TRUE(tok.is_end_of_generation(0)); // <|endoftext|>
    EXPECT_FALSE(tok.is_end_of_generation(1));
    EXPECT_FALSE(tok.is_end_of_generation(tok.encode(" the").front()));
    EXPECT_EQ(tok.token_bytes(tok.encode(" the").front()), " the");
    EXPECT_THROW(tok.token_type(tok.n_vocab()), Error);
    EXPECT_THROW(tok.decode({-1}), Error);
}

TEST(Tokenizer, ChatMlFromTheModelTemplate) {
    REQUIRE_MODEL_TOKENIZER(tok);
    const std::vector<ChatMessage> chat = {{"system", "You are terse."}, {"user", "What is 2+2?"}};
    EXPECT_EQ(tok.apply_chat(chat), "<|im_start|>system\nYou are terse.<|im_end|>\n"
                                    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(tok.apply_chat(chat, false), "<|im_start|>system\nYou are terse.<|im_end|>\n"
                                           "<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
    // SmolLM2's template adds its own system turn when there is none.
    EXPECT_EQ(tok.apply_chat({{"user", "Hi"}}),
              "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
              "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    const std::vector<int32_t> ids = tok.encode(tok.apply_chat(chat));
    EXPECT_EQ(ids.front(), 1);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 2);
}

//-----------------------------------------------------------------------------
// [SECTION] Hugging Face directory
//-----------------------------------------------------------------------------

// tokenizer.json + tokenizer_config.json written from the GGUF by a Python script that
// shares no code with ours; `merges` is "strings" or "pairs".
std::string write_hf_dir(const std::string& merges) {
    const std::string dir = test::scratch_dir("tokenizer_hf_" + merges);
    const std::string command = test::python() + " " KVSCOPE_SOURCE_DIR "/tests/reference/gguf_to_tokenizer_json.py '" +
                                test::require_default_model() + "' '" + dir + "' --merges " + merges;
    EXPECT_EQ(test::run(command), 0) << command;
    return dir;
}

void expect_same_as_gguf(const Tokenizer& hf, const Tokenizer& gguf) {
    EXPECT_EQ(hf.n_vocab(), gguf.n_vocab());
    EXPECT_EQ(hf.bos(), gguf.bos());
    EXPECT_EQ(hf.eos(), gguf.eos());
    EXPECT_EQ(hf.add_bos_default(), gguf.add_bos_default());
    EXPECT_EQ(hf.apply_chat({{"user", "Hi"}}), gguf.apply_chat({{"user", "Hi"}}));
    for (int32_t id : {0, 1, 2, 3, 16}) {
        EXPECT_EQ(hf.token_type(id), gguf.token_type(id)) << id;
        EXPECT_EQ(hf.is_end_of_generation(id), gguf.is_end_of_generation(id)) << id;
    }
    int differing = 0;
    for (const Case& c : cases()) {
        if (hf.encode(c.text) == gguf.encode(c.text)) continue;
        if (++differing <= 5) ADD_FAILURE() << "line " << c.line << ": \"" << printable(c.text) << "\"";
    }
    EXPECT_EQ(differing, 0);
}

TEST(TokenizerHfDir, SameIdsAsGgufWithStringMerges) {
    REQUIRE_MODEL_TOKENIZER(tok);
    const std::string dir = write_hf_dir("strings");
    expect_same_as_gguf(Tokenizer::from_hf_dir(dir), tok);
}

TEST(TokenizerHfDir, SameIdsAsGgufWithPairMerges) {
    REQUIRE_MODEL_TOKENIZER(tok);
    const std::string dir = write_hf_dir("pairs");
    expect_same_as_gguf(Tokenizer::from_hf_dir(dir), tok);
}

// A byte-level vocabulary of the 256 byte symbols plus `extra` tokens.
Json tiny_tokenizer_json(const std::vector<std::string>& extra, const Json& merges) {
    Json vocab = Json::object();
    int id = 0, shifted = 0;
    for (int b = 0; b < 256; ++b) {
        // GPT-2's byte alphabet, written out independently of core/tokenizer.cpp.
        const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        const uint32_t cp = printable ? b : 0x100 + shifted++;
        std::string text;
        if (cp < 0x80) text += char(cp);
        else { text += char(0xC0 | (cp >> 6)); text += char(0x80 | (cp & 0x3F)); }
        vocab[text] = id++;
    }
    for (const std::string& t : extra) vocab[t] = id++;
    return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
            {"decoder", {{"type", "ByteLevel"}}},
            {"added_tokens", Json::array({{{"id", id}, {"content", "<eos>"}, {"special", true}}})}};
}

TEST(TokenizerHfDir, TinyVocabularyBothMergeFormats) {
    const std::vector<std::string> extra = {"he", "ll", "hell", "hello", "Ġw", "Ġwo"};
    for (const Json& merges : {Json::array({"h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"}),
                               Json::array({{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}, {"Ġw", "o"}})}) {
        const std::string dir = test::scratch_dir("tokenizer_tiny");
        write_text(dir + "/tokenizer.json", tiny_tokenizer_json(extra, merges).dump());
        write_text(dir + "/tokenizer_config.json", R"({"eos_token": "<eos>", "add_bos_token": false})");
        const Tokenizer tok = Tokenizer::from_hf_dir(dir);
        const int32_t hello = 256 + 3, wo = 256 + 5;
        EXPECT_EQ(tok.encode("hello wor<eos>"), (std::vector<int32_t>{hello, wo, 'r', 256 + 6}));
        EXPECT_EQ(tok.eos(), 256 + 6);
        EXPECT_EQ(tok.bos(), -1);
        EXPECT_TRUE(tok.is_end_of_generation(256 + 6));
        EXPECT_EQ(tok.decode(tok.encode("hello wor\n\t\x01")), "hello wor\n\t\x01");
    }
}

TEST(TokenizerHfDir, NfcNormalizerComposesBeforeEncoding) {
    const std::string dir = test::scratch_dir("tokenizer_nfc");
    Json j = tiny_tokenizer_json({}, Json::array());
    const std::string decomposed = "e\xCC\x81", composed = "\xC3\xA9"; // e + U+0301, U+00E9
    write_text(dir + "/tokenizer.json", j.dump());
    EXPECT_EQ(Tokenizer::from_hf_dir(dir).encode(decomposed), (std::vector<int32_t>{'e', 0xCC, 0x81}));
    j["normalizer"] = {{"type", "NFC"}};
    write_text(dir + "/tokenizer.json", j.dump());
    const Tokenizer tok = Tokenizer::from_hf_dir(dir);
    EXPECT_EQ(tok.encode(decomposed), (std::vector<int32_t>{0xC3, 0xA9}));
    EXPECT_EQ(tok.encode(composed + "<eos>" + decomposed), (std::vector<int32_t>{0xC3, 0xA9, 256, 0xC3, 0xA9}));
}

//-----------------------------------------------------------------------------
// [SECTION] Bad input
//-----------------------------------------------------------------------------

TEST(TokenizerErrors, MissingTokenizerJsonNamesTheFile) {
    const std::string dir = test::scratch_dir("tokenizer_missing");
    expect_error([&] { Tokenizer::from_hf_dir(dir); }, {dir + "/tokenizer.json"});
}

TEST(TokenizerErrors, MalformedJsonNamesTheFile) {
    const std::string dir = test::scratch_dir("tokenizer_malformed");
    write_text(dir + "/tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0,)");
    expect_error([&] { Tokenizer::from_hf_dir(dir); }, {dir + "/tokenizer.json", "json"});
    write_text(dir + "/tokenizer.json", R"({"model": {"type": "BPE", "vocab": [1, 2], "merges": []}})");
    expect_error([&] { Tokenizer::from_hf_dir(dir); }, {dir + "/tokenizer.json"});
}

TEST(TokenizerErrors, MergeNamingUnknownTokenIsNamed) {
    const std::string dir = test::scratch_dir("tokenizer_bad_merge");
    write_text(dir + "/tokenizer.json", tiny_tokenizer_json({"he"}, Json::array({"h e", "he zz"})).dump());
    expect_error([&] { Tokenizer::from_hf_dir(dir); }, {"tokenizer.json", "model.merges[1]", "he zz", "\"zz\""});
    write_text(dir + "/tokenizer.json", tiny_tokenizer_json({"he"}, Json::array({"h e", "l l"})).dump());
    expect_error([&] { Tokenizer::from_hf_dir(dir); }, {"model.merges[1]", "\"ll\""}); // result not a token
}

TEST(TokenizerErrors, UnsupportedPreTokenizerIsNamed) {
    const std::string dir = test::scratch_dir("tokenizer_bad_pre");
    Json j = tiny_tokenizer_json({}, Json::array());
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}};
    write_text(dir + "/tokenizer.json", j.dump());
    expect_error([&] { Tokenizer::from_hf_dir(dir); }, {"pre_tokenizer", "Metaspace"});
}

TEST(TokenizerErrors, UnsupportedNormalizerIsNamed) {
    const std::string dir = test::scratch_dir("tokenizer_bad_normalizer");
    Json j = tiny_tokenizer_json({}, Json::array());
    j["normalizer"] = {{"type", "Lowercase"}};
    write_text(dir + "/tokenizer.json", j.dump());
    expect_error([&] { Tokenizer::from_hf_dir(dir); }, {"normalizer", "Lowercase"});
}

TEST(TokenizerErrors, SentencePieceGgufIsRefused) {
    const std::vector<uint8_t> bytes =
        GgufBytes().string("tokenizer.ggml.model", "llama").strings("tokenizer.ggml.tokens", {"<unk>", "a"}).bytes();
    const GgufFile gguf = GgufFile::parse(bytes.data(), bytes.size(), "spm.gguf");
    expect_error([&] { Tokenizer::from_gguf(gguf); }, {"spm.gguf", "tokenizer.ggml.model", "\"llama\""});
}

TEST(TokenizerErrors, UnknownGgufPreTokenizerIsNamed) {
    std::vector<std::string> tokens;
    for (int b = 0x21; b <= 0x7E; ++b) tokens.push_back(std::string(1, char(b)));
    const std::vector<uint8_t> bytes = GgufBytes()
                                           .string("tokenizer.ggml.model", "gpt2")
                                           .string("tokenizer.ggml.pre", "mystery")
                                           .strings("tokenizer.ggml.tokens", tokens)
                                           .strings("tokenizer.ggml.merges", {})
                                           .bytes();
    const GgufFile gguf = GgufFile::parse(bytes.data(), bytes.size(), "pre.gguf");
    expect_error([&] { Tokenizer::from_gguf(gguf); }, {"pre.gguf", "tokenizer.ggml.pre", "mystery"});
}

} // namespace
} // namespace kvscope
