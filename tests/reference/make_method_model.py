#!/usr/bin/env python3
"""Write the tiny random-init Llama the method-parity test runs (METHODS.md U4), as GGUF.

    make_method_model.py OUTDIR

Written into OUTDIR:

  method-model.gguf      llama, 2 layers, n_embd 64, 4 heads / 2 KV heads (head_dim 16),
                         n_ff 128, context 512, the byte-level BPE vocabulary of
                         make_tiny_models.py, all weights F32
  method-model-4l.gguf   the same with 4 layers, so that PyramidKV's floored step leaves
                         an excess to take back (with 2 layers the step is exact)

The q and k projections are scaled by QK_SCALE, which multiplies every attention logit by
QK_SCALE**2: attention is peaky instead of near-uniform, so the scores the methods rank
have clear gaps and float32 differences between NumPy and C++ do not reorder them.
Seeded and deterministic; needs numpy and the PyPI `gguf` package only.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tiny_models import llama_writer  # noqa: E402

N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_CTX = 64, 4, 2, 128, 512
HEAD_DIM = N_EMBD // N_HEAD
SEED = 20250314
QK_SCALE = 2.5


def weights(n_layer, n_vocab):
    """name -> float32 [out, in]; norms near 1, the rest N(0, 0.1), q and k times QK_SCALE."""
    rng = np.random.default_rng([SEED, n_layer])  # the two models share no weights

    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * 0.1 * scale).astype(np.float32)

    def norm():
        return (1.0 + rng.standard_normal(N_EMBD) * 0.1).astype(np.float32)

    kv_rows = N_HEAD_KV * HEAD_DIM
    w = {"token_embd.weight": normal(n_vocab, N_EMBD)}
    for il in range(n_layer):
        p = f"blk.{il}."
        w[p + "attn_norm.weight"] = norm()
        w[p + "attn_q.weight"] = normal(N_HEAD * HEAD_DIM, N_EMBD, scale=QK_SCALE)
        w[p + "attn_k.weight"] = normal(kv_rows, N_EMBD, scale=QK_SCALE)
        w[p + "attn_v.weight"] = normal(kv_rows, N_EMBD)
        w[p + "attn_output.weight"] = normal(N_EMBD, N_HEAD * HEAD_DIM)
        w[p + "ffn_norm.weight"] = norm()
        w[p + "ffn_gate.weight"] = normal(N_FF, N_EMBD)
        w[p + "ffn_up.weight"] = normal(N_FF, N_EMBD)
        w[p + "ffn_down.weight"] = normal(N_EMBD, N_FF)
    w["output_norm.weight"] = norm()
    w["output.weight"] = normal(n_vocab, N_EMBD)
    return w


def write_model(path, n_layer):
    writer, n_tokens = llama_writer(path, f"method-parity-llama-{n_layer}l", n_layer, N_CTX, N_EMBD, N_FF, N_HEAD,
                                    N_HEAD_KV)
    for name, w in weights(n_layer, n_tokens).items():
        writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    write_model(os.path.join(out, "method-model.gguf"), 2)
    write_model(os.path.join(out, "method-model-4l.gguf"), 4)
    print(f"{out}: method-parity models written")


if __name__ == "__main__":
    main()
