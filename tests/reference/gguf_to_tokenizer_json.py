#!/usr/bin/env python3
"""Write a Hugging Face tokenizer directory (tokenizer.json + tokenizer_config.json) from
the tokenizer metadata of a byte-level BPE ("gpt2") GGUF.

    gguf_to_tokenizer_json.py GGUF OUTDIR [--merges strings|pairs]

Needs only numpy and the PyPI `gguf` package, so the default tests can run it. The
output follows the schema the `tokenizers` library writes: a BPE model with vocab and
merges (as "a b" strings, or with --merges pairs as ["a", "b"] lists, the newer form),
the pre-tokenizer that matches GGUF's tokenizer.ggml.pre, a ByteLevel decoder, and the
control / user-defined tokens as added tokens. Output is deterministic.
"""

import argparse
import json
import os
import sys

import gguf

# GGUF tokenizer.ggml.token_type values.
CONTROL, USER_DEFINED = 3, 4

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def split(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


def pre_tokenizer(pre):
    """The pre_tokenizer tree for a tokenizer.ggml.pre name, and whether merges are skipped
    for pre-tokens that are tokens themselves (Llama 3's ignore_merges)."""
    if pre == "smollm":
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level(True)]}, False
    if pre in ("gpt2", "default"):
        return byte_level(True), False
    if pre in ("llama-bpe", "llama3", "llama-v3"):
        return {"type": "Sequence", "pretokenizers": [split(LLAMA3_PATTERN), byte_level(False)]}, True
    if pre == "qwen2":
        return {"type": "Sequence", "pretokenizers": [split(QWEN2_PATTERN), byte_level(False)]}, False
    sys.exit(f"gguf_to_tokenizer_json: tokenizer.ggml.pre {pre!r} is not supported")


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def build(reader, merges_format):
    model = field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        sys.exit(f"gguf_to_tokenizer_json: tokenizer.ggml.model {model!r} is not byte-level BPE")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    merges = field(reader, "tokenizer.ggml.merges")
    if merges_format == "pairs":
        merges = [m.split(" ", 1) for m in merges]
    pre, ignore_merges = pre_tokenizer(field(reader, "tokenizer.ggml.pre", "default"))
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == CONTROL}
             for i in range(len(tokens)) if types[i] in (CONTROL, USER_DEFINED)]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": ignore_merges, "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": merges},
    }
    return tokenizer, tokens


def build_config(reader, tokens):
    config = {"add_bos_token": bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
              "clean_up_tokenization_spaces": False,
              "tokenizer_class": "GPT2Tokenizer"}
    for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                      ("pad", "padding_token_id")):
        token_id = field(reader, "tokenizer.ggml." + key)
        if token_id is not None:
            config[name + "_token"] = tokens[int(token_id)]
    template = field(reader, "tokenizer.chat_template")
    if template is not None:
        config["chat_template"] = template
    return config


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf")
    parser.add_argument("outdir")
    parser.add_argument("--merges", choices=("strings", "pairs"), default="strings")
    args = parser.parse_args()
    reader = gguf.GGUFReader(args.gguf)
    tokenizer, tokens = build(reader, args.merges)
    os.makedirs(args.outdir, exist_ok=True)
    write_json(os.path.join(args.outdir, "tokenizer.json"), tokenizer)
    write_json(os.path.join(args.outdir, "tokenizer_config.json"), build_config(reader, tokens))


if __name__ == "__main__":
    main()
