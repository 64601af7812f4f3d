#!/usr/bin/env python3
"""Write a 2-layer Llama whose heads' roles are known by construction, as a Hugging Face
directory, for tests/test_head_roles.cpp:

    make_role_model.py OUTDIR

  layer 0, head 0   previous-token head: its query and key come from a constant residual
                    dimension, with the key rotated one position ahead in the 16
                    highest-frequency RoPE pairs, so q_t . k_j = s^2 sum_i cos((t-j-1) theta_i)
                    peaks at j = t - 1 only; it copies the previous token's identity into
                    residual dims 32..47
  layer 1, head 0   induction head: its query is the current token's identity, its key the
                    previous token's (dims 32..47), both in the 8 lowest-frequency RoPE pairs
                    (real and imaginary parts: 16 tokens), where rotation over a few hundred
                    positions is negligible; so token t attends to the position after the
                    earlier occurrence of the same token
  heads 1           diffuse: zero query and key (uniform attention), zero value

Tokens 0..15 carry an identity (one-hot in residual dims 0..15), the others all share dim
17, which no head reads; every token has a constant 1 in dim 16; the MLPs are zero. The vocabulary is byte-level BPE over the 256 bytes, no
merges. Needs numpy and safetensors only; deterministic.
"""

import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

N_EMBD, N_HEAD, HEAD_DIM, N_LAYER, N_FF, VOCAB = 128, 2, 64, 2, 32, 256
HALF = HEAD_DIM // 2
# identity dims 0..15, the constant dim, the one identity dim of all other tokens (no head
# reads it), previous-token dims 32..47
N_CONTENT, CONST, OTHER, PREV = 16, 16, 17, 32
THETA = 10000.0
PREV_SCALE = 12.0     # q, k size in the previous-token head: a softmax gap of ~20 nats
INDUCTION_SCALE = 2.5  # per-dimension weight of the induction head's query and key


def theta(i):
    return THETA ** (-2.0 * i / HEAD_DIM)


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def code_dims():
    """The 16 head dims of the 8 lowest-frequency RoPE pairs: real then imaginary parts."""
    pairs = range(HALF - 8, HALF)
    return [i for i in pairs] + [i + HALF for i in pairs]


def weights():
    # RMSNorm turns a residual of k ones into ones of sqrt(N_EMBD / k): 8 at layer 0 (token +
    # constant), about 6.5 at layer 1 (+ the previous token), which INDUCTION_SCALE assumes.
    norm0 = np.sqrt(N_EMBD / 2)
    t = {}
    embed = np.zeros((VOCAB, N_EMBD), np.float32)
    embed[:, CONST] = 1
    embed[np.arange(N_CONTENT), np.arange(N_CONTENT)] = 1
    embed[N_CONTENT:, OTHER] = 1  # every token has two ones, so RMSNorm scales all alike
    t["model.embed_tokens.weight"] = embed
    t["lm_head.weight"] = embed.copy()
    t["model.norm.weight"] = np.ones(N_EMBD, np.float32)
    for layer in range(N_LAYER):
        q = np.zeros((N_HEAD * HEAD_DIM, N_EMBD), np.float32)
        k = np.zeros_like(q)
        v = np.zeros_like(q)
        o = np.zeros((N_EMBD, N_HEAD * HEAD_DIM), np.float32)
        if layer == 0:  # head 0: previous token
            for i in range(16):
                q[i, CONST] = PREV_SCALE / norm0
                k[i, CONST] = PREV_SCALE * np.cos(theta(i)) / norm0
                k[i + HALF, CONST] = PREV_SCALE * np.sin(theta(i)) / norm0
            for c in range(N_CONTENT):
                v[c, c] = 1.0 / norm0  # the token's identity, as a one
                o[PREV + c, c] = 1.0
        else:  # head 0: induction
            for c, d in enumerate(code_dims()):
                q[d, c] = INDUCTION_SCALE
                k[d, PREV + c] = INDUCTION_SCALE
        prefix = f"model.layers.{layer}."
        t[prefix + "self_attn.q_proj.weight"] = q
        t[prefix + "self_attn.k_proj.weight"] = k
        t[prefix + "self_attn.v_proj.weight"] = v
        t[prefix + "self_attn.o_proj.weight"] = o
        t[prefix + "mlp.gate_proj.weight"] = np.zeros((N_FF, N_EMBD), np.float32)
        t[prefix + "mlp.up_proj.weight"] = np.zeros((N_FF, N_EMBD), np.float32)
        t[prefix + "mlp.down_proj.weight"] = np.zeros((N_EMBD, N_FF), np.float32)
        t[prefix + "input_layernorm.weight"] = np.ones(N_EMBD, np.float32)
        t[prefix + "post_attention_layernorm.weight"] = np.ones(N_EMBD, np.float32)
    return t


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    save_file(weights(), os.path.join(out, "model.safetensors"))
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": N_EMBD,
        "intermediate_size": N_FF, "num_hidden_layers": N_LAYER, "num_attention_heads": N_HEAD,
        "num_key_value_heads": N_HEAD, "head_dim": HEAD_DIM, "hidden_act": "silu", "attention_bias": False,
        "mlp_bias": False, "rms_norm_eps": 1e-6, "rope_theta": THETA, "rope_scaling": None,
        "max_position_embeddings": 1024, "vocab_size": VOCAB, "tie_word_embeddings": False,
        "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "float32"})
    alphabet = bytes_to_unicode()
    write_json(os.path.join(out, "tokenizer.json"), {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {alphabet[b]: b for b in range(256)}, "merges": []}})
    write_json(os.path.join(out, "tokenizer_config.json"), {"add_bos_token": False})


if __name__ == "__main__":
    main()
