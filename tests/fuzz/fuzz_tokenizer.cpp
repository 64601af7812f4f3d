// libFuzzer target: the default model's tokenizer (from its GGUF metadata, as the app
// loads it) on arbitrary bytes. Encoding never fails; every id is in the vocabulary; and
// where the input is valid UTF-8 made only of bytes the vocabulary can spell, decoding
// gives the input back exactly, with special tokens parsed or not.
#include "fuzz_util.h"

#include "core/default_model.h"
#include "core/gguf.h"
#include "core/tokenizer.h"
#include "core/utf8.h"

#include <string_view>

using namespace kvscope;

namespace {

struct Model {
    GgufFile gguf;
    Tokenizer tokenizer;
    bool spellable[256] = {}; // bytes with a one-byte token (SmolLM2 lacks a few, e.g. 0x04)
};

const Model& model() {
    static const Model* m = [] {
        try {
            GgufFile gguf = GgufFile::open(default_model_path());
            Tokenizer tok = Tokenizer::from_gguf(gguf);
            auto* out = new Model{std::move(gguf), std::move(tok)};
            for (int32_t id = 0; id < out->tokenizer.n_vocab(); ++id) {
                const std::string bytes = out->tokenizer.token_bytes(id);
                if (bytes.size() == 1) out->spellable[uint8_t(bytes[0])] = true;
            }
            return out;
        } catch (const std::exception& e) {
            fuzz::fail(std::string("cannot load the default model's tokenizer (run ./setup.sh): ") + e.what());
        }
    }();
    return *m;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const Model& m = model();
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    bool spellable = find_invalid_utf8(text) == std::string_view::npos;
    for (size_t i = 0; spellable && i < size; ++i) spellable = m.spellable[data[i]];
    for (bool parse_special : {false, true}) {
        const std::vector<int32_t> ids = m.tokenizer.encode(text, parse_special);
        for (int32_t id : ids)
            if (id < 0 || id >= m.tokenizer.n_vocab()) fuzz::fail("encode gave id " + std::to_string(id));
        const std::string back = m.tokenizer.decode(ids);
        if (spellable && back != text)
            fuzz::fail(std::string("decode(encode(text)) != text with parse_special=") +
                       (parse_special ? "true" : "false"));
        if (!text.empty() && ids.empty() && spellable) fuzz::fail("non-empty text encoded to no tokens");
    }
    return 0;
}
