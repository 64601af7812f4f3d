// The command line on bad input: the real `kvscope` binary, run on tiny generated models
// (tests/reference/make_tiny_models.py) and their damaged copies. Every bad input must end
// with exit status 1 and exactly one line on stderr, "kvscope: error: <file>: <field>: ...",
// never a crash. The valid GGUF and Hugging Face copies of the tiny model must generate,
// and give the same greedy tokens.
#include "core/npy.h"
#include "test_util.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace kvscope {
namespace {

struct Outcome {
    bool exited = false; // false: killed by a signal (a crash) or could not be started
    int status = -1;     // the exit status when exited, else the signal number
    std::string out, err;
};

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

std::vector<std::string> non_empty_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) lines.push_back(line);
    return lines;
}

std::string describe(const Outcome& o) {
    std::ostringstream s;
    if (o.exited) s << "exit status " << o.status;
    else s << "killed by signal " << o.status;
    s << "\n--- stderr ---\n" << o.err << "--- stdout ---\n" << o.out << "---";
    return s.str();
}

class CliErrors : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = test::scratch_dir("cli_errors");
        const std::string log = dir_ + "/make_tiny_models.log";
        const std::string command = test::python() + " " KVSCOPE_SOURCE_DIR "/tests/reference/make_tiny_models.py " +
                                    dir_ + " > " + log + " 2>&1";
        made_ = test::run(command) == 0;
        if (!made_) made_error_ = command + "\n" + read_text(log);
    }

    void SetUp() override { ASSERT_TRUE(made_) << "make_tiny_models.py failed:\n" << made_error_; }

    static std::string path(const std::string& name) { return dir_ + "/" + name; }

    // Runs kvscope with `args`, stdin from /dev/null, stdout and stderr into files named
    // after `tag` in the scratch folder.
    static Outcome kvscope(const std::vector<std::string>& args, const std::string& tag) {
        const std::string out_path = path(tag + ".stdout"), err_path = path(tag + ".stderr");
        posix_spawn_file_actions_t files;
        posix_spawn_file_actions_init(&files);
        posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&files, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_addopen(&files, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        std::vector<std::string> argv_text{KVSCOPE_EXE};
        argv_text.insert(argv_text.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (std::string& a : argv_text) argv.push_back(a.data());
        argv.push_back(nullptr);

        Outcome o;
        pid_t pid = 0;
        const int rc = posix_spawn(&pid, KVSCOPE_EXE, &files, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&files);
        if (rc != 0) {
            o.err = std::string("could not start " KVSCOPE_EXE ": ") + std::strerror(rc);
            return o;
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        if (WIFEXITED(status)) {
            o.exited = true;
            o.status = WEXITSTATUS(status);
        } else if (WIFSIGNALED(status)) {
            o.status = WTERMSIG(status);
        }
        o.out = read_text(out_path);
        o.err = read_text(err_path);
        return o;
    }

    static Outcome generate(const std::string& model, const std::string& tag) {
        return kvscope({"generate", "-m", model, "-p", "hello", "-n", "4"}, tag);
    }

    // Exit status exactly 1, one non-empty stderr line that starts with
    // "kvscope: error: <prefix>", and holds each of `words`.
    static void expect_error(const Outcome& o, const std::string& prefix, const std::vector<std::string>& words = {}) {
        ASSERT_TRUE(o.exited) << "crashed: " << describe(o);
        EXPECT_EQ(o.status, 1) << describe(o);
        const std::vector<std::string> lines = non_empty_lines(o.err);
        ASSERT_EQ(lines.size(), 1u) << "stderr must hold exactly one line: " << describe(o);
        const std::string want = "kvscope: error: " + prefix;
        EXPECT_EQ(lines[0].compare(0, want.size(), want), 0) << "expected the line to start with\n  " << want
                                                             << "\nbut it is\n  " << lines[0];
        for (const std::string& word : words)
            EXPECT_NE(lines[0].find(word), std::string::npos) << "expected \"" << word << "\" in\n  " << lines[0];
    }

    // A damaged model file: the error names the file, then the field.
    static void expect_model_error(const std::string& name, const std::string& file, const std::string& field,
                                   const std::vector<std::string>& words = {}) {
        SCOPED_TRACE(name);
        expect_error(generate(path(name), name), path(file) + ": " + field + ": ", words);
    }

    static std::string dir_;
    static bool made_;
    static std::string made_error_;
};

std::string CliErrors::dir_;
bool CliErrors::made_ = false;
std::string CliErrors::made_error_;

// ---- valid models ---------------------------------------------------------------------

TEST_F(CliErrors, GgufAndHfDirectoryGenerateTheSameGreedyTokens) {
    const std::vector<std::string> args{"-p", "hello world", "-n", "16", "--ignore-eos"};
    auto run = [&](const std::string& model, const std::string& tag) {
        std::vector<std::string> all{"generate", "-m", path(model)};
        all.insert(all.end(), args.begin(), args.end());
        return kvscope(all, tag);
    };
    const Outcome gguf = run("tiny.gguf", "valid-gguf");
    const Outcome hf = run("tiny-hf", "valid-hf");
    for (const Outcome* o : {&gguf, &hf}) {
        ASSERT_TRUE(o->exited && o->status == 0) << describe(*o);
        EXPECT_EQ(o->out.rfind("hello world", 0), 0u) << "the prompt is echoed first: " << describe(*o);
        EXPECT_GT(o->out.size(), std::string("hello world\n").size()) << "nothing generated: " << describe(*o);
        EXPECT_NE(o->err.find("generated: 16 tokens"), std::string::npos) << describe(*o);
        EXPECT_EQ(o->err.find("error"), std::string::npos) << describe(*o);
    }
    EXPECT_EQ(gguf.out, hf.out) << "GGUF and Hugging Face copies of one model disagree";
}

// A sharper look at the same parity: the logits of every position, which a random model's
// few greedy tokens may not tell apart (a wrong Q/K row order changes them).
TEST_F(CliErrors, GgufAndHfDirectoryGiveTheSameLogits) {
    const std::string prompt = "hello world, the cat is in the hat and it is there";
    std::vector<NpyArray> logits;
    for (const std::string model : {"tiny.gguf", "tiny-hf"}) {
        const std::string out = path(model + ".logits.npy");
        const Outcome o = kvscope({"logits", "-m", path(model), "-p", prompt, "-o", out}, "logits-" + model);
        ASSERT_TRUE(o.exited && o.status == 0) << describe(o);
        logits.push_back(read_npy(out));
    }
    ASSERT_EQ(logits[0].shape, logits[1].shape);
    ASSERT_EQ(logits[0].shape.size(), 2u);
    ASSERT_GT(logits[0].shape[0], 4) << "the prompt should be several tokens";
    const int64_t n = logits[0].numel(), n_vocab = logits[0].shape[1];
    float max_diff = 0, max_spread = 0;
    for (int64_t i = 0; i < n; ++i) {
        max_diff = std::max(max_diff, std::fabs(logits[0].f32()[i] - logits[1].f32()[i]));
        max_spread = std::max(max_spread, std::fabs(logits[0].f32()[i] - logits[0].f32()[i % n_vocab]));
    }
    EXPECT_LE(max_diff, 1e-4f) << "GGUF and Hugging Face logits differ";
    EXPECT_GT(max_spread, 1e-2f) << "the logits do not depend on the position: the check would have no teeth";
}

// ---- damaged GGUF files -----------------------------------------------------------------

TEST_F(CliErrors, TruncatedGguf) {
    expect_model_error("truncated.gguf", "truncated.gguf", "tensor 'blk.0.ffn_up.weight'", {"past the end"});
}

TEST_F(CliErrors, BadMagic) {
    expect_model_error("bad-magic.gguf", "bad-magic.gguf", "magic", {"GGUF"});
}

TEST_F(CliErrors, TensorOffsetPastTheEnd) {
    expect_model_error("offset-past-end.gguf", "offset-past-end.gguf", "tensor 'blk.1.attn_k.weight'",
                       {"offset", "past the end"});
}

TEST_F(CliErrors, UnknownTensorType) {
    expect_model_error("unknown-dtype.gguf", "unknown-dtype.gguf", "tensor 'blk.0.attn_k.weight'", {"99"});
}

TEST_F(CliErrors, TensorShapeContradictsConfig) {
    expect_model_error("shape-mismatch.gguf", "shape-mismatch.gguf", "tensor 'blk.0.attn_q.weight'",
                       {"[48, 64]", "[64, 64]"});
}

TEST_F(CliErrors, UnsupportedGgufArchitecture) {
    expect_model_error("unsupported-arch.gguf", "unsupported-arch.gguf", "general.architecture", {"mamba"});
}

TEST_F(CliErrors, GgufWithoutTokenizer) {
    expect_model_error("no-tokenizer.gguf", "no-tokenizer.gguf", "tokenizer.ggml.model", {"missing"});
}

// ---- damaged Hugging Face directories ------------------------------------------------

TEST_F(CliErrors, HfDirectoryWithoutTokenizer) {
    // The missing file is the one named; the "field" is the failed open.
    expect_model_error("hf-no-tokenizer", "hf-no-tokenizer/tokenizer.json", "open");
}

TEST_F(CliErrors, UnsupportedHfArchitecture) {
    expect_model_error("hf-unsupported-arch", "hf-unsupported-arch/config.json", "model_type", {"gpt_neox"});
}

TEST_F(CliErrors, HfConfigNotJson) {
    expect_model_error("hf-bad-config", "hf-bad-config/config.json", "json", {"parse error"});
}

TEST_F(CliErrors, HfTensorMissing) {
    // No file holds it, so the directory is named.
    expect_model_error("hf-missing-tensor", "hf-missing-tensor", "tensor 'model.layers.1.mlp.down_proj.weight'",
                       {"missing"});
}

TEST_F(CliErrors, DirectoryThatIsNotAModel) {
    const std::string dir = path("not-a-model");
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/notes.txt") << "not a model\n";
    expect_error(generate(dir, "not-a-model"), dir + ": model: ", {"config.json"});
}

TEST_F(CliErrors, ModelPathThatDoesNotExist) {
    const std::string missing = path("no-such-model.gguf");
    expect_error(generate(missing, "missing-model"), missing + ": model: ");
}

// ---- bad prompts and options ----------------------------------------------------------

TEST_F(CliErrors, EmptyPrompt) {
    expect_error(kvscope({"generate", "-m", path("tiny.gguf"), "-p", "", "-n", "4"}, "empty-prompt"), "",
                 {"--prompt"});
}

TEST_F(CliErrors, EmptyPromptFile) {
    const std::string file = path("empty-prompt.txt");
    std::ofstream(file, std::ios::binary).flush();
    expect_error(kvscope({"generate", "-m", path("tiny.gguf"), "-f", file, "-n", "4"}, "empty-prompt-file"),
                 file + ": prompt file: ", {"empty"});
}

TEST_F(CliErrors, PromptLongerThanTheContext) {
    std::string prompt;
    for (int i = 0; i < 40; ++i) prompt += "hello world "; // 80 tokens at least; the context is 64
    const Outcome o = kvscope({"generate", "-m", path("tiny.gguf"), "-p", prompt, "-n", "4"}, "long-prompt");
    expect_error(o, "prompt: length: ", {"context", "64"});
}

TEST_F(CliErrors, PromptFileWithInvalidUtf8) {
    const std::string file = path("bad-utf8.txt");
    std::ofstream(file, std::ios::binary) << "hello \xff\xfe world";
    expect_error(kvscope({"generate", "-m", path("tiny.gguf"), "-f", file, "-n", "4"}, "bad-utf8"),
                 file + ": prompt file: ", {"UTF-8", "byte 6"});
}

TEST_F(CliErrors, PromptFileThatDoesNotExist) {
    const std::string file = path("no-such-prompt.txt");
    expect_error(kvscope({"generate", "-m", path("tiny.gguf"), "-f", file, "-n", "4"}, "missing-prompt-file"),
                 file + ": prompt file: ");
}

TEST_F(CliErrors, CudaDeviceWithoutCuda) {
    const Outcome o =
        kvscope({"generate", "-m", path("tiny.gguf"), "-p", "hello", "-n", "4", "--device", "cuda"}, "cuda");
    if (o.exited && o.status == 0) GTEST_SKIP() << "this machine has CUDA: --device cuda worked";
    expect_error(o, "--device: cuda: ", {"CUDA"});
}

TEST_F(CliErrors, DeviceThatIsNotADevice) {
    expect_error(kvscope({"generate", "-m", path("tiny.gguf"), "-p", "hello", "-n", "4", "--device", "tpu"},
                         "bad-device"),
                 "--device: tpu: ");
}

// The cache layer's commands: a bad spec, budget, plugin or task fails with one line
// naming what is wrong, before any model loads.
TEST_F(CliErrors, UnknownMethod) {
    expect_error(kvscope({"run", "-m", path("tiny.gguf"), "-p", "hello", "--method", "bogus"}, "bad-method"),
                 "method spec: bogus: ", {"no such method"});
}

TEST_F(CliErrors, MethodParameterOutOfRange) {
    expect_error(kvscope({"run", "-m", path("tiny.gguf"), "-p", "hello", "--method", "snapkv(kernel=4096)"},
                         "bad-param"),
                 "method spec: snapkv(kernel): ", {"outside"});
}

TEST_F(CliErrors, MalformedMethodSpec) {
    expect_error(kvscope({"run", "-m", path("tiny.gguf"), "-p", "hello", "--method", "snapkv(window=32"},
                         "bad-spec"),
                 "method spec: column 17: ");
}

TEST_F(CliErrors, BudgetThatIsNotABudget) {
    expect_error(kvscope({"run", "-m", path("tiny.gguf"), "-p", "hello", "--budget", "-3"}, "bad-budget"),
                 "budget: -3: ");
}

TEST_F(CliErrors, PluginThatDoesNotExist) {
    const std::string missing = path("no-such-plugin.so");
    expect_error(kvscope({"methods", "--plugin", missing}, "missing-plugin"), missing + ": plugin: ", {"no such file"});
}

TEST_F(CliErrors, PluginThatIsNotALibrary) {
    const std::string file = path("not-a-plugin.so");
    std::ofstream(file) << "this is not an ELF file";
    expect_error(kvscope({"methods", "--plugin", file}, "bad-plugin"), file + ": plugin: ", {"dlopen"});
}

TEST_F(CliErrors, CompareTaskFileThatDoesNotExist) {
    const std::string missing = path("no-such-text.txt");
    expect_error(kvscope({"compare", "-m", path("tiny.gguf"), "--task", missing, "--methods", "snapkv", "--budgets",
                          "8"},
                         "missing-task"),
                 missing + ": task text: ");
}

} // namespace
} // namespace kvscope
