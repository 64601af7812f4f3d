// Forward parity on CPU: the default model's logits against an independent NumPy forward
// (tests/reference/forward_reference.py) on the same dequantized weights, and a 64-token
// greedy continuation that must be identical.
#include "core/generator.h"
#include "core/kv_store.h"
#include "core/model.h"
#include "core/npy.h"
#include "test_util.h"

#include <ATen/ATen.h>

#include <sstream>

namespace kvscope {
namespace {

constexpr float kTolerance = 1e-2f; // max |logit difference|, fp32 vs fp32 on the same weights
constexpr int64_t kGreedy = 64;

// About 1,150 tokens of varied prose for the long prompt.
std::string long_text() {
    const char* subjects[] = {"The archive", "A small team", "The river town", "Our old telescope", "The committee"};
    const char* verbs[] = {"recorded", "questioned", "rebuilt", "measured", "forgot"};
    const char* objects[] = {"every storm since 1887", "the price of bread in winter", "a map of the northern hills",
                             "the distance to the nearest star", "why the bridge was painted green"};
    std::ostringstream out;
    for (int i = 0; i < 64; ++i)
        out << subjects[i % 5] << " " << verbs[(i * 3) % 5] << " " << objects[(i * 7) % 5] << " in year " << 1900 + i
            << ". ";
    return out.str();
}

struct Case {
    std::string name;
    std::string text;
    bool chat;
};

TEST(ForwardParity, DefaultModelMatchesNumpyReference) {
    const std::string model_path = test::require_default_model();
    Model model = Model::load(model_path);
    const Tokenizer& tok = model.tokenizer();
    const std::vector<Case> cases = {
        {"chat", tok.apply_chat({{"user", "What is the capital of France?"}}), true},
        {"short", "The key-value cache of a transformer stores", false},
        {"long", long_text(), false},
    };

    const std::string dir = test::scratch_dir("forward");
    std::string command = test::python() + " " KVSCOPE_SOURCE_DIR "/tests/reference/forward_reference.py " +
                          model_path + " " + dir + " --greedy " + std::to_string(kGreedy);
    std::vector<std::vector<int32_t>> ids;
    for (const Case& c : cases) {
        ids.push_back(tok.encode(c.text, c.chat));
        write_npy(dir + "/" + c.name + ".npy", ids.back().data(), {int64_t(ids.back().size())});
        command += " " + dir + "/" + c.name + ".npy";
    }
    ASSERT_GE(ids[2].size(), 1000u) << "the long prompt must have at least 1,000 tokens";
    ASSERT_EQ(test::run(command), 0) << command;

    for (size_t i = 0; i < cases.size(); ++i) {
        SCOPED_TRACE(cases[i].name);
        NpyArray positions = read_npy(dir + "/" + cases[i].name + ".positions.npy");
        NpyArray reference = read_npy(dir + "/" + cases[i].name + ".logits.npy");
        NpyArray reference_greedy = read_npy(dir + "/" + cases[i].name + ".greedy.npy");

        KvStore cache(model.config(), model.device(), model.dtype());
        at::Tensor logits = model.forward(ids[i], cache, /*all_logits=*/true);
        at::Tensor rows = logits.index_select(0, at::from_blob(const_cast<int32_t*>(positions.i32()),
                                                               {positions.numel()}, at::kInt).to(at::kLong));
        at::Tensor expected = at::from_blob(const_cast<float*>(reference.f32()), {reference.shape[0], reference.shape[1]});
        const float max_diff = (rows - expected).abs().max().item<float>();
        EXPECT_LE(max_diff, kTolerance);
        std::printf("%s: %zu tokens, max |logit diff| %.2e over %lld positions\n", cases[i].name.c_str(),
                    ids[i].size(), max_diff, (long long)positions.numel());

        cache.clear();
        GenerateOptions options;
        options.n_predict = kGreedy;
        options.stop_at_end_of_generation = false;
        GenerateResult ours = generate(model, cache, ids[i], options);
        std::vector<int32_t> theirs(reference_greedy.i32(), reference_greedy.i32() + reference_greedy.numel());
        EXPECT_EQ(ours.tokens, theirs);
    }
}

} // namespace
} // namespace kvscope

namespace kvscope {
namespace {

// Decode reads quantized blocks on the CPU (kernels/quant_matvec); it must agree with the
// dequantized fp32 weights step by step, up to summation order.
TEST(ForwardParity, BlockDecodeMatchesDequantizedDecode) {
    const std::string path = test::require_default_model();
    LoadOptions dense;
    dense.block_weights = false;
    Model with_blocks = Model::load(path), without = Model::load(path, dense);
    std::vector<int32_t> ids = with_blocks.tokenizer().encode("Paged attention keeps the KV cache in");
    KvStore a(with_blocks.config(), at::kCPU, at::kFloat), b(without.config(), at::kCPU, at::kFloat);
    with_blocks.forward(ids, a);
    at::Tensor last = without.forward(ids, b);
    float max_diff = 0;
    for (int step = 0; step < 16; ++step) {
        const int32_t next = int32_t(last.argmax().item<int64_t>());
        at::Tensor ours = with_blocks.forward({next}, a);
        last = without.forward({next}, b);
        max_diff = std::max(max_diff, (ours - last).abs().max().item<float>());
    }
    std::printf("block vs dequantized decode: max |logit diff| %.2e over 16 steps\n", max_diff);
    EXPECT_LE(max_diff, 1e-4f);
}

} // namespace
} // namespace kvscope
