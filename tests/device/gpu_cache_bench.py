#!/usr/bin/env python3
"""Policy overhead on the GPU: decode speed of each cache method at a budget beside the full
cache, in one kvscope process, and Hugging Face transformers' decode speed on the same model
as the peer.

    gpu_cache_bench.py --kvscope build-gpu/kvscope [--contexts 2048,8192] [--decode 128]

The model has SmolLM2-135M's shape (30 layers, 9 query / 3 KV heads of 64, vocabulary
49152) with random weights: the real GGUF does not fit the lent machine's upload limit, and
speed does not depend on the weights' values (which tokens a method keeps does, so fidelity
is measured on the CPU with the real model). Prints one table and writes
$OUT/gpu_cache_bench.json when OUT is set.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

sys.path.insert(0, os.path.dirname(__file__))
import gpu_parity  # noqa: E402  (the model writer: random weights, byte-level tokenizer)

METHODS = "window,streaming_llm,h2o,snapkv,tova,key_norm,random,snapkv+pyramid,snapkv+adakv"


def smollm2_shape(max_positions):
    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=max_positions,
                       rms_norm_eps=1e-5, tie_word_embeddings=True, initializer_range=0.02,
                       rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                       bos_token_id=gpu_parity.VOCAB - 3, eos_token_id=gpu_parity.VOCAB - 3)


@torch.no_grad()
def hf_decode(path, context, n_decode, repeat):
    """Median decode tokens/s of transformers (bf16, SDPA, its default dynamic cache)."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, gpu_parity.VOCAB, size=context)).cuda()[None]
    speeds = []
    for r in range(repeat + 1):  # the first round warms up
        out = model(input_ids=ids, use_cache=True)
        tok = out.logits[0, -1].argmax().view(1, 1)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n_decode - 1):
            out = model(input_ids=tok, past_key_values=out.past_key_values, use_cache=True)
            tok = out.logits[0, -1].argmax().view(1, 1)
        torch.cuda.synchronize()
        if r:
            speeds.append((n_decode - 1) / (time.perf_counter() - start))
    del model
    torch.cuda.empty_cache()
    return float(np.median(speeds))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kvscope", default="build-gpu/kvscope")
    ap.add_argument("--contexts", default="2048,8192")
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--budget", default="50%")
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--work", default="/tmp/kvscope_gpu_cache_bench")
    args = ap.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}", flush=True)

    path = os.path.join(args.work, "model")
    os.makedirs(path, exist_ok=True)
    gpu_parity.write_model(smollm2_shape(max(contexts) + args.decode + 64), path, seed=7)
    ids = np.random.default_rng(0).integers(0, gpu_parity.VOCAB, size=max(contexts), dtype=np.int32)
    ids_file = os.path.join(args.work, "ids.npy")
    np.save(ids_file, ids)

    cmd = [args.kvscope, "bench", "--model", path, "--device", "cuda", "--dtype", "bf16", "--ids", ids_file,
           "-c", args.contexts, "-n", str(args.decode), "-r", str(args.repeat), "--methods", args.methods,
           "--budget", args.budget, "--json"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stderr}")
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    peer = {c: hf_decode(path, c, args.decode, args.repeat) for c in contexts}

    print(f"\n{'context':>8} {'method':58} {'decode tok/s':>13} {'vs full':>8} {'KV %':>7} {'policy':>7} {'vs HF':>7}")
    for r in rows:
        c = r["context"]
        print(f"{c:>8} {r['method']:58} {r['decode_tokens_per_second']:>13.1f} {100 * r['decode_vs_full']:>7.1f}% "
              f"{100 * r['kv_bytes'] / r['full_kv_bytes']:>6.1f}% {100 * r['policy_share']:>6.2f}% "
              f"{r['decode_tokens_per_second'] / peer[c]:>7.2f}")
    for c in contexts:
        print(f"HF transformers (bf16, SDPA) at {c}: {peer[c]:.1f} decode tok/s")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_cache_bench.json"), "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "kvscope": rows, "hf_decode_tokens_per_second": peer},
                      f, indent=1)


if __name__ == "__main__":
    main()
