// libFuzzer target: a Hugging Face config.json through config_from_hf_json, the function
// the loader calls, by way of a scratch file (the function takes a path).
#include "fuzz_util.h"

#include "core/model_config.h"

using namespace kvscope;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string path = fuzz::scratch_dir() + "/config.json";
    fuzz::write_file(path, data, size);
    fuzz::expect_clean_errors([&] {
        const ModelConfig c = config_from_hf_json(path);
        // What validate() promises the forward pass.
        if (c.n_layer <= 0 || c.n_head <= 0 || c.n_head_kv <= 0 || c.n_head % c.n_head_kv != 0 || c.head_dim % 2)
            fuzz::fail("config_from_hf_json accepted an invalid config");
    });
    return 0;
}
