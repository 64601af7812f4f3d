// Byte-level BPE tokenizer (see tokenizer.h): loading from GGUF metadata or a Hugging
// Face tokenizer.json, special-token splitting, regex pre-tokenization (PCRE2), rank-
// ordered BPE merges, decoding and the chat formats KVScope knows.
//
// Index
//   [SECTION] Byte-level alphabet and UTF-8
//   [SECTION] Regex (PCRE2) and pattern rewriting
//   [SECTION] Pre-tokenizer
//   [SECTION] Special-token matcher
//   [SECTION] BPE merges
//   [SECTION] Vocabulary assembly (shared by both loaders)
//   [SECTION] Loading from GGUF
//   [SECTION] Loading from a Hugging Face directory
//   [SECTION] Chat formats
//   [SECTION] Encoding
//   [SECTION] Public API

#include "core/tokenizer.h"

#include "core/error.h"
#include "core/gguf.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace kvscope {
namespace {

//-----------------------------------------------------------------------------
// [SECTION] Byte-level alphabet and UTF-8
//-----------------------------------------------------------------------------

// GPT-2 stores every byte as a printable code point, so vocabulary entries never hold
// spaces or control bytes: printable Latin-1 bytes stand for themselves, the other 68
// bytes take U+0100.. in byte order.
struct ByteAlphabet {
    static constexpr uint32_t kEnd = 0x144; // one past the largest code point used
    std::array<uint32_t, 256> code_point{};
    std::array<int16_t, kEnd> byte{}; // -1: the code point stands for no byte

    ByteAlphabet() {
        byte.fill(-1);
        uint32_t next = 0x100;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            code_point[b] = printable ? uint32_t(b) : next++;
            byte[code_point[b]] = int16_t(b);
        }
    }
};

const ByteAlphabet& byte_alphabet() {
    static const ByteAlphabet alphabet;
    return alphabet;
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

// Decodes the code point at s[i] into `cp` and returns its length in bytes, or 0 when
// the bytes there are not well-formed UTF-8 (overlong, surrogate, truncated, > U+10FFFF).
size_t decode_utf8(std::string_view s, size_t i, uint32_t& cp) {
    const auto byte = [&](size_t k) { return uint8_t(s[i + k]); };
    const uint8_t lead = byte(0);
    size_t len;
    uint32_t min;
    if (lead < 0x80) { cp = lead; return 1; }
    if ((lead & 0xE0) == 0xC0) { len = 2; cp = lead & 0x1F; min = 0x80; }
    else if ((lead & 0xF0) == 0xE0) { len = 3; cp = lead & 0x0F; min = 0x800; }
    else if ((lead & 0xF8) == 0xF0) { len = 4; cp = lead & 0x07; min = 0x10000; }
    else return 0;
    if (i + len > s.size()) return 0;
    for (size_t k = 1; k < len; ++k) {
        if ((byte(k) & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (byte(k) & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

// The bytes a vocabulary entry in byte-level form stands for. A code point outside the
// alphabet (seen only in hand-made vocabularies) is kept as its own UTF-8.
std::string bytes_of_byte_level_text(std::string_view text) {
    const ByteAlphabet& alphabet = byte_alphabet();
    std::string out;
    for (size_t i = 0; i < text.size();) {
        uint32_t cp;
        const size_t len = decode_utf8(text, i, cp);
        if (len == 0) { out += text[i++]; continue; }
        if (cp < ByteAlphabet::kEnd && alphabet.byte[cp] >= 0) out += char(alphabet.byte[cp]);
        else out.append(text.substr(i, len));
        i += len;
    }
    return out;
}

std::string byte_level_text_of_bytes(std::string_view bytes) {
    std::string out;
    for (unsigned char b : bytes) append_utf8(out, byte_alphabet().code_point[b]);
    return out;
}

//-----------------------------------------------------------------------------
// [SECTION] Regex (PCRE2) and pattern rewriting
//-----------------------------------------------------------------------------

// The references classify code points with newer Unicode tables than Debian 12's PCRE2
// (10.42: Unicode 14.0): Hugging Face's regex engine has 16.0, llama.cpp's own tables
// 15.1. So \s, \p{L} and \p{N} are rewritten to the sets Hugging Face's engine uses,
// measured by running both engines over every code point (TOKENIZER_PARITY.md). With a
// newer PCRE2 the additions are already letters and numbers and change nothing.

// \s: the White_Space property. PCRE2's own \s also takes U+180E (MONGOLIAN VOWEL
// SEPARATOR, a format character since Unicode 6.3).
constexpr const char* kWhiteSpace =
    "\\t-\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
// Letters added in Unicode 15.0, 15.1 and 16.0.
constexpr const char* kLettersSince14 =
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}"
    "\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"
    "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}"
    "\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}"
    "\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}"
    "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}"
    "\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}"
    "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
// Numbers added in Unicode 15.0 (15.1 added none), and in 16.0.
constexpr const char* kNumbersIn15 = "\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}";
constexpr const char* kNumbersIn16 =
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{16130}-\\x{16139}"
    "\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1E5F1}-\\x{1E5FA}";

struct ClassEscape {
    std::string_view escape;
    std::string members; // the inside of a character class
    bool negated;        // \S, \P{..}
};

const std::vector<ClassEscape>& class_escapes() {
    static const std::vector<ClassEscape> escapes = {
        {"\\s", kWhiteSpace, false},
        {"\\S", kWhiteSpace, true},
        {"\\p{L}", std::string("\\p{L}") + kLettersSince14, false},
        {"\\P{L}", std::string("\\p{L}") + kLettersSince14, true},
        {"\\p{N}", std::string("\\p{N}") + kNumbersIn15 + kNumbersIn16, false},
        {"\\P{N}", std::string("\\p{N}") + kNumbersIn15 + kNumbersIn16, true},
    };
    return escapes;
}

// Rewrites \s, \p{L}, \p{N} and their negations to the sets above. A negated escape
// inside a character class stays as it is (a class cannot hold a negated class).
std::string with_reference_classes(const std::string& pattern) {
    std::string out;
    bool in_class = false;
    for (size_t i = 0; i < pattern.size();) {
        if (pattern.compare(i, 2, "\\Q") == 0) { // a quoted literal, copied through its \E
            const size_t end = pattern.find("\\E", i + 2);
            const size_t stop = end == std::string::npos ? pattern.size() : end + 2;
            out.append(pattern, i, stop - i);
            i = stop;
            continue;
        }
        if (pattern[i] == '\\') {
            const auto& escapes = class_escapes();
            const auto it = std::find_if(escapes.begin(), escapes.end(), [&](const ClassEscape& e) {
                return pattern.compare(i, e.escape.size(), e.escape) == 0;
            });
            if (it == escapes.end() || (in_class && it->negated)) {
                out.append(pattern, i, 2);
                i += 2;
            } else {
                out += in_class ? it->members : (it->negated ? "[^" : "[") + it->members + "]";
                i += it->escape.size();
            }
            continue;
        }
        out += pattern[i];
        if (pattern[i] == '[' && !in_class) {
            in_class = true;
            // A ']' right after '[' or '[^' is a literal, not the end of the class.
            if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
            if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
        } else if (pattern[i] == ']' && in_class) {
            in_class = false;
        }
        ++i;
    }
    return out;
}

struct Pcre2CodeFree { void operator()(pcre2_code* code) const { pcre2_code_free(code); } };
struct Pcre2MatchDataFree { void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); } };
using MatchData = std::unique_ptr<pcre2_match_data, Pcre2MatchDataFree>;

std::string pcre2_message(int code) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(code, buffer, sizeof buffer);
    return reinterpret_cast<const char*>(buffer);
}

// A compiled pre-tokenizer pattern (UTF + Unicode properties, JIT when available).
// Text that is not valid UTF-8 is accepted: invalid bytes never match.
class Regex {
public:
    // `reference_classes`: rewrite \s, \p{L}, \p{N} to the references' sets (see above).
    Regex(const std::string& pattern, const std::string& origin, bool reference_classes = true)
        : pattern_(pattern) {
        int error = 0;
        PCRE2_SIZE error_offset = 0;
        const std::string rewritten = reference_classes ? with_reference_classes(pattern) : pattern;
        pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &error_offset,
                                         nullptr);
        if (!code)
            throw Error(origin, "pre-tokenizer pattern",
                        "cannot compile /" + pattern + "/: " + pcre2_message(error));
        code_.reset(code);
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); // without JIT (unsupported CPU) pcre2_match interprets
    }

    // Calls on_piece for every match in `text` and every stretch between matches, in
    // order (Hugging Face's "Isolated" split). Empty matches are skipped.
    void split(std::string_view text, pcre2_match_data* match,
               const std::function<void(std::string_view)>& on_piece) const {
        size_t pos = 0, emitted = 0;
        while (pos < text.size()) {
            if (!find(text, pos, match)) break;
            // Copied out: on_piece may run the next step's regex with the same match data.
            const size_t begin = pcre2_get_ovector_pointer(match)[0];
            const size_t end = pcre2_get_ovector_pointer(match)[1];
            if (end == begin) { // empty match: look again one code point later
                uint32_t cp;
                pos = begin + std::max<size_t>(1, decode_utf8(text, begin, cp));
                continue;
            }
            if (begin > emitted) on_piece(text.substr(emitted, begin - emitted));
            on_piece(text.substr(begin, end - begin));
            emitted = pos = end;
        }
        if (emitted < text.size()) on_piece(text.substr(emitted));
    }

private:
    bool find(std::string_view text, size_t start, pcre2_match_data* match) const {
        const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
        int rc = pcre2_match(code_.get(), subject, text.size(), start, 0, match, nullptr);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) // very long runs: the interpreter keeps its frames on the heap
            rc = pcre2_match(code_.get(), subject, text.size(), start, PCRE2_NO_JIT, match, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) return false;
        if (rc < 0) throw Error("tokenizer", "pre-tokenizer pattern /" + pattern_ + "/", pcre2_message(rc));
        return true;
    }

    std::string pattern_;
    std::unique_ptr<pcre2_code, Pcre2CodeFree> code_;
};

//-----------------------------------------------------------------------------
// [SECTION] Pre-tokenizer
//-----------------------------------------------------------------------------

// GPT-2's pattern; SmolLM2 runs it after splitting off every digit.
constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
// Llama 3's pattern, its case-insensitive contractions spelled out as llama.cpp does
// (so that (?i) case folding cannot turn "'ſ" into a contraction).
constexpr const char* kLlama3Pattern =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// Qwen2: Llama 3's pattern with single digits.
constexpr const char* kQwen2Pattern =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// One digit, for the digit-splitting step (Hugging Face's Digits pre-tokenizer, llama.cpp's
// "\p{N}" step for SmolLM2). Of the references only llama.cpp has this step, so its
// tables (Unicode 15.1) decide what a digit is; numbers new in Unicode 16.0 are not split
// off. Compiled as written, without the rewrite of \p{N}.
const std::string kDigitPattern = std::string("[\\p{N}") + kNumbersIn15 + "]";

// One step splits every piece the previous step produced.
struct PreTokenizeStep {
    std::shared_ptr<const Regex> regex; // null: the piece passes whole
    bool add_prefix_space = false;      // Hugging Face ByteLevel(add_prefix_space=true)
};

class PreTokenizer {
public:
    void add(const std::string& pattern, const std::string& origin) {
        steps_.push_back({std::make_shared<const Regex>(pattern, origin), false});
    }
    void add_digit_split(bool individual, const std::string& origin) {
        const std::string pattern = individual ? kDigitPattern : kDigitPattern + "+";
        steps_.push_back({std::make_shared<const Regex>(pattern, origin, /*reference_classes=*/false), false});
    }
    void add_prefix_space() { steps_.push_back({nullptr, true}); }
    bool empty() const { return steps_.empty(); }

    // Calls on_word for every pre-token of `text`, in order.
    void split(std::string_view text, pcre2_match_data* match,
               const std::function<void(std::string_view)>& on_word) const {
        apply(0, text, match, on_word);
    }

private:
    void apply(size_t step, std::string_view piece, pcre2_match_data* match,
               const std::function<void(std::string_view)>& on_word) const {
        if (step == steps_.size()) { on_word(piece); return; }
        const PreTokenizeStep& s = steps_[step];
        std::string prefixed;
        if (s.add_prefix_space && (piece.empty() || piece[0] != ' ')) {
            prefixed = " " + std::string(piece);
            piece = prefixed;
        }
        if (!s.regex) { apply(step + 1, piece, match, on_word); return; }
        s.regex->split(piece, match, [&](std::string_view sub) { apply(step + 1, sub, match, on_word); });
    }

    std::vector<PreTokenizeStep> steps_;
};

//-----------------------------------------------------------------------------
// [SECTION] Special-token matcher
//-----------------------------------------------------------------------------

// Finds control and user-defined token texts in raw text: leftmost match first, the
// longest text where several start at the same byte.
class SpecialMatcher {
public:
    void add(const std::string& text, int32_t id, bool control) {
        if (text.empty()) return;
        auto& list = by_first_byte_[uint8_t(text[0])];
        const auto longer = [](const Entry& a, const Entry& b) { return a.text.size() > b.text.size(); };
        const Entry entry{text, id, control};
        list.insert(std::upper_bound(list.begin(), list.end(), entry, longer), entry); // longest first
    }

    struct Hit { size_t pos; size_t len; int32_t id; };

    // The first special token at or after `from`; pos == npos when there is none.
    Hit find(std::string_view text, size_t from, bool with_control) const {
        for (size_t i = from; i < text.size(); ++i) {
            const auto& list = by_first_byte_[uint8_t(text[i])];
            for (const Entry& e : list) {
                if (e.control && !with_control) continue;
                if (text.compare(i, e.text.size(), e.text) == 0) return {i, e.text.size(), e.id};
            }
        }
        return {std::string_view::npos, 0, -1};
    }

private:
    struct Entry { std::string text; int32_t id; bool control; };
    std::array<std::vector<Entry>, 256> by_first_byte_;
};

//-----------------------------------------------------------------------------
// [SECTION] BPE merges
//-----------------------------------------------------------------------------

// Merges a pre-token's bytes by rank, lowest rank first and leftmost among equal ranks
// (what both references do). A heap of candidate pairs over a linked list of symbols
// keeps long words O(n log n).
class BpeMerger {
public:
    void set_byte_token(uint8_t byte, int32_t id) { byte_token_[byte] = id; }
    void add_merge(int32_t left, int32_t right, int32_t result) {
        merges_.emplace(key(left, right), Merge{int32_t(merges_.size()), result});
    }

    // Appends the ids of `word` (raw bytes) to `out`. A byte without a token becomes `unk`,
    // or, when there is none, is dropped before merging so that its neighbours may merge
    // (Hugging Face's BPE does this; llama.cpp keeps it as a barrier: TOKENIZER_PARITY.md).
    void encode(std::string_view word, int32_t unk, std::vector<int32_t>& out) const {
        std::vector<Symbol> symbols;
        symbols.reserve(word.size());
        for (unsigned char b : word) {
            const int32_t id = byte_token_[b] >= 0 ? byte_token_[b] : unk;
            const int32_t i = int32_t(symbols.size());
            if (id >= 0) symbols.push_back({id, i - 1, i + 1});
        }
        std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
        for (int32_t i = 0; i + 1 < int32_t(symbols.size()); ++i) push_pair(symbols, i, queue);
        while (!queue.empty()) {
            const Candidate c = queue.top();
            queue.pop();
            Symbol& left = symbols[c.left];
            if (left.id != c.left_id || left.next != c.right || symbols[c.right].id != c.right_id) continue;
            Symbol& right = symbols[c.right];
            left.id = c.result;
            left.next = right.next;
            right.id = kDead;
            if (left.next < int32_t(symbols.size())) symbols[left.next].prev = c.left;
            if (left.prev >= 0) push_pair(symbols, left.prev, queue);
            push_pair(symbols, c.left, queue);
        }
        for (int32_t i = 0; i < int32_t(symbols.size()); i = symbols[i].next) out.push_back(symbols[i].id);
    }

private:
    static constexpr int32_t kDead = -2; // merged into its left neighbour
    struct Merge { int32_t rank; int32_t result; };
    struct Symbol { int32_t id; int32_t prev; int32_t next; };
    struct Candidate {
        int32_t rank, left, right, left_id, right_id, result;
        bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };

    static uint64_t key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

    template <class Queue>
    void push_pair(const std::vector<Symbol>& symbols, int32_t left, Queue& queue) const {
        const int32_t right = symbols[left].next;
        if (right >= int32_t(symbols.size())) return;
        const int32_t a = symbols[left].id, b = symbols[right].id;
        const auto it = merges_.find(key(a, b));
        if (it != merges_.end()) queue.push({it->second.rank, left, right, a, b, it->second.result});
    }

    std::array<int32_t, 256> byte_token_{};
    std::unordered_map<uint64_t, Merge> merges_;
};

// Remembers the ids of recent pre-tokens: prose repeats its words, and a lookup is
// much cheaper than merging again. Shared by threads, so guarded.
class WordCache {
public:
    bool get(std::string_view word, std::vector<int32_t>& out) const {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = map_.find(std::string(word));
        if (it == map_.end()) return false;
        out.insert(out.end(), it->second.begin(), it->second.end());
        return true;
    }
    void put(std::string_view word, const int32_t* ids, size_t n) const {
        if (word.size() > kMaxWordBytes) return;
        std::lock_guard<std::mutex> lock(mutex_);
        if (map_.size() >= kMaxWords) map_.clear();
        map_.emplace(std::string(word), std::vector<int32_t>(ids, ids + n));
    }

private:
    static constexpr size_t kMaxWordBytes = 64, kMaxWords = 1 << 16;
    mutable std::mutex mutex_;
    mutable std::unordered_map<std::string, std::vector<int32_t>> map_;
};

//-----------------------------------------------------------------------------
// [SECTION] Vocabulary assembly (shared by both loaders)
//-----------------------------------------------------------------------------

enum class ChatFormat { None, ChatMl, Llama3 };

// Everything a tokenizer knows; Tokenizer::Impl is this under the header's name.
struct Vocabulary {
    std::string source; // file the vocabulary came from, for messages
    std::vector<std::string> token_text;  // as stored: byte-level form for normal tokens
    std::vector<std::string> token_bytes; // what each token decodes to
    std::vector<TokenType> token_type;
    std::unordered_map<std::string, int32_t> id_of_text;
    PreTokenizer pre_tokenizer;
    SpecialMatcher specials;
    BpeMerger merger;
    WordCache cache;
    bool ignore_merges = false; // a pre-token that is itself a token skips the merges (Llama 3)
    int32_t bos = -1, eos = -1;
    // Stands for a byte the vocabulary lacks (SmolLM2 has no token for 0x04, 0xC0, 0xFF, ...).
    // Only tokenizer.json's model.unk_token sets it; llama.cpp drops such bytes, and so
    // do we for GGUF.
    int32_t unk_byte = -1;
    bool add_bos = false;
    bool nfc = false; // tokenizer.json's NFC normalizer (Qwen2), applied to plain text
    std::unordered_set<int32_t> end_of_generation;
    std::string chat_template;

    int32_t find(const std::string& text) const {
        const auto it = id_of_text.find(text);
        return it == id_of_text.end() ? -1 : it->second;
    }
    void encode_word(std::string_view word, std::vector<int32_t>& out) const;
    void encode_plain(std::string_view text, pcre2_match_data* match, std::vector<int32_t>& out) const;
};

bool is_special_type(TokenType t) { return t == TokenType::Control || t == TokenType::UserDefined; }

// Fills the lookup tables once token_text and token_type are set. Later entries win on
// duplicate texts, as in llama.cpp.
void index_vocabulary(Vocabulary& vocab) {
    const int32_t n = int32_t(vocab.token_text.size());
    vocab.token_bytes.resize(n);
    for (int32_t id = 0; id < n; ++id) {
        const std::string& text = vocab.token_text[id];
        if (!text.empty()) vocab.id_of_text[text] = id;
        const bool raw = is_special_type(vocab.token_type[id]);
        vocab.token_bytes[id] = raw ? text : bytes_of_byte_level_text(text);
        if (raw) vocab.specials.add(text, id, vocab.token_type[id] == TokenType::Control);
    }
    for (int b = 0; b < 256; ++b)
        vocab.merger.set_byte_token(uint8_t(b), vocab.find(byte_level_text_of_bytes(std::string(1, char(b)))));
}

// Merge rules are pairs of token texts; each part and their concatenation must be tokens.
void add_merges(Vocabulary& vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                const std::string& field) {
    for (size_t i = 0; i < merges.size(); ++i) {
        const auto& [a, b] = merges[i];
        const int32_t left = vocab.find(a), right = vocab.find(b), result = vocab.find(a + b);
        const std::string missing = left < 0 ? a : right < 0 ? b : result < 0 ? a + b : "";
        if (left < 0 || right < 0 || result < 0)
            throw Error(vocab.source, field + "[" + std::to_string(i) + "]",
                        "merge \"" + a + " " + b + "\" names unknown token \"" + missing + "\"");
        vocab.merger.add_merge(left, right, result);
    }
}

// Token texts that end a turn in the chat formats KVScope knows.
void find_end_of_generation(Vocabulary& vocab) {
    static const char* const kTexts[] = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>",
                                         "<|end_of_text|>", "<|end|>", "<end_of_turn>", "<EOT>"};
    if (vocab.eos >= 0) vocab.end_of_generation.insert(vocab.eos);
    for (const char* text : kTexts) {
        const int32_t id = vocab.find(text);
        if (id >= 0 && is_special_type(vocab.token_type[id])) vocab.end_of_generation.insert(id);
    }
}

void check_token_id(const Vocabulary& vocab, int32_t id, const std::string& field) {
    if (id < -1 || id >= int32_t(vocab.token_text.size()))
        throw Error(vocab.source, field, "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                            std::to_string(vocab.token_text.size()));
}

// Pre-tokenizers named by GGUF's tokenizer.ggml.pre.
void set_named_pre_tokenizer(Vocabulary& vocab, const std::string& name, const std::string& field) {
    if (name == "smollm") {
        vocab.pre_tokenizer.add_digit_split(/*individual=*/true, vocab.source);
        vocab.pre_tokenizer.add(kGpt2Pattern, vocab.source);
    } else if (name == "gpt2" || name == "default") {
        vocab.pre_tokenizer.add(kGpt2Pattern, vocab.source);
    } else if (name == "llama-bpe" || name == "llama3" || name == "llama-v3") {
        vocab.pre_tokenizer.add(kLlama3Pattern, vocab.source);
        vocab.ignore_merges = true;
    } else if (name == "qwen2") {
        vocab.pre_tokenizer.add(kQwen2Pattern, vocab.source);
    } else {
        throw Error(vocab.source, field,
                    "pre-tokenizer \"" + name + "\" is not supported (known: smollm, gpt2, default, llama-bpe, qwen2)");
    }
}

//-----------------------------------------------------------------------------
// [SECTION] Loading from GGUF
//-----------------------------------------------------------------------------

std::vector<std::pair<std::string, std::string>> split_merges(const std::vector<std::string>& lines,
                                                              const std::string& source, const std::string& field) {
    std::vector<std::pair<std::string, std::string>> merges;
    merges.reserve(lines.size());
    for (size_t i = 0; i < lines.size(); ++i) {
        const size_t space = lines[i].find(' ', 1); // a part is never empty
        if (space == std::string::npos)
            throw Error(source, field + "[" + std::to_string(i) + "]", "merge \"" + lines[i] + "\" has no space");
        merges.emplace_back(lines[i].substr(0, space), lines[i].substr(space + 1));
    }
    return merges;
}

int32_t gguf_token_id(const GgufFile& gguf, const std::string& key) {
    return gguf.find(key) ? int32_t(gguf.get_int(key)) : -1;
}

void load_gguf_vocabulary(Vocabulary& vocab, const GgufFile& gguf) {
    vocab.token_text = gguf.get_string_array("tokenizer.ggml.tokens");
    const size_t n = vocab.token_text.size();
    vocab.token_type.assign(n, TokenType::Normal);
    if (gguf.find("tokenizer.ggml.token_type")) {
        const std::vector<int64_t> types = gguf.get_int_array("tokenizer.ggml.token_type");
        if (types.size() != n)
            throw Error(vocab.source, "tokenizer.ggml.token_type",
                        std::to_string(types.size()) + " types for " + std::to_string(n) + " tokens");
        for (size_t i = 0; i < n; ++i) {
            if (types[i] < 0 || types[i] > int64_t(TokenType::Byte))
                throw Error(vocab.source, "tokenizer.ggml.token_type[" + std::to_string(i) + "]",
                            "unknown token type " + std::to_string(types[i]));
            vocab.token_type[i] = TokenType(types[i]);
        }
    }
    index_vocabulary(vocab);
    const std::string merges_key = "tokenizer.ggml.merges";
    add_merges(vocab, split_merges(gguf.get_string_array(merges_key), vocab.source, merges_key), merges_key);
}

//-----------------------------------------------------------------------------
// [SECTION] Loading from a Hugging Face directory
//-----------------------------------------------------------------------------

using Json = nlohmann::json;

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path, "open", std::strerror(errno));
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

Json read_json(const std::string& path) {
    const std::string text = read_file(path);
    try {
        return Json::parse(text);
    } catch (const Json::exception& e) {
        throw Error(path, "json", e.what());
    }
}

bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

// "eos_token": "<|im_end|>" or {"content": "<|im_end|>", ...}; "" when absent.
std::string special_token_text(const Json& config, const std::string& key) {
    if (!config.contains(key) || config[key].is_null()) return "";
    const Json& v = config[key];
    return v.is_string() ? v.get<std::string>() : v.at("content").get<std::string>();
}

void add_pre_tokenizer_json(Vocabulary& vocab, const Json& pre, bool& byte_level);

// One entry of the pre_tokenizer tree: the kinds byte-level BPE models use.
void add_pre_tokenizer_step(Vocabulary& vocab, const Json& pre, bool& byte_level) {
    const std::string type = pre.at("type").get<std::string>();
    if (type == "Sequence") {
        for (const Json& sub : pre.at("pretokenizers")) add_pre_tokenizer_json(vocab, sub, byte_level);
    } else if (type == "ByteLevel") {
        byte_level = true;
        if (pre.value("add_prefix_space", false)) vocab.pre_tokenizer.add_prefix_space();
        if (pre.value("use_regex", true)) vocab.pre_tokenizer.add(kGpt2Pattern, vocab.source);
    } else if (type == "Digits") {
        vocab.pre_tokenizer.add_digit_split(pre.value("individual_digits", false), vocab.source);
    } else if (type == "Split") {
        const std::string behavior = pre.value("behavior", "");
        if (behavior != "Isolated" || pre.value("invert", false))
            throw Error(vocab.source, "pre_tokenizer",
                        "Split with behavior \"" + behavior + "\"" + (pre.value("invert", false) ? " inverted" : "") +
                            " is not supported (only Isolated)");
        const Json& pattern = pre.at("pattern");
        if (pattern.contains("Regex")) {
            vocab.pre_tokenizer.add(pattern["Regex"].get<std::string>(), vocab.source);
        } else {
            // A literal string: quote it for PCRE2.
            vocab.pre_tokenizer.add("\\Q" + pattern.at("String").get<std::string>() + "\\E", vocab.source);
        }
    } else {
        throw Error(vocab.source, "pre_tokenizer", "type \"" + type + "\" is not supported for byte-level BPE");
    }
}

void add_pre_tokenizer_json(Vocabulary& vocab, const Json& pre, bool& byte_level) {
    if (pre.is_null()) return;
    add_pre_tokenizer_step(vocab, pre, byte_level);
}

bool is_byte_level_decoder(const Json& decoder) {
    if (decoder.is_null()) return false;
    const std::string type = decoder.value("type", "");
    if (type == "ByteLevel") return true;
    if (type != "Sequence") return false;
    for (const Json& sub : decoder.at("decoders"))
        if (is_byte_level_decoder(sub)) return true;
    return false;
}

std::vector<std::pair<std::string, std::string>> json_merges(const Json& merges, const std::string& source) {
    std::vector<std::pair<std::string, std::string>> out;
    std::vector<std::string> lines;
    for (const Json& m : merges) {
        if (m.is_string()) lines.push_back(m.get<std::string>());
        else out.emplace_back(m.at(0).get<std::string>(), m.at(1).get<std::string>());
    }
    if (!lines.empty() && !out.empty())
        throw Error(source, "model.merges", "mixes \"a b\" strings and [\"a\", \"b\"] pairs");
    return lines.empty() ? out : split_merges(lines, source, "model.merges");
}

void load_bpe_model_json(Vocabulary& vocab, const Json& model) {
    const std::string type = model.value("type", "BPE");
    if (type != "BPE") throw Error(vocab.source, "model.type", "\"" + type + "\" is not supported (only BPE)");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        if (model.contains(key) && !model[key].is_null() && !model[key].get<std::string>().empty())
            throw Error(vocab.source, std::string("model.") + key, "is not supported by byte-level BPE");
    }
    vocab.ignore_merges = model.value("ignore_merges", false);
    for (const auto& [text, id_json] : model.at("vocab").items()) {
        // get<int64_t>() of a float would cast it unchecked (undefined for 1e67).
        if (!id_json.is_number_integer()) throw Error(vocab.source, "model.vocab", "id of \"" + text + "\" is not an integer");
        const int64_t id = id_json.get<int64_t>();
        if (id < 0 || id > (1 << 24)) throw Error(vocab.source, "model.vocab", "id " + std::to_string(id) + " of \"" + text + "\"");
        if (size_t(id) >= vocab.token_text.size()) vocab.token_text.resize(id + 1);
        vocab.token_text[id] = text;
    }
}

void load_added_tokens_json(Vocabulary& vocab, const Json& added) {
    vocab.token_type.assign(vocab.token_text.size(), TokenType::Normal);
    for (const Json& t : added) {
        if (!t.at("id").is_number_integer()) throw Error(vocab.source, "added_tokens", "id is not an integer");
        const int64_t id = t.at("id").get<int64_t>();
        if (id < 0 || id > (1 << 24)) throw Error(vocab.source, "added_tokens", "id " + std::to_string(id));
        if (size_t(id) >= vocab.token_text.size()) {
            vocab.token_text.resize(id + 1);
            vocab.token_type.resize(id + 1, TokenType::Undefined);
        }
        vocab.token_text[id] = t.at("content").get<std::string>();
        vocab.token_type[id] = t.value("special", false) ? TokenType::Control : TokenType::UserDefined;
    }
}

void load_tokenizer_json(Vocabulary& vocab, const Json& tokenizer) {
    const Json normalizer = tokenizer.value("normalizer", Json());
    if (!normalizer.is_null()) {
        const std::string type = normalizer.is_object() ? normalizer.value("type", "?") : "?";
        if (type != "NFC") throw Error(vocab.source, "normalizer", "type \"" + type + "\" is not supported (NFC is)");
        vocab.nfc = true;
    }
    const Json& model = tokenizer.at("model");
    load_bpe_model_json(vocab, model);
    load_added_tokens_json(vocab, tokenizer.value("added_tokens", Json::array()));
    bool byte_level = false;
    add_pre_tokenizer_json(vocab, tokenizer.value("pre_tokenizer", Json()), byte_level);
    if (!byte_level && !is_byte_level_decoder(tokenizer.value("decoder", Json())))
        throw Error(vocab.source, "pre_tokenizer", "not a byte-level BPE (no ByteLevel pre-tokenizer or decoder)");
    index_vocabulary(vocab);
    add_merges(vocab, json_merges(model.at("merges"), vocab.source), "model.merges");
    const std::string unk = model.value("unk_token", Json()).is_string() ? model["unk_token"].get<std::string>() : "";
    vocab.unk_byte = unk.empty() ? -1 : vocab.find(unk);
}

// Whether the post-processor puts the BOS token first (Llama 3 keeps add_bos there).
bool post_processor_adds_bos(const Json& tokenizer, const std::string& bos_text) {
    const Json post = tokenizer.value("post_processor", Json());
    if (post.is_null() || bos_text.empty()) return false;
    const Json* template_processing = &post;
    if (post.value("type", "") == "Sequence") {
        template_processing = nullptr;
        for (const Json& p : post.at("processors"))
            if (p.value("type", "") == "TemplateProcessing") template_processing = &p;
    }
    if (!template_processing || template_processing->value("type", "") != "TemplateProcessing") return false;
    const Json single = template_processing->value("single", Json::array());
    return !single.empty() && single[0].contains("SpecialToken") &&
           single[0]["SpecialToken"].value("id", "") == bos_text;
}

// tokenizer_config.json (and special_tokens_map.json): BOS/EOS, add_bos, chat template.
void load_tokenizer_config(Vocabulary& vocab, const std::string& dir, const Json& tokenizer) {
    const std::string config_path = dir + "/tokenizer_config.json";
    const std::string map_path = dir + "/special_tokens_map.json";
    const Json config = file_exists(config_path) ? read_json(config_path) : Json::object();
    const Json special_map = file_exists(map_path) ? read_json(map_path) : Json::object();
    const auto token_of = [&](const std::string& key) {
        std::string text = special_token_text(config, key);
        if (text.empty()) text = special_token_text(special_map, key);
        if (text.empty()) return -1;
        const int32_t id = vocab.find(text);
        if (id < 0) throw Error(config_path, key, "\"" + text + "\" is not a token");
        return id;
    };
    vocab.bos = token_of("bos_token");
    vocab.eos = token_of("eos_token");
    const std::string bos_text = vocab.bos >= 0 ? vocab.token_text[vocab.bos] : "";
    const Json add_bos = config.value("add_bos_token", Json());
    vocab.add_bos = add_bos.is_boolean() ? add_bos.get<bool>() : post_processor_adds_bos(tokenizer, bos_text);

    const Json chat = config.value("chat_template", Json());
    if (chat.is_string()) {
        vocab.chat_template = chat.get<std::string>();
    } else if (chat.is_array()) { // named templates: use "default"
        for (const Json& t : chat)
            if (t.value("name", "") == "default") vocab.chat_template = t.value("template", "");
    } else if (file_exists(dir + "/chat_template.jinja")) {
        vocab.chat_template = read_file(dir + "/chat_template.jinja");
    }
}

//-----------------------------------------------------------------------------
// [SECTION] Chat formats
//-----------------------------------------------------------------------------

ChatFormat chat_format(const std::string& chat_template) {
    if (chat_template.find("<|im_start|>") != std::string::npos) return ChatFormat::ChatMl;
    if (chat_template.find("<|start_header_id|>") != std::string::npos) return ChatFormat::Llama3;
    return ChatFormat::None;
}

// SmolLM2's ChatML template inserts a system turn when the conversation has none; the
// text sits in a string literal after the test for a first system message.
std::string default_system_prompt(const std::string& chat_template) {
    const std::string test = "!= 'system'";
    const std::string open = "<|im_start|>system", close = "<|im_end|>";
    const size_t at = chat_template.find(test);
    if (at == std::string::npos) return "";
    const size_t begin = chat_template.find(open, at);
    const size_t end = begin == std::string::npos ? begin : chat_template.find(close, begin);
    if (end == std::string::npos) return "";
    std::string text = chat_template.substr(begin + open.size(), end - begin - open.size());
    if (text.compare(0, 2, "\\n") == 0) text = "\n" + text.substr(2); // escaped newline in the literal
    return text.empty() || text[0] != '\n' ? "" : text.substr(1);
}

std::string render_chatml(const std::vector<ChatMessage>& messages, const std::string& chat_template,
                          bool add_generation_prompt) {
    std::string out;
    const auto turn = [&](const std::string& role, const std::string& content) {
        out += "<|im_start|>" + role + "\n" + content + "<|im_end|>\n";
    };
    const std::string default_system = default_system_prompt(chat_template);
    if (!messages.empty() && messages[0].role != "system" && !default_system.empty()) turn("system", default_system);
    for (const ChatMessage& m : messages) turn(m.role, m.content);
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
    return out;
}

std::string trim(const std::string& s) {
    const size_t begin = s.find_first_not_of(" \t\r\n");
    if (begin == std::string::npos) return "";
    return s.substr(begin, s.find_last_not_of(" \t\r\n") - begin + 1);
}

// Llama 3 (3.0) format: BOS, then header/content/<|eot_id|> per message, contents trimmed.
std::string render_llama3(const std::vector<ChatMessage>& messages, const std::string& bos_text,
                          bool add_generation_prompt) {
    std::string out = bos_text;
    const auto header = [&](const std::string& role) {
        out += "<|start_header_id|>" + role + "<|end_header_id|>\n\n";
    };
    for (const ChatMessage& m : messages) {
        header(m.role);
        out += trim(m.content) + "<|eot_id|>";
    }
    if (add_generation_prompt) header("assistant");
    return out;
}

//-----------------------------------------------------------------------------
// [SECTION] Encoding
//-----------------------------------------------------------------------------

void Vocabulary::encode_word(std::string_view word, std::vector<int32_t>& out) const {
    if (cache.get(word, out)) return;
    if (ignore_merges) {
        const int32_t id = find(byte_level_text_of_bytes(word));
        if (id >= 0) { out.push_back(id); return; }
    }
    const size_t start = out.size();
    merger.encode(word, unk_byte, out);
    cache.put(word, out.data() + start, out.size() - start);
}

// Canonical composition (NFC) with utf8proc; text that is not valid UTF-8 stays as it is.
std::string nfc_normalized(std::string_view text) {
    utf8proc_uint8_t* mapped = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                            utf8proc_ssize_t(text.size()), &mapped,
                                            utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    std::string out = n < 0 ? std::string(text) : std::string(reinterpret_cast<char*>(mapped), size_t(n));
    std::free(mapped);
    return out;
}

void Vocabulary::encode_plain(std::string_view text, pcre2_match_data* match, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    std::string normalized;
    if (nfc) text = normalized = nfc_normalized(text);
    if (pre_tokenizer.empty()) { encode_word(text, out); return; }
    pre_tokenizer.split(text, match, [&](std::string_view word) { encode_word(word, out); });
}

} // namespace

//-----------------------------------------------------------------------------
// [SECTION] Public API
//-----------------------------------------------------------------------------

struct Tokenizer::Impl : Vocabulary {};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_gguf(const GgufFile& gguf) {
    auto impl = std::make_unique<Impl>();
    impl->source = gguf.path();
    const std::string model = gguf.get_string("tokenizer.ggml.model");
    if (model != "gpt2")
        throw Error(impl->source, "tokenizer.ggml.model",
                    "\"" + model + "\" is not supported: KVScope reads byte-level BPE (\"gpt2\") vocabularies only" +
                        (model == "llama" ? " (SentencePiece models are not handled yet)" : ""));
    load_gguf_vocabulary(*impl, gguf);
    const std::string pre = gguf.find("tokenizer.ggml.pre") ? gguf.get_string("tokenizer.ggml.pre") : "default";
    set_named_pre_tokenizer(*impl, pre, "tokenizer.ggml.pre");
    for (auto [key, id] : {std::pair{"tokenizer.ggml.bos_token_id", &impl->bos},
                           std::pair{"tokenizer.ggml.eos_token_id", &impl->eos}}) {
        *id = gguf_token_id(gguf, key);
        check_token_id(*impl, *id, key);
    }
    const std::string add_bos_key = "tokenizer.ggml.add_bos_token";
    impl->add_bos = gguf.find(add_bos_key) ? gguf.get_bool(add_bos_key) : impl->ignore_merges; // Llama 3 adds BOS
    for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
        const int32_t id = gguf_token_id(gguf, key);
        check_token_id(*impl, id, key);
        if (id >= 0) impl->end_of_generation.insert(id);
    }
    if (gguf.find("tokenizer.chat_template")) impl->chat_template = gguf.get_string("tokenizer.chat_template");
    find_end_of_generation(*impl);
    return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_hf_dir(const std::string& dir) {
    auto impl = std::make_unique<Impl>();
    impl->source = dir + "/tokenizer.json";
    const Json tokenizer = read_json(impl->source);
    try {
        load_tokenizer_json(*impl, tokenizer);
        load_tokenizer_config(*impl, dir, tokenizer);
    } catch (const Json::exception& e) { // a field of the wrong JSON type
        throw Error(impl->source, "json", e.what());
    }
    find_end_of_generation(*impl);
    return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special, bool add_bos) const {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 2);
    if (add_bos && impl_->bos >= 0) ids.push_back(impl_->bos);
    MatchData match(pcre2_match_data_create(1, nullptr));
    size_t pos = 0;
    while (pos < text.size()) {
        const SpecialMatcher::Hit hit = impl_->specials.find(text, pos, parse_special);
        const size_t end = hit.len ? hit.pos : text.size();
        impl_->encode_plain(text.substr(pos, end - pos), match.get(), ids);
        if (!hit.len) break;
        ids.push_back(hit.id);
        pos = hit.pos + hit.len;
    }
    return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
    std::string out;
    for (int32_t id : ids) {
        if (token_type(id) == TokenType::Control && skip_special) continue; // token_type checks the range
        out += impl_->token_bytes[id];
    }
    return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
    token_type(id); // range check
    return impl_->token_bytes[id];
}

int32_t Tokenizer::n_vocab() const { return int32_t(impl_->token_text.size()); }
int32_t Tokenizer::bos() const { return impl_->bos; }
int32_t Tokenizer::eos() const { return impl_->eos; }
bool Tokenizer::add_bos_default() const { return impl_->add_bos; }

bool Tokenizer::is_end_of_generation(int32_t id) const { return impl_->end_of_generation.count(id) > 0; }

TokenType Tokenizer::token_type(int32_t id) const {
    if (id < 0 || id >= n_vocab())
        throw Error(impl_->source, "token id", std::to_string(id) + " is outside the vocabulary of " +
                                                   std::to_string(n_vocab()));
    return impl_->token_type[id];
}

std::string Tokenizer::apply_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
    switch (chat_format(impl_->chat_template)) {
    case ChatFormat::ChatMl:
        return render_chatml(messages, impl_->chat_template, add_generation_prompt);
    case ChatFormat::Llama3:
        return render_llama3(messages, impl_->bos >= 0 ? impl_->token_text[impl_->bos] : "", add_generation_prompt);
    case ChatFormat::None:
        break;
    }
    throw Error(impl_->source, "chat template",
                impl_->chat_template.empty() ? "the model has none"
                                             : "not one KVScope knows (ChatML, Llama 3)");
}

} // namespace kvscope
