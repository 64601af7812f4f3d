// Byte-level BPE tokenizer (GPT-2 family: SmolLM2, Llama 3, Qwen2, ...), read from a
// Hugging Face tokenizer.json or from GGUF tokenizer metadata. Ids match the reference
// tokenizers (llama.cpp, Hugging Face tokenizers) exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvscope {

class GgufFile;

enum class TokenType : int32_t { // GGUF tokenizer.ggml.token_type values
    Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

struct ChatMessage {
    std::string role; // "system", "user", "assistant"
    std::string content;
};

class Tokenizer {
public:
    static Tokenizer from_gguf(const GgufFile& gguf);
    // `dir` holds tokenizer.json and optionally tokenizer_config.json (chat template,
    // add_bos_token) and special_tokens_map.json.
    static Tokenizer from_hf_dir(const std::string& dir);

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    // Text to ids. With parse_special, the text of control tokens ("<|im_start|>")
    // becomes that token; otherwise it is tokenized as plain text. The text of
    // user-defined tokens always becomes the token (as in llama.cpp and Hugging Face).
    // Adds BOS only when add_bos is true.
    std::vector<int32_t> encode(std::string_view text, bool parse_special = true,
                                bool add_bos = false) const;
    // Ids to UTF-8 bytes (control tokens are rendered as their text unless skip_special).
    std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
    // The bytes one token stands for (may be an incomplete UTF-8 sequence).
    std::string token_bytes(int32_t id) const;

    int32_t n_vocab() const;
    int32_t bos() const; // -1 when the model has none
    int32_t eos() const;
    bool add_bos_default() const; // what the model's metadata asks for
    bool is_end_of_generation(int32_t id) const; // EOS, EOT, <|im_end|>, ...
    TokenType token_type(int32_t id) const;

    // Renders messages with the model's chat format and, if add_generation_prompt, the
    // assistant header. Throws kvscope::Error when the model's template is not one
    // KVScope knows (ChatML, Llama 3).
    std::string apply_chat(const std::vector<ChatMessage>& messages,
                           bool add_generation_prompt = true) const;

private:
    struct Impl;
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

} // namespace kvscope
