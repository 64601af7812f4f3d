#!/usr/bin/env python3
"""Independent reference for the eviction methods' decisions (METHODS.md U4): which positions
each (layer, KV head) keeps, written from the formulas of METHODS.md §0 and §2.1 over a
NumPy Llama forward, never from the C++ plugins.

    methods_reference.py MODEL.gguf OUT.json --ids ID... --tokens ID... --case SPEC@B [--case ...]

--ids is the prompt; --tokens the reference continuation, one per step (step 0 is the
prefill, step k feeds tokens[k-1]: the engine's teacher-forced lane). A case is a run spec
and a budget in slots per (layer, KV head), e.g. "h2o@16", "snapkv(window=8)+pyramid(beta=20)@24".
Methods: streaming_llm(sinks, every), h2o(recent), snapkv(window, kernel, max_pool),
tova(every), pyramid(beta) (with snapkv).

The forward runs in float64 on the model's weights and attends, in every layer and KV head,
only to the keys the method has kept so far (at their original RoPE positions), so the
attention of decode steps is over survivors. OUT.json holds:

  greedy     the full-cache greedy continuation (len(tokens) ids), to check against --tokens
  cases[]    name, spec, budget, layer_budgets (the budget each layer acted with at step 0),
             decisions[] {step, layer, head, kept[], evicted[]} for each (layer, KV head)
             that lost positions at a step (kept: every position it holds afterwards), and
             margin: the smallest relative gap between the weakest kept and the strongest
             evicted score over the case's ranked decisions (null when nothing is ranked)
"""
import argparse
import json
import math
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forward_reference import Llama  # noqa: E402  (GGUF loading, RMSNorm, RoPE on GGUF rows)

# Each method's parameters and their defaults (METHODS.md cards).
DEFAULTS = {
    "streaming_llm": {"sinks": 4, "every": 1},
    "h2o": {"recent": 0.5},
    "snapkv": {"window": 32, "kernel": 5, "max_pool": 0},
    "tova": {"every": 1},
    "pyramid": {"beta": 20.0},
}


def parse_spec(spec):
    """"a(x=1)+b" -> {"a": {...defaults, x: 1.0}, "b": {...}}."""
    methods = {}
    for part in spec.split("+"):
        m = re.fullmatch(r"\s*(\w+)\s*(?:\((.*)\))?\s*", part)
        if not m or m.group(1) not in DEFAULTS:
            raise SystemExit(f"case {spec!r}: cannot read {part!r}")
        params = dict(DEFAULTS[m.group(1)])
        for arg in filter(None, (m.group(2) or "").split(",")):
            key, value = (s.strip() for s in arg.split("="))
            if key not in params:
                raise SystemExit(f"case {spec!r}: {m.group(1)} has no parameter {key}")
            params[key] = float(value)
        methods[m.group(1)] = params
    return methods


# ---------------------------------------------------------------- forward over kept keys

class PrunedForward:
    """A Llama forward whose cache can lose keys: alive[l][g, j] says whether KV head g of
    layer l still holds position j. Keys keep the rotation of their original position."""

    def __init__(self, model, n_max):
        self.m = model
        self.w = {name: t.astype(np.float64) for name, t in model.w.items()}
        self.out_w = model.output.astype(np.float64)
        L, Hk, d = model.n_layer, model.n_head_kv, model.head_dim
        self.K = [np.zeros((n_max, Hk, d)) for _ in range(L)]
        self.V = [np.zeros((n_max, Hk, d)) for _ in range(L)]
        self.alive = [np.zeros((Hk, n_max), dtype=bool) for _ in range(L)]
        self.n = 0

    def step(self, ids):
        """Runs ids after the cache; returns (last logits, per layer probs [H, T, n])."""
        m, T, past = self.m, len(ids), self.n
        positions = np.arange(past, past + T)
        N, G, d = past + T, m.n_head // m.n_head_kv, m.head_dim
        x = self.w["token_embd.weight"][np.asarray(ids)]
        probs_per_layer = []
        for il in range(m.n_layer):
            w = lambda name: self.w[f"blk.{il}.{name}.weight"]  # noqa: E731
            h = m.rms_norm(x, w("attn_norm"))
            q = (h @ w("attn_q").T).reshape(T, m.n_head, d)
            k = (h @ w("attn_k").T).reshape(T, m.n_head_kv, d)
            v = (h @ w("attn_v").T).reshape(T, m.n_head_kv, d)
            q, k = m.rope_pairs(q, positions), m.rope_pairs(k, positions)
            self.K[il][past:N], self.V[il][past:N] = k, v
            self.alive[il][:, past:N] = True
            causal = np.arange(N)[None, :] <= positions[:, None]  # [T, N]
            probs = np.zeros((m.n_head, T, N))
            out = np.empty((T, m.n_head, d))
            for head in range(m.n_head):
                g = head // G
                visible = causal & self.alive[il][g, :N][None, :]
                scores = np.where(visible, q[:, head, :] @ self.K[il][:N, g, :].T / math.sqrt(d), -np.inf)
                p = np.exp(scores - scores.max(axis=-1, keepdims=True))
                p /= p.sum(axis=-1, keepdims=True)
                probs[head] = p
                out[:, head, :] = p @ self.V[il][:N, g, :]
            x = x + out.reshape(T, -1) @ w("attn_output").T
            h = m.rms_norm(x, w("ffn_norm"))
            gate, up = h @ w("ffn_gate").T, h @ w("ffn_up").T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w("ffn_down").T
            probs_per_layer.append(probs)
        self.n = N
        logits = m.rms_norm(x[-1:], self.w["output_norm.weight"]) @ self.out_w.T
        return logits[0], probs_per_layer

    def held(self, l, g):
        return [int(j) for j in np.flatnonzero(self.alive[l][g, :self.n])]


# ---------------------------------------------------------------- selection (METHODS.md §0)

def top(candidates, score, k):
    """The k largest scores; ties -> larger j (newer)."""
    return sorted(candidates, key=lambda j: (score[j], j), reverse=True)[:max(k, 0)]


def argmin(candidates, score):
    """The smallest score; ties -> the older j loses (the newer one is kept)."""
    return min(candidates, key=lambda j: (score[j], -j))


def gap(kept, evicted, score):
    """Relative gap between the weakest kept and the strongest evicted score."""
    if not kept or not evicted:
        return None
    lo, hi = min(score[j] for j in kept), max(score[j] for j in evicted)
    return float((lo - hi) / max(abs(lo), abs(hi), 1e-300))


def pool(s, kernel, use_max):
    """pool1d along j, stride 1, padding kernel//2: zeros counted in the average
    (count_include_pad), -inf for the max."""
    pad = kernel // 2
    padded = np.concatenate([np.full(pad, -np.inf if use_max else 0.0), s, np.full(pad, -np.inf if use_max else 0.0)])
    windows = np.stack([padded[i:i + len(s)] for i in range(kernel)])
    return windows.max(axis=0) if use_max else windows.sum(axis=0) / kernel


# ---------------------------------------------------------------- PyramidKV budgets

def pyramid_budgets(L, B, w, n, beta):
    """METHODS.md PyramidKV: B̄ = B - w, kmin = floor(B̄/beta), kmax = 2B̄ - kmin (at most
    n - w, then kmin = 2B̄ - kmax), step = floor((kmax - kmin)/(L - 1)), B_l = kmax - l*step + w.
    [assume] of the plugin's help: what flooring the step leaves above L*B is taken back one
    slot at a time from the shallowest layers, in rounds, a layer giving only while it stays
    >= w and >= the next layer; B <= w (or one layer, or n <= B) gives uniform budgets."""
    avg = B - w
    if L < 2 or avg <= 0 or n <= B:
        return [B] * L
    kmin = math.floor(avg / beta)
    kmax = 2 * avg - kmin
    if kmax >= n - w:
        kmax = n - w
        kmin = 2 * avg - kmax
    step = (kmax - kmin) // (L - 1)
    budgets = [kmax - l * step + w for l in range(L)]
    excess = sum(budgets) - L * B
    while excess > 0:
        gave = False
        for l in range(L):
            if excess == 0:
                break
            after = budgets[l] - 1
            if after >= w and (l == L - 1 or after >= budgets[l + 1]):
                budgets[l] = after
                excess -= 1
                gave = True
        assert gave, "pyramid: no layer can give a slot back"
    return budgets


# ---------------------------------------------------------------- one case

def acts_at(step, every):
    return step == 0 or (every > 0 and step % every == 0)


def run_case(model, spec, B, ids, tokens):
    methods = parse_spec(spec)
    L, H, Hk = model.n_layer, model.n_head, model.n_head_kv
    G = H // Hk
    np_ = len(ids)
    fw = PrunedForward(model, np_ + len(tokens))
    decisions, margins = [], []
    layer_budgets = [B] * L
    acc = [np.zeros((Hk, np_ + len(tokens))) for _ in range(L)]  # H2O state

    def record(step, l, g, before, kept):
        kept = sorted(kept)
        assert set(kept) <= set(before), (spec, step, l, g)
        evicted = sorted(set(before) - set(kept))
        fw.alive[l][g, :] = False
        fw.alive[l][g, kept] = True
        if evicted:
            decisions.append({"step": step, "layer": l, "head": g, "kept": kept, "evicted": evicted})

    for step in range(len(tokens)):
        _, probs = fw.step(ids if step == 0 else [tokens[step - 1]])
        n = fw.n
        if "streaming_llm" in methods:
            p = methods["streaming_llm"]
            s = int(p["sinks"])
            if acts_at(step, int(p["every"])):
                for l in range(L):
                    for g in range(Hk):
                        before = fw.held(l, g)
                        if len(before) > B:  # keep = {0..s-1} ∪ {n-(B-s)..n-1}
                            record(step, l, g, before, [j for j in before if j < s or j >= n - (B - s)])
        elif "h2o" in methods:
            r = math.floor(methods["h2o"]["recent"] * B)
            for l in range(L):
                # acc[l,g,j] += Σ_{h∈g} Σ_t A[l,h,t,j] (decode rows are over survivors only)
                acc[l][:, :n] += probs[l].sum(axis=1).reshape(Hk, G, n).sum(axis=1)
                for g in range(Hk):
                    before = fw.held(l, g)
                    if len(before) <= B:
                        continue
                    score = acc[l][g]
                    recent = before[len(before) - r:] if r > 0 else []
                    older = [j for j in before if j not in recent]
                    if step == 0:  # prefill: last r ∪ top(acc over older tokens, B - r)
                        kept = top(older, score, B - r)
                        margins.append(gap(kept, [j for j in older if j not in kept], score))
                        record(step, l, g, before, kept + recent)
                    else:  # decode: while over budget evict argmin among non-recent
                        cache = list(before)
                        while len(cache) > B:
                            candidates = [j for j in cache if j not in recent]
                            out = argmin(candidates, score)
                            rest = [j for j in candidates if j != out]
                            margins.append(gap(rest, [out], score))
                            cache.remove(out)
                        record(step, l, g, before, cache)
        elif "snapkv" in methods:
            p = methods["snapkv"]
            w, kernel, use_max = int(p["window"]), int(p["kernel"]), bool(p["max_pool"])
            if step == 0:  # prefill-only
                if "pyramid" in methods:
                    layer_budgets = pyramid_budgets(L, B, w, n, methods["pyramid"]["beta"])
                for l in range(L):
                    Bl = layer_budgets[l]
                    prefix = n - w  # j < np - w compete; W = {np-w..np-1} is kept
                    # s_h[j] = Σ_{t∈W} A[h,t,j]; ŝ = pool1d(s); mean-G
                    s = probs[l][:, n - w:, :prefix].sum(axis=1)  # [H, prefix]
                    pooled = np.stack([pool(s[h], kernel, use_max) for h in range(H)])
                    score_g = pooled.reshape(Hk, G, prefix).mean(axis=1)
                    for g in range(Hk):
                        before = fw.held(l, g)
                        if len(before) <= Bl:
                            continue
                        kept = top(range(prefix), score_g[g], Bl - w)
                        margins.append(gap(kept, [j for j in range(prefix) if j not in kept], score_g[g]))
                        record(step, l, g, before, kept + list(range(prefix, n)))
        elif "tova" in methods:
            if acts_at(step, int(methods["tova"]["every"])):
                for l in range(L):
                    # mean over all heads of the layer of the current (last) query's row
                    score = probs[l][:, -1, :].mean(axis=0)
                    before = fw.held(l, 0)
                    assert all(fw.held(l, g) == before for g in range(Hk)), "tova: one set per layer"
                    if len(before) <= B:
                        continue
                    if step == 0:  # prefill: once, with the last prompt query [assume]
                        kept = top(before, score, B)
                        margins.append(gap(kept, [j for j in before if j not in kept], score))
                    else:  # decode: while over budget, evict the argmin
                        kept = list(before)
                        while len(kept) > B:
                            out = argmin(kept, score)
                            kept.remove(out)
                            margins.append(gap(kept, [out], score))
                    for g in range(Hk):
                        record(step, l, g, before, kept)
        else:
            raise SystemExit(f"case {spec!r}: no scorer")
    margins = [m for m in margins if m is not None]
    return {"spec": spec, "budget": B, "layer_budgets": layer_budgets, "decisions": decisions,
            "margin": min(margins) if margins else None}


def greedy(model, ids, n):
    fw = PrunedForward(model, len(ids) + n)
    logits, _ = fw.step(ids)
    out = [int(np.argmax(logits))]
    while len(out) < n:
        logits, _ = fw.step([out[-1]])
        out.append(int(np.argmax(logits)))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--ids", type=int, nargs="+", required=True)
    parser.add_argument("--tokens", type=int, nargs="+", required=True)
    parser.add_argument("--case", action="append", default=[], required=True)
    args = parser.parse_args()
    model = Llama(args.model)
    result = {"model": args.model, "greedy": greedy(model, args.ids, len(args.tokens)), "cases": []}
    for case in args.case:
        spec, budget = case.rsplit("@", 1)
        result["cases"].append(run_case(model, spec, int(budget), args.ids, args.tokens))
    with open(args.out, "w") as f:
        json.dump(result, f)
    for c in result["cases"]:
        margin = "-" if c["margin"] is None else f"{c['margin']:.2e}"
        print(f"{c['spec']}@{c['budget']}: {len(c['decisions'])} decisions, layer budgets {c['layer_budgets']}, "
              f"min relative gap {margin}")


if __name__ == "__main__":
    main()
