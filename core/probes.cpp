#include "core/probes.h"

#include "core/error.h"
#include "core/tasks.h"
#include "core/tokenizer.h"

#include <random>

namespace kvscope {

namespace {

void append(std::vector<int32_t>& to, const std::vector<int32_t>& ids) { to.insert(to.end(), ids.begin(), ids.end()); }

constexpr int kKeysPerMultiKeyProbe = 4;

std::vector<int32_t> start(const Tokenizer& tok) {
    return tok.add_bos_default() && tok.bos() >= 0 ? std::vector<int32_t>{tok.bos()} : std::vector<int32_t>{};
}

// Ids whose text is not empty once special tokens are skipped: what ordinary text is made of.
std::vector<int32_t> ordinary_ids(const Tokenizer& tok) {
    std::vector<int32_t> ids;
    for (int32_t id = 0; id < tok.n_vocab(); ++id)
        if (!tok.decode({id}, /*skip_special=*/true).empty()) ids.push_back(id);
    return ids;
}

Probe repeat_probe(const Tokenizer& tok, const ProbeOptions& o, std::mt19937_64& rng) {
    const std::vector<int32_t> vocab = ordinary_ids(tok);
    std::vector<int32_t> r(static_cast<size_t>(o.repeat_length));
    for (int32_t& id : r) id = vocab[rng() % vocab.size()];
    Probe p;
    p.kind = Probe::Kind::repeat;
    p.name = "repeat N=" + std::to_string(o.repeat_length);
    p.tokens = start(tok);
    append(p.tokens, r);
    p.second_copy = int64_t(p.tokens.size());
    append(p.tokens, r);
    p.period = o.repeat_length;
    return p;
}

// Pass keys at `depths` of the filler, each named after a door when there are several, and
// a question for the key at `asked`, its answer teacher-forced. The pieces are tokenized
// apart, so a key's tokens are the same ids in the needle and in the answer, at known
// positions.
Probe needle_probe(const Tokenizer& tok, const ProbeOptions& o, const std::vector<double>& depths, size_t asked,
                   std::mt19937_64& rng) {
    static const char* const kDoors[] = {"red", "blue", "green", "yellow", "white", "black", "grey", "orange"};
    const std::vector<int32_t> filler = tok.encode(passkey_filler(), false);
    const auto subject = [&](size_t i) {
        return depths.size() == 1 ? std::string(" The pass key") : " The pass key of the " + std::string(kDoors[i % 8]) + " door";
    };
    Probe p;
    p.kind = Probe::Kind::needle;
    char name[64];
    if (depths.size() == 1) std::snprintf(name, sizeof name, "needle depth=%.2f", depths[0]);
    else std::snprintf(name, sizeof name, "needles %zu, asked depth=%.2f", depths.size(), depths[asked]);
    p.name = name;
    p.tokens = start(tok);
    std::vector<int32_t> asked_key;
    int64_t source = 0, written = 0;
    for (size_t i = 0; i < depths.size(); ++i) {
        for (const int64_t end = int64_t(depths[i] * double(o.needle_length)); written < end; ++written)
            p.tokens.push_back(filler[size_t(written) % filler.size()]);
        const std::vector<int32_t> key = tok.encode(" " + std::to_string(10000 + rng() % 90000), false);
        append(p.tokens, tok.encode(subject(i) + " is", false));
        if (i == asked) {
            source = int64_t(p.tokens.size());
            asked_key = key;
        }
        append(p.tokens, key);
        append(p.tokens, tok.encode(". Remember it.", false));
    }
    for (; written < o.needle_length; ++written) p.tokens.push_back(filler[size_t(written) % filler.size()]);
    append(p.tokens, tok.encode(" What is the" + subject(asked).substr(4) + "?" + subject(asked) + " is", false));
    const int64_t answer = int64_t(p.tokens.size());
    append(p.tokens, asked_key);
    for (int64_t m = 0; m < int64_t(asked_key.size()); ++m) p.copies.push_back({answer + m - 1, source + m});
    return p;
}

Probe text_probe(const Tokenizer& tok, const ProbeOptions& o, std::mt19937_64& rng) {
    std::vector<int32_t> ids = tok.encode(o.text, false);
    if (int64_t(ids.size()) < o.text_length)
        throw Error("probes", "text", "has " + std::to_string(ids.size()) + " tokens; the text probe needs " +
                                          std::to_string(o.text_length));
    const int64_t offset = int64_t(rng() % uint64_t(int64_t(ids.size()) - o.text_length + 1));
    Probe p;
    p.kind = Probe::Kind::text;
    p.name = "text from token " + std::to_string(offset);
    p.tokens = start(tok);
    p.tokens.insert(p.tokens.end(), ids.begin() + offset, ids.begin() + offset + o.text_length);
    return p;
}

} // namespace

std::string ProbeOptions::describe() const {
    return "seed=" + std::to_string(seed) + " repeat=" + std::to_string(repeat_length) + "x" + std::to_string(repeats) +
           " needle=" +
           std::to_string(needle_length) + "x" + std::to_string(needles) + " multikey=" + std::to_string(multi_key) +
           " text=" + std::to_string(text_length);
}

std::vector<Probe> make_probes(const Tokenizer& tok, const ProbeOptions& o) {
    std::mt19937_64 rng(o.seed);
    std::vector<Probe> probes;
    for (int i = 0; i < o.repeats; ++i) probes.push_back(repeat_probe(tok, o, rng));
    for (int i = 0; i < o.needles; ++i) probes.push_back(needle_probe(tok, o, {(i + 0.5) / o.needles}, 0, rng));
    for (int i = 0; i < o.multi_key; ++i) {
        std::vector<double> depths;
        for (int k = 0; k < kKeysPerMultiKeyProbe; ++k) depths.push_back((k + 0.5) / kKeysPerMultiKeyProbe);
        probes.push_back(needle_probe(tok, o, depths, size_t(rng() % kKeysPerMultiKeyProbe), rng));
    }
    probes.push_back(text_probe(tok, o, rng));
    return probes;
}

} // namespace kvscope
