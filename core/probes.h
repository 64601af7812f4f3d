// The probe suite of the head-role analysis (DESIGN.md §6, METHODS.md §3): prompts whose
// structure says where a head of a given role must look. Generated from a seed, so a
// profile names its probes by their options alone.
//
//   repeat  [BOS] r_1..r_N r_1..r_N, r uniform over the ordinary vocabulary: an induction
//           head at the second r_i looks at the first r_{i+1}, an echo head at the first r_i
//   needle  the passkey filler (core/tasks.h) with a pass key sentence at a depth, a
//           question, and the answer teacher-forced: a retrieval head, predicting each
//           answer token, looks at that token in the needle. Multi-key: four keys, each
//           of a named door, and the question asks for one of them.
//   text    natural text (assets/prompts/natural_text.txt) from a seeded offset: sinks,
//           locality, previous token, entropy
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kvscope {

class Tokenizer;

struct Probe {
    enum class Kind { repeat, needle, text };
    Kind kind = Kind::text;
    std::string name;            // "repeat N=256", "needle depth=0.50", "needles 4, asked depth=0.38", "text from token 312"
    std::vector<int32_t> tokens; // the whole sequence, run as one prefill
    int64_t period = 0;          // repeat: N; the second copy starts at `second_copy`
    int64_t second_copy = 0;
    // needle: (query, source) per answer token: the query's output predicts the token at
    // `source`, the same token in the needle.
    std::vector<std::pair<int64_t, int64_t>> copies;
};

struct ProbeOptions {
    uint64_t seed = 0;
    int repeats = 2;              // repeat probes, each of its own random tokens
    int64_t repeat_length = 256; // N
    int64_t needle_length = 1000; // tokens of filler around the needle, about
    int needles = 8;              // depths (i + 0.5) / needles
    int multi_key = 2;            // probes with 4 named keys (at depths 1/8, 3/8, ...), one asked
    int64_t text_length = 1000;   // from a seeded offset into the text
    std::string text;             // the natural text (assets/prompts/natural_text.txt)
    // "seed=0 repeat=256x2 needle=1000x8 multikey=2 text=1000": what a stored profile is keyed by.
    std::string describe() const;
};

// Throws Error when the text is shorter than text_length tokens.
std::vector<Probe> make_probes(const Tokenizer& tok, const ProbeOptions& options);

} // namespace kvscope
