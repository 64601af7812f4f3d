#include "core/tasks.h"

#include "core/error.h"
#include "core/tokenizer.h"

#include <random>

namespace kvscope {

namespace {

std::string repeat(const char* text, int64_t times) {
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += text;
    return out;
}

} // namespace

const char* passkey_filler() {
    return "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
}

std::vector<TaskInstance> passkey_task(const Tokenizer& tok, int64_t n_tokens, int n_instances, uint64_t seed) {
    const int64_t filler_tokens = int64_t(tok.encode(passkey_filler(), false).size());
    const int64_t repeats = std::max<int64_t>(1, n_tokens / filler_tokens);
    std::mt19937_64 rng(seed);
    std::vector<TaskInstance> out;
    for (int i = 0; i < n_instances; ++i) {
        const double depth = (i + 0.5) / n_instances;
        const std::string key = std::to_string(10000 + rng() % 90000);
        const int64_t before = int64_t(depth * double(repeats));
        const std::string question =
            "There is an important piece of information hidden inside a lot of irrelevant text. Find it and memorize it. " +
            repeat(passkey_filler(), before) + "The pass key is " + key + ". Remember it. " + key + " is the pass key. " +
            repeat(passkey_filler(), repeats - before) + "What is the pass key?";
        std::string text = question;
        bool chat = true;
        try {
            text = tok.apply_chat({{"user", question}});
        } catch (const Error&) {
            chat = false; // a model without a known chat format gets the plain text
        }
        TaskInstance t;
        char name[64];
        std::snprintf(name, sizeof name, "passkey depth=%.2f", depth);
        t.name = name;
        t.prompt = tok.encode(text, /*parse_special=*/chat, tok.add_bos_default());
        t.answer = key;
        t.n_predict = 16;
        out.push_back(std::move(t));
    }
    return out;
}

TaskInstance text_task(const Tokenizer& tok, const std::string& text, const std::string& source, int64_t n_prompt,
                       int64_t n_continuation) {
    std::vector<int32_t> ids = tok.encode(text, /*parse_special=*/false, tok.add_bos_default());
    if (int64_t(ids.size()) < n_prompt + n_continuation)
        throw Error(source, "text",
                    "has " + std::to_string(ids.size()) + " tokens; the task needs " + std::to_string(n_prompt) +
                        " prompt + " + std::to_string(n_continuation) + " continuation tokens");
    TaskInstance t;
    t.name = "text";
    t.prompt.assign(ids.begin(), ids.begin() + n_prompt);
    t.forced.assign(ids.begin() + n_prompt, ids.begin() + n_prompt + n_continuation);
    return t;
}

} // namespace kvscope
