#!/usr/bin/env python3
"""CPU speed of KVScope beside llama.cpp, in one run, on the same GGUF and thread count.

    .venv/bin/python bench/compare_llama_cpp.py [--model GGUF] [--kvscope build/kvscope]
        [--contexts 512,2048] [--decode 64] [--repeat 3] [--threads N]

Both engines get the same prompt ids (natural text tokenized by llama.cpp, repeated to
each context length) and decode greedily with the full KV cache. Prints prefill and
decode tokens/s of each and the ratio KVScope / llama.cpp. Needs `./setup.sh peers`.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
from llama_cpp import Llama

TEXT = ("The history of measurement is the history of agreement: a unit is only as useful as the "
        "number of people who share it. Markets, surveys and clocks all came to depend on it. ")


def default_model():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.environ.get("KVSCOPE_MODEL") or os.path.join(cache, "kvscope/models/SmolLM2-135M-Instruct.Q4_1.gguf")


def llama_cpp_speed(model, ids, context, decode, repeat, threads):
    llm = Llama(model_path=model, n_ctx=context + decode + 8, n_batch=512, n_threads=threads,
                n_threads_batch=threads, logits_all=False, verbose=False)
    prompt = [ids[i % len(ids)] for i in range(context)]
    n_vocab = llm.n_vocab()

    def greedy():  # argmax of the last evaluated token's logits (llama.cpp keeps only those)
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))

    prefill, dec = [], []
    for r in range(repeat + 1):  # the first round warms up and is not counted
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        token = greedy()
        mid = time.perf_counter()
        for _ in range(decode - 1):
            llm.eval([token])
            token = greedy()
        end = time.perf_counter()
        if r:
            prefill.append(context / (mid - start))
            dec.append((decode - 1) / (end - mid))
    return statistics.median(prefill), statistics.median(dec)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_model())
    parser.add_argument("--kvscope", default=os.path.join(os.path.dirname(__file__), "../build/kvscope"))
    parser.add_argument("--contexts", default="512,2048")
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]

    vocab = Llama(model_path=args.model, vocab_only=True, verbose=False)
    ids = vocab.tokenize(TEXT.encode(), add_bos=False, special=False)
    with tempfile.TemporaryDirectory() as tmp:
        ids_path = os.path.join(tmp, "ids.npy")
        np.save(ids_path, np.array(ids, dtype=np.int32))
        out = subprocess.run([args.kvscope, "bench", "--model", args.model, "--ids", ids_path, "--contexts",
                              args.contexts, "--decode", str(args.decode), "--repeat", str(args.repeat),
                              "--threads", str(args.threads), "--json"], check=True, capture_output=True, text=True)
    ours = {row["context"]: row for row in map(json.loads, out.stdout.splitlines())}

    print(f"model {os.path.basename(args.model)}, {args.threads} threads, decode {args.decode} tokens, "
          f"median of {args.repeat}")
    print(f"{'context':>8} {'engine':>10} {'prefill tok/s':>14} {'decode tok/s':>13}")
    for context in contexts:
        theirs = llama_cpp_speed(args.model, ids, context, args.decode, args.repeat, args.threads)
        mine = ours[context]["prefill_tokens_per_second"], ours[context]["decode_tokens_per_second"]
        print(f"{context:>8} {'kvscope':>10} {mine[0]:>14.1f} {mine[1]:>13.1f}")
        print(f"{context:>8} {'llama.cpp':>10} {theirs[0]:>14.1f} {theirs[1]:>13.1f}")
        print(f"{context:>8} {'ratio':>10} {mine[0] / theirs[0]:>14.2f} {mine[1] / theirs[1]:>13.2f}")


if __name__ == "__main__":
    main()
