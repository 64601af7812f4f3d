#!/usr/bin/env python3
"""The head-aware methods on CUDA against the same runs on the CPU.

    gpu_head_methods.py --kvscope build-gpu/app/kvscope [--work DIR]

Writes a random-initialized Llama (4 layers, 8 query and 2 KV heads, fp32 safetensors,
gpu_parity.py's byte-level tokenizer), then runs `kvscope compare` on the bundled natural
text with full, razor, duo, snapkv+headkv and cake at two budgets, once on the CPU and once
on CUDA, both fp32. The head profile is computed on each device (the probe suite through
the model) and stored in that device's sessions database. Prints both tables and, per
method and budget, the two devices' mean KL, top-1 agreement and KV bytes.

Exit status 1 when a run fails on either device, when KV bytes differ (the same budgets
must hold the same slots), or when a mean KL differs by more than 2% + 1e-4: the kernels
differ in the last bits, so near-tied scores may pick other tokens, but not many.
"""

import argparse
import csv
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_parity import COMMON, write_model  # noqa: E402
from transformers import LlamaConfig  # noqa: E402

METHODS = "full,razor,duo,snapkv+headkv,cake"


def run(kvscope, model, device, work):
    db, out = os.path.join(work, f"{device}.db"), os.path.join(work, f"{device}.csv")
    cmd = [kvscope, "compare", "--model", model, "--device", device, "--dtype", "f32", "--task", "text",
           "--length", "400", "--steps", "24", "--methods", METHODS, "--budgets", "48,96", "--db", db, "--csv", out]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(out) as f:
        return {(r["method"], r["budget"]): r for r in csv.DictReader(f)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kvscope", default="build-gpu/app/kvscope")
    ap.add_argument("--work", default="/tmp/kvscope_gpu_head_methods")
    args = ap.parse_args()
    model = os.path.join(args.work, "model")
    os.makedirs(model, exist_ok=True)
    config = LlamaConfig(num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                         **{**COMMON, "max_position_embeddings": 4096})
    write_model(config, model, seed=7)
    cpu, cuda = run(args.kvscope, model, "cpu", args.work), run(args.kvscope, model, "cuda", args.work)
    failed = []
    print(f"{'method':58} {'budget':>6} {'KL cpu':>9} {'KL cuda':>9} {'top1 cpu':>8} {'top1 cuda':>9} {'KV bytes equal':>14}")
    for key in sorted(cpu):
        a, b = cpu[key], cuda.get(key)
        if b is None:
            failed.append(f"{key}: no CUDA row")
            continue
        if a["failed"] != "0" or b["failed"] != "0":
            failed.append(f"{key}: failed runs, {a['failed']} on the CPU, {b['failed']} on CUDA")
        kl_a, kl_b = float(a["mean_kl"]), float(b["mean_kl"])
        same_bytes = a["kv_bytes"] == b["kv_bytes"]
        print(f"{key[0]:58} {key[1]:>6} {kl_a:9.4f} {kl_b:9.4f} {float(a['top1']):8.3f} {float(b['top1']):9.3f} "
              f"{str(same_bytes):>14}")
        if not same_bytes:
            failed.append(f"{key}: KV bytes {a['kv_bytes']} on the CPU, {b['kv_bytes']} on CUDA")
        if abs(kl_a - kl_b) > 0.02 * max(kl_a, kl_b) + 1e-4:
            failed.append(f"{key}: mean KL {kl_a:.5f} on the CPU, {kl_b:.5f} on CUDA")
    print("\n".join(failed) if failed else "CPU and CUDA agree", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
