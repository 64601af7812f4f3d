// Evaluation tasks: prompts with something to check the method's output against.
//
//   passkey  a five-digit key hidden at a given depth in filler text, then asked for;
//            the method passes when its free-running answer contains the key
//   text     natural text: the first part is the prompt, the rest is teacher-forced,
//            so KL and perplexity are measured on real continuations
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvscope {

class Tokenizer;

struct TaskInstance {
    std::string name;             // "passkey depth=0.25", "text"
    std::vector<int32_t> prompt;
    std::vector<int32_t> forced;  // teacher-forced continuation; empty: the reference's greedy tokens
    std::string answer;           // must appear in the free-running output; empty: nothing to check
    int64_t n_predict = 0;        // steps when nothing is forced
};

// The passkey test's filler text as Mohtashami & Jaggi (2023) wrote it (the needle probes
// of core/probes.h share it).
const char* passkey_filler();

// `n_instances` keys at depths (i + 0.5) / n_instances in about `n_tokens` tokens of
// filler, in the model's chat format when it has one. Keys come from `seed`.
std::vector<TaskInstance> passkey_task(const Tokenizer& tok, int64_t n_tokens, int n_instances, uint64_t seed);

// `text` split into n_prompt prompt tokens and n_continuation forced ones; throws Error
// naming `source` when the text is too short.
TaskInstance text_task(const Tokenizer& tok, const std::string& text, const std::string& source, int64_t n_prompt,
                       int64_t n_continuation);

} // namespace kvscope
