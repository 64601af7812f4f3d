// libFuzzer target: a tokenizer.json through Tokenizer::from_hf_dir, the loader's entry,
// in a scratch directory, then a short encode/decode with whatever vocabulary it built.
//
// An input may carry a tokenizer_config.json too: the bytes after a line
// "#tokenizer_config.json" go there (the seeds use it for bos/eos and the chat template).
#include "fuzz_util.h"

#include "core/tokenizer.h"

#include <string_view>

using namespace kvscope;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string dir = fuzz::scratch_dir();
    static const std::string config_path = dir + "/tokenizer_config.json";
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const std::string_view marker = "\n#tokenizer_config.json\n";
    const size_t split = text.find(marker);
    const size_t json_size = split == std::string_view::npos ? size : split;
    fuzz::write_file(dir + "/tokenizer.json", data, json_size);
    std::remove(config_path.c_str());
    if (split != std::string_view::npos)
        fuzz::write_file(config_path, data + split + marker.size(), size - split - marker.size());
    fuzz::expect_clean_errors([&] {
        const Tokenizer tok = Tokenizer::from_hf_dir(dir);
        const std::vector<int32_t> ids = tok.encode("Hello <|im_start|>wörld 123\n", true, true);
        for (int32_t id : ids)
            if (id < 0 || id >= tok.n_vocab()) fuzz::fail("encode gave id " + std::to_string(id));
        (void)tok.decode(ids);
        (void)tok.apply_chat({{"user", "hi"}});
    });
    return 0;
}
