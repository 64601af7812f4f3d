#!/usr/bin/env python3
"""Independent reference for KVScope's forward pass: a Llama forward written in NumPy.

It shares nothing with the C++ path: weights are dequantized by PyPI `gguf`, and RoPE is
applied the way llama.cpp lays out GGUF Llama weights (adjacent pairs rotated, on the
permuted q/k rows) instead of KVScope's un-permuted half-split layout.

    forward_reference.py MODEL.gguf OUTDIR IDS.npy [IDS.npy ...] [--greedy N]

For each IDS.npy (1-D int32 token ids) it writes OUTDIR/<stem>.positions.npy (int32: the
positions compared: every 64th and the last four), OUTDIR/<stem>.logits.npy (float32
[len(positions), n_vocab]) and, with --greedy N, OUTDIR/<stem>.greedy.npy (N ids).
"""
import argparse
import os

import gguf
import numpy as np


class Llama:
    def __init__(self, path):
        reader = gguf.GGUFReader(path)
        meta = {name: field.contents() for name, field in reader.fields.items()}
        arch = meta["general.architecture"]
        if arch != "llama":
            raise SystemExit(f"{path}: the reference handles llama only, not {arch}")
        self.n_layer = meta["llama.block_count"]
        self.n_head = meta["llama.attention.head_count"]
        self.n_head_kv = meta["llama.attention.head_count_kv"]
        self.n_embd = meta["llama.embedding_length"]
        self.head_dim = self.n_embd // self.n_head
        self.eps = meta["llama.attention.layer_norm_rms_epsilon"]
        theta = meta.get("llama.rope.freq_base", 10000.0)
        self.inv_freq = (1.0 / theta ** (np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim)).astype(np.float32)
        self.w = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32) for t in reader.tensors}
        self.output = self.w.get("output.weight", self.w["token_embd.weight"])

    def rms_norm(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def rope_pairs(self, x, positions):
        """x: [T, heads, head_dim]; rotates (x[2i], x[2i+1]) by position * inv_freq[i]."""
        angles = positions[:, None].astype(np.float32) * self.inv_freq[None, :]  # [T, head_dim/2]
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def step(self, ids, cache):
        """Runs ids after the cache's tokens; returns logits [len(ids), n_vocab]."""
        T, past = len(ids), cache["n"]
        positions = np.arange(past, past + T)
        x = self.w["token_embd.weight"][ids]
        group = self.n_head // self.n_head_kv
        for il in range(self.n_layer):
            w = lambda name: self.w[f"blk.{il}.{name}.weight"]
            h = self.rms_norm(x, w("attn_norm"))
            q = (h @ w("attn_q").T).reshape(T, self.n_head, self.head_dim)
            k = (h @ w("attn_k").T).reshape(T, self.n_head_kv, self.head_dim)
            v = (h @ w("attn_v").T).reshape(T, self.n_head_kv, self.head_dim)
            q, k = self.rope_pairs(q, positions), self.rope_pairs(k, positions)
            K = cache["k"][il] = np.concatenate([cache["k"][il], k]) if past else k
            V = cache["v"][il] = np.concatenate([cache["v"][il], v]) if past else v
            out = np.empty((T, self.n_head, self.head_dim), dtype=np.float32)
            causal = np.arange(past + T)[None, :] > positions[:, None]  # [T, keys]
            for head in range(self.n_head):
                kv = head // group
                scores = q[:, head, :] @ K[:, kv, :].T / np.sqrt(self.head_dim)
                scores[causal] = -np.inf
                probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
                probs /= probs.sum(axis=-1, keepdims=True)
                out[:, head, :] = probs @ V[:, kv, :]
            x = x + out.reshape(T, -1) @ w("attn_output").T
            h = self.rms_norm(x, w("ffn_norm"))
            gate, up = h @ w("ffn_gate").T, h @ w("ffn_up").T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w("ffn_down").T
        cache["n"] += T
        return self.rms_norm(x, self.w["output_norm.weight"]) @ self.output.T

    def new_cache(self):
        return {"n": 0, "k": [None] * self.n_layer, "v": [None] * self.n_layer}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("outdir")
    parser.add_argument("ids", nargs="+")
    parser.add_argument("--greedy", type=int, default=0)
    args = parser.parse_args()
    model = Llama(args.model)
    os.makedirs(args.outdir, exist_ok=True)
    for ids_path in args.ids:
        stem = os.path.join(args.outdir, os.path.basename(ids_path).removesuffix(".npy"))
        ids = np.load(ids_path).astype(np.int64)
        cache = model.new_cache()
        logits = model.step(ids, cache)
        positions = sorted(set(range(0, len(ids), 64)) | set(range(max(0, len(ids) - 4), len(ids))))
        np.save(stem + ".positions.npy", np.array(positions, dtype=np.int32))
        np.save(stem + ".logits.npy", logits[positions].astype(np.float32))
        if args.greedy:
            tokens = [int(np.argmax(logits[-1]))]
            while len(tokens) < args.greedy:
                tokens.append(int(np.argmax(model.step(np.array(tokens[-1:]), cache)[-1])))
            np.save(stem + ".greedy.npy", np.array(tokens, dtype=np.int32))
        print(f"{stem}: {len(ids)} tokens, {len(positions)} positions, greedy {args.greedy}")


if __name__ == "__main__":
    main()
