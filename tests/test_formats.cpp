// Format parity: the default model's weights, dequantized and re-saved by an independent
// script (tests/reference/make_hf_dir.py) as a Hugging Face directory — one file, and
// three shards with an index — load through the safetensors path and give the logits of
// the GGUF path, and its tokenizer.json the same ids.
#include "core/kv_store.h"
#include "core/model.h"
#include "test_util.h"

#include <ATen/ATen.h>

namespace kvscope {
namespace {

constexpr float kTolerance = 1e-5f; // fp32, same weights: only summation order may differ

at::Tensor all_logits(const Model& model, const std::vector<int32_t>& ids) {
    KvStore cache(model.config(), model.device(), model.dtype());
    return model.forward(ids, cache, /*all_logits=*/true);
}

// Writes the model directory (weights, config, tokenizer) with the reference scripts.
std::string make_hf_dir(const std::string& gguf, const std::string& name, int shards) {
    const std::string dir = test::scratch_dir(name);
    const std::string scripts = KVSCOPE_SOURCE_DIR "/tests/reference/";
    std::string weights = test::python() + " " + scripts + "make_hf_dir.py " + gguf + " " + dir;
    if (shards > 1) weights += " --shards " + std::to_string(shards);
    EXPECT_EQ(test::run(weights), 0) << weights;
    std::string tokenizer = test::python() + " " + scripts + "gguf_to_tokenizer_json.py " + gguf + " " + dir;
    EXPECT_EQ(test::run(tokenizer), 0) << tokenizer;
    return dir;
}

class FormatParity : public ::testing::TestWithParam<int> {};

TEST_P(FormatParity, SafetensorsDirectoryMatchesGguf) {
    const std::string gguf_path = test::require_default_model();
    const int shards = GetParam();
    const std::string dir = make_hf_dir(gguf_path, "formats-" + std::to_string(shards), shards);

    Model from_gguf = Model::load(gguf_path);
    Model from_hf = Model::load(dir);
    EXPECT_EQ(from_hf.config().n_layer, from_gguf.config().n_layer);
    EXPECT_EQ(from_hf.config().n_head_kv, from_gguf.config().n_head_kv);
    EXPECT_DOUBLE_EQ(from_hf.config().rope.theta, from_gguf.config().rope.theta);
    EXPECT_EQ(from_hf.config().tied_embeddings, from_gguf.config().tied_embeddings);

    const std::string text = from_gguf.tokenizer().apply_chat({{"user", "Summarise the plot of Hamlet in two lines."}});
    std::vector<int32_t> ids = from_gguf.tokenizer().encode(text);
    EXPECT_EQ(from_hf.tokenizer().encode(text), ids);

    const float max_diff = (all_logits(from_hf, ids) - all_logits(from_gguf, ids)).abs().max().item<float>();
    std::printf("%d shard(s): %zu tokens, max |logit diff| %.2e\n", shards, ids.size(), max_diff);
    EXPECT_LE(max_diff, kTolerance);
}

INSTANTIATE_TEST_SUITE_P(Shards, FormatParity, ::testing::Values(1, 3));

} // namespace
} // namespace kvscope
