// libFuzzer target: a GGUF file as the app opens one (GgufFile::open → parse): header,
// metadata, tensor infos and data offsets, then what the loader reads from it — the
// model config, the tokenizer metadata, and every tensor's bytes (dequantized, so a bad
// offset or size would read outside the buffer under AddressSanitizer).
//
// Anything the parsers throw must be a kvscope::Error with a one-line message; any other
// exception, a crash or a sanitizer report is a bug.
#include "fuzz_util.h"

#include "core/gguf.h"
#include "core/model_config.h"
#include "core/tokenizer.h"
#include "kernels/dequant.h"

#include <vector>

using namespace kvscope;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const fuzz::ExactCopy input(data, size); // no slack after the last byte
    fuzz::expect_clean_errors([&] {
        const GgufFile gguf = GgufFile::parse(input.data(), input.size(), "fuzz.gguf");
        for (const auto& [key, value] : gguf.metadata()) (void)gguf.find(key);
        std::vector<float> row;
        for (const GgufTensorInfo& t : gguf.tensors()) {
            // One row (ne[0] elements) at the start and one at the end of the tensor's data.
            const kernels::GgmlTypeInfo* type = kernels::ggml_type_info(uint32_t(t.type));
            const int64_t n = t.ne[0];
            if (n > (int64_t(1) << 20)) continue; // keep an input's cost bounded
            row.resize(size_t(n));
            const uint64_t row_bytes = uint64_t(n / type->block_elems) * type->block_bytes;
            kernels::dequantize(t.type, gguf.tensor_data(t), row.data(), n);
            kernels::dequantize(t.type, gguf.tensor_data(t) + (t.n_bytes - row_bytes), row.data(), n);
        }
        fuzz::expect_clean_errors([&] { (void)config_from_gguf(gguf); });
        fuzz::expect_clean_errors([&] {
            const Tokenizer tok = Tokenizer::from_gguf(gguf);
            const std::vector<int32_t> ids = tok.encode("Hello <|im_start|> wörld 123", true, true);
            (void)tok.decode(ids);
        });
    });
    return 0;
}
