#!/usr/bin/env python3
"""GPU parity of kvscope's forward pass against Hugging Face transformers.

    gpu_parity.py --kvscope build-gpu/app/kvscope [--device cuda] [--work DIR]

For three random-initialized configurations (Llama with llama3 RoPE scaling and GQA,
Qwen2 with q/k/v biases and tied embeddings, Mistral with a sliding window shorter than
the prompt) it writes a Hugging Face directory (fp32 safetensors, a byte-level BPE
tokenizer.json), runs `kvscope logits` on a random prompt in fp32 and bf16, runs
transformers on the same ids in the same dtypes, and prints per config x dtype: the max
and mean absolute logit difference, the largest reference logit, and how many of the 64
greedy tokens agree before the first difference.

Exit status 1 when any fp32 max abs difference exceeds 1e-3 or any fp32 greedy
continuation differs. bf16 is reported, not judged: beside ours-vs-HF it shows how far
each side's bf16 logits are from HF's fp32 ones, which is the scale to judge it by.
The table is also written to $OUT/gpu_parity.json when OUT is set.
"""

import argparse
import inspect
import json
import os
import subprocess
import sys
import warnings

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # keep the log to the figures
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()
warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames between 5.x

FP32_TOL = 1e-3
VOCAB = 512
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
COMMON = dict(vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
              num_attention_heads=8, max_position_embeddings=256, rms_norm_eps=1e-5,
              initializer_range=0.08, bos_token_id=VOCAB - 3, eos_token_id=VOCAB - 3)


def configs():
    llama3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    return {
        # original context 64 < prompt: all three llama3 frequency bands matter.
        "llama": LlamaConfig(num_key_value_heads=2, rope_parameters=llama3, **COMMON),
        "qwen2": Qwen2Config(num_key_value_heads=4, tie_word_embeddings=True, rope_parameters={
            "rope_type": "default", "rope_theta": 1000000.0}, **COMMON),
        "mistral": MistralConfig(num_key_value_heads=2, sliding_window=32, rope_parameters={
            "rope_type": "default", "rope_theta": 10000.0}, **COMMON),
    }


# ---- the model directory ---------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2's byte -> printable character table (the ByteLevel alphabet), by byte value."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_tokenizer(path):
    """Byte-level BPE: 256 byte tokens, merges of letter pairs up to VOCAB - 3, 3 specials."""
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    merges = []
    for a in letters:
        for b in letters:
            if len(vocab) == VOCAB - len(SPECIALS):
                break
            merges.append((a, b))
            vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True) for s in SPECIALS])
    assert tok.get_vocab_size() == VOCAB and tok.token_to_id(SPECIALS[0]) == VOCAB - 3
    text = "the rain in spain"
    assert tok.decode(tok.encode(text).ids) == text
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIALS[0],
                   "eos_token": SPECIALS[0], "add_bos_token": False, "model_max_length": 256}, f, indent=1)


def write_model(config, path, seed):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # HF initializes norms to 1 and biases to 0: randomize them so that they are tested.
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
    kwargs = {"safe_serialization": True} if "safe_serialization" in inspect.signature(
        model.save_pretrained).parameters else {}  # transformers 5 writes safetensors only
    model.save_pretrained(path, **kwargs)
    assert os.path.exists(os.path.join(path, "model.safetensors")), "expected one model.safetensors"
    write_tokenizer(path)


# ---- the two sides ---------------------------------------------------------------------

def run_ours(kvscope, path, ids_file, device, dtype, n_greedy, work):
    out, greedy_out = (os.path.join(work, f"ours_{dtype}{s}.npy") for s in ("", "_greedy"))
    cmd = [kvscope, "logits", "--model", path, "--ids", ids_file, "--out", out, "--greedy", str(n_greedy),
           "--greedy-out", greedy_out, "--device", device, "--dtype", dtype]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stderr}")
    return np.load(out), np.load(greedy_out)


@torch.no_grad()
def run_reference(path, ids, device, dtype, n_greedy, **overrides):
    # eager attention: the plain softmax(QK^T)V with the sliding window applied as a mask.
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager",
                                                 **overrides).to(device).eval()
    x = torch.tensor(ids, dtype=torch.long, device=device)[None]
    logits = model(input_ids=x, use_cache=False).logits[0].float().cpu().numpy()
    # Greedy through the cache, never stopping at EOS.
    out = model(input_ids=x, use_cache=True)
    tokens = []
    for _ in range(n_greedy):
        tok = out.logits[0, -1].argmax()
        tokens.append(int(tok))
        out = model(input_ids=tok.view(1, 1), past_key_values=out.past_key_values, use_cache=True)
    return logits, np.array(tokens, dtype=np.int32)


def prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kvscope", default="build-gpu/app/kvscope")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--work", default="/tmp/kvscope_gpu_parity")
    ap.add_argument("--prompt-len", type=int, default=96)
    ap.add_argument("--greedy", type=int, default=64)
    ap.add_argument("--only", nargs="*", help="run only these configs")
    args = ap.parse_args()
    torch.set_float32_matmul_precision("highest")  # no TF32 in the fp32 reference
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"device: {dev_name}; torch {torch.__version__}; transformers "
          f"{__import__('transformers').__version__}", flush=True)

    rows, failed = [], []
    for seed, (name, config) in enumerate(configs().items()):
        if args.only and name not in args.only:
            continue
        work = os.path.join(args.work, name)
        path = os.path.join(work, "model")
        os.makedirs(path, exist_ok=True)
        write_model(config, path, seed=100 + seed)
        ids = np.random.default_rng(200 + seed).integers(0, VOCAB, size=args.prompt_len, dtype=np.int32)
        ids_file = os.path.join(work, "ids.npy")
        np.save(ids_file, ids)

        ref32, ref32_greedy = run_reference(path, ids, args.device, torch.float32, args.greedy)
        if name == "mistral":  # the window must change the reference, or the test is vacuous
            nowin, _ = run_reference(path, ids, args.device, torch.float32, 0, sliding_window=None)
            w = config.sliding_window
            print(f"mistral: disabling the {w}-token window changes HF's logits after position {w} "
                  f"by up to {np.abs(nowin[w:] - ref32[w:]).max():.3g} (before it: "
                  f"{np.abs(nowin[:w] - ref32[:w]).max():.3g})", flush=True)
        for dtype, tdtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
            ours, ours_greedy = run_ours(args.kvscope, path, ids_file, args.device, dtype, args.greedy, work)
            if dtype == "f32":
                ref, ref_greedy = ref32, ref32_greedy
            else:
                ref, ref_greedy = run_reference(path, ids, args.device, tdtype, args.greedy)
            assert ours.shape == ref.shape, (ours.shape, ref.shape)
            diff = np.abs(ours - ref)
            row = {"config": name, "dtype": dtype, "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                   "max_abs_ref": float(np.abs(ref).max()),
                   "top1_agree": float((ours.argmax(1) == ref.argmax(1)).mean()),
                   "greedy_prefix": prefix(ours_greedy, ref_greedy), "greedy_n": args.greedy,
                   "hf_greedy_vs_hf32": prefix(ref_greedy, ref32_greedy),
                   "ours_vs_hf32": float(np.abs(ours - ref32).max()), "hf_vs_hf32": float(np.abs(ref - ref32).max()),
                   "worst_position": int(diff.max(axis=1).argmax())}
            rows.append(row)
            if dtype == "f32" and (row["max_abs"] > FP32_TOL or row["greedy_prefix"] != args.greedy):
                failed.append(f"{name} f32")
            print(json.dumps(row), flush=True)

    head = f"{'config':8} {'dtype':5} {'max abs':>10} {'mean abs':>10} {'max|ref|':>9} {'top1':>6} {'greedy':>7}" \
           f" {'ours-hf32':>10} {'hf-hf32':>10} {'hf greedy':>9}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['config']:8} {r['dtype']:5} {r['max_abs']:10.3g} {r['mean_abs']:10.3g} {r['max_abs_ref']:9.3g}"
              f" {r['top1_agree']:6.3f} {r['greedy_prefix']:>3}/{r['greedy_n']:<3} {r['ours_vs_hf32']:10.3g}"
              f" {r['hf_vs_hf32']:10.3g} {r['hf_greedy_vs_hf32']:>5}/{r['greedy_n']:<3}")
    print("top1: share of prompt positions whose argmax agrees; greedy: tokens equal before the first "
          "difference;\nours-hf32 / hf-hf32: max abs distance of ours / HF's logits in that dtype from HF's "
          "fp32 logits;\nhf greedy: HF's greedy tokens in that dtype that equal its fp32 ones (the scale for ours)")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_parity.json"), "w") as f:
            json.dump({"device": dev_name, "torch": torch.__version__, "rows": rows, "failed": failed}, f, indent=1)
    if failed:
        print(f"FAILED (fp32 max abs > {FP32_TOL:g} or greedy differs): {', '.join(failed)}")
        return 1
    print(f"OK: fp32 max abs <= {FP32_TOL:g} and fp32 greedy identical for every config")
    return 0


if __name__ == "__main__":
    sys.exit(main())
