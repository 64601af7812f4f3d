#!/usr/bin/env python3
"""Write the committed seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/).

    make_seeds.py            (from the repository root, with the project's .venv python)

Deterministic. Needs numpy, the PyPI `gguf` and `safetensors` packages
(tests/requirements.txt), tests/reference/make_tiny_models.py's vocabulary, and the
default model for the first 4 KiB of its GGUF header. Seeds stay small (a few KiB):
libFuzzer mutates small inputs far faster. Files written by hand (run specs, session
exports, crash regressions) live beside these and are left alone.
"""

import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import save

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import make_tiny_models as tiny  # noqa: E402  (vocabulary(), CHATML_TEMPLATE)


def out(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def default_model_path():
    env = dict(line.split("=", 1) for line in open(os.path.join(ROOT, "assets", "default_model.env"))
               if "=" in line and not line.startswith("#"))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "kvscope", "models", env["MODEL_FILE"].strip())


# ---- GGUF -----------------------------------------------------------------------------

# (type, ne0): one row of each type the reader knows, K-quants need 256 per row.
TENSOR_TYPES = [(Q.F32, 8), (Q.F16, 8), (Q.BF16, 8), (Q.Q8_0, 32), (Q.Q4_0, 32), (Q.Q4_1, 32),
                (Q.Q4_K, 256), (Q.Q5_K, 256), (Q.Q6_K, 256)]


def gguf_bytes(path, arch="llama", tokenizer=True, tensors=TENSOR_TYPES, small_vocab=True, alignment=None):
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(path, arch)
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_name("fuzz seed")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    if tokenizer:
        tokens, types, merges, bos, eos = tiny.vocabulary()
        if small_vocab:  # the byte alphabet, a handful of merges and the control tokens
            keep = 256 + 6
            merges = merges[:6]
            tokens = tokens[:keep] + tokens[-3:]
            types = types[:keep] + types[-3:]
            bos, eos = len(tokens) - 3, len(tokens) - 1
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(bos)
        w.add_eos_token_id(eos)
        w.add_chat_template(tiny.CHATML_TEMPLATE)
    for i, (qtype, ne0) in enumerate(tensors):
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        n_bytes = ne0 // block_elems * block_bytes
        raw = rng.integers(0, 256, size=n_bytes, dtype=np.uint8)
        if qtype == Q.F32:
            raw = rng.standard_normal(ne0).astype(np.float32)
            w.add_tensor(f"t{i}.{qtype.name}", raw)
        else:
            w.add_tensor(f"t{i}.{qtype.name}", raw, raw_shape=(1, n_bytes), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path, "rb") as f:
        return f.read()


def gguf_seeds(tmp):
    path = os.path.join(tmp, "seed.gguf")
    out("fuzz_gguf", "llama_every_type.gguf", gguf_bytes(path))
    out("fuzz_gguf", "qwen2_align64.gguf", gguf_bytes(path, arch="qwen2", alignment=64,
                                                     tensors=[(Q.F16, 16), (Q.Q8_0, 64)]))
    out("fuzz_gguf", "no_tokenizer.gguf", gguf_bytes(path, tokenizer=False))
    v3 = gguf_bytes(path, tensors=[(Q.F32, 4)])
    out("fuzz_gguf", "llama_v2.gguf", v3[:4] + struct.pack("<I", 2) + v3[8:])
    # The default model's header: version, counts and the first metadata keys; it ends
    # inside the vocabulary array (the "first kilobytes of the default model").
    with open(default_model_path(), "rb") as f:
        out("fuzz_gguf", "smollm2_first_4k.gguf", f.read(4096))


# ---- safetensors ----------------------------------------------------------------------

def safetensors_seeds():
    rng = np.random.default_rng(11)
    out("fuzz_safetensors", "dtypes.safetensors", save({
        "f32": rng.standard_normal((2, 3)).astype(np.float32),
        "f16": rng.standard_normal((4,)).astype(np.float16),
        "f64": rng.standard_normal((1, 2)).astype(np.float64),
        "i64": np.arange(3, dtype=np.int64), "i32": np.arange(2, dtype=np.int32),
        "i16": np.arange(2, dtype=np.int16), "i8": np.arange(3, dtype=np.int8),
        "u8": np.arange(5, dtype=np.uint8), "bool": np.array([True, False]),
    }, metadata={"format": "pt", "note": "fuzz seed"}))
    out("fuzz_safetensors", "empty_and_scalar.safetensors", save({
        "empty": np.zeros((0, 4), dtype=np.float32), "scalar": np.array(1.5, dtype=np.float32)}))
    # BF16 (numpy has none): written by hand, with the header unpadded.
    header = json.dumps({"bf16": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
                         "__metadata__": {"a": "b"}}).encode()
    out("fuzz_safetensors", "bf16_unpadded.safetensors",
        struct.pack("<Q", len(header)) + header + bytes(range(8)))
    out("fuzz_safetensors", "no_tensors.safetensors", struct.pack("<Q", 2) + b"{}")


# ---- config.json and tokenizer.json -----------------------------------------------------

def config_seeds():
    base = json.load(open(os.path.join(ROOT, "tests", "fuzz", "corpus", "fuzz_config_json", "llama.json")))
    variants = {
        "llama3_rope.json": {**base, "rope_theta": 500000.0, "rope_scaling": {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}},
        "qwen2.json": {**base, "model_type": "qwen2", "use_sliding_window": False},
        "mistral.json": {**base, "model_type": "mistral", "sliding_window": 4096},
        "linear_rope_params.json": {**base, "rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                                "rope_theta": 10000.0}},
    }
    for name, config in variants.items():
        out("fuzz_config_json", name, json.dumps(config, indent=1))


def tokenizer_seeds():
    tokens, types, merges, bos, eos = tiny.vocabulary()
    keep = 256 + 8
    vocab = {t: i for i, t in enumerate(tokens[:keep])}
    merges = merges[:8]
    added = [{"id": keep + i, "content": t, "special": True} for i, t in enumerate(tiny.CONTROL_TOKENS)]
    doc = {"version": "1.0", "added_tokens": added, "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
           "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
    config = {"bos_token": "<|endoftext|>", "eos_token": {"content": "<|im_end|>"}, "add_bos_token": False,
              "chat_template": tiny.CHATML_TEMPLATE}
    marker = "\n#tokenizer_config.json\n"
    out("fuzz_tokenizer_json", "string_merges.json", json.dumps(doc, ensure_ascii=False) + marker + json.dumps(config))
    pairs = dict(doc, model=dict(doc["model"], merges=[m.split(" ") for m in merges], ignore_merges=True))
    out("fuzz_tokenizer_json", "pair_merges_nfc.json",
        json.dumps(dict(pairs, normalizer={"type": "NFC"}, pre_tokenizer={"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}), ensure_ascii=False))


def main():
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        gguf_seeds(tmp)
    safetensors_seeds()
    config_seeds()
    tokenizer_seeds()


if __name__ == "__main__":
    main()
