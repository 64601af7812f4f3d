#!/usr/bin/env python3
"""Write a Hugging Face Llama model directory (config.json + fp32 safetensors) from a GGUF.

    make_hf_dir.py GGUF OUTDIR [--shards N] [--force] [--verify]

Independent of KVScope's C++ code: it reads the GGUF with the PyPI `gguf` package,
dequantizes every tensor to float32 with `gguf.quants.dequantize`, renames tensors to the
Hugging Face Llama names, undoes llama.cpp's Q/K row permutation (its converter reorders
q_proj/k_proj rows so that RoPE can rotate adjacent pairs; Hugging Face rotates the two
halves of each head), and writes config.json plus model.safetensors, or with --shards N,
model-0000i-of-0000N.safetensors and model.safetensors.index.json. Tokenizer files are
written elsewhere.

The output is deterministic. A stamp file records what was written from which GGUF, so a
second run with the same arguments does nothing (--force rewrites). Files are written
under temporary names and renamed, and outputs of an earlier run with another --shards
are removed, so the directory is always one consistent model.

--verify reloads the written directory with the `safetensors` package and checks it
against the GGUF: names, shapes, exact values, and that attention scores under
Hugging Face RoPE on the un-permuted Q/K equal those under llama.cpp's interleaved RoPE on
the GGUF's Q/K.
"""

import argparse
import json
import os
import re
import sys
import time

import numpy as np
import gguf
from gguf import quants
from safetensors.numpy import load_file, save_file

SCRIPT_VERSION = 1
SINGLE_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
STAMP_NAME = ".make_hf_dir.stamp"
SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")

# GGUF tensor name -> Hugging Face name; "{}" is the layer number.
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


class FastReader(gguf.GGUFReader):
    """GGUFReader over a plain ndarray view of its memmap. np.memmap's bookkeeping on
    every slice otherwise costs seconds on the 49k-entry vocabulary arrays."""

    def __init__(self, path):
        self.path = path
        super().__init__(path)

    @property
    def data(self):
        return self._plain

    @data.setter
    def data(self, mapped):
        self._plain = mapped.view(np.ndarray)


# ---------------------------------------------------------------------------
# GGUF metadata -> config.json
# ---------------------------------------------------------------------------

def field_value(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            sys.exit(f"{reader.path}: {key}: missing")
        return default
    return field.contents()


def float32_decimal(value):
    """The shortest decimal that reads back as the same float32 (9.99999974738e-06 -> 1e-05),
    which is what the original config.json held before conversion to float32."""
    return float(str(np.float32(value)))


def read_config(reader):
    tensor_names = {t.name for t in reader.tensors}
    arch = field_value(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"{reader.path}: general.architecture: '{arch}' is not supported (only llama)")
    scaling = field_value(reader, "llama.rope.scaling.type", "none")
    if scaling != "none":
        sys.exit(f"{reader.path}: llama.rope.scaling.type: '{scaling}' is not supported")

    hidden = int(field_value(reader, "llama.embedding_length"))
    n_head = int(field_value(reader, "llama.attention.head_count"))
    n_head_kv = int(field_value(reader, "llama.attention.head_count_kv", n_head))
    head_dim = int(field_value(reader, "llama.attention.key_length", hidden // n_head))
    rope_dim = int(field_value(reader, "llama.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        sys.exit(f"{reader.path}: llama.rope.dimension_count: {rope_dim} != head_dim {head_dim} (partial RoPE)")
    if "token_embd.weight" not in tensor_names:
        sys.exit(f"{reader.path}: token_embd.weight: missing")
    embd_rows = int(next(t for t in reader.tensors if t.name == "token_embd.weight").shape[-1])  # ggml order
    n_vocab = int(field_value(reader, "llama.vocab_size", embd_rows))

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(field_value(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(field_value(reader, "llama.block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "rms_norm_eps": float32_decimal(field_value(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float32_decimal(field_value(reader, "llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "max_position_embeddings": int(field_value(reader, "llama.context_length")),
        "vocab_size": n_vocab,
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": int(field_value(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field_value(reader, "tokenizer.ggml.eos_token_id")),
        "torch_dtype": "float32",
    }
    pad = field_value(reader, "tokenizer.ggml.padding_token_id", -1)
    if pad != -1:
        config["pad_token_id"] = int(pad)
    return config


# ---------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------

def hf_name(gguf_name):
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if match and match.group(2) in LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{LAYER_NAMES[match.group(2)]}"
    sys.exit(f"no Hugging Face name for GGUF tensor '{gguf_name}'")


def permute_rows(w, n_head):
    """llama.cpp's converter: within each head, rows (first half, second half) become
    interleaved pairs, so RoPE can rotate adjacent elements."""
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def unpermute_rows(w, n_head):
    """The inverse of permute_rows: back to Hugging Face's half-split head layout."""
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def expected_shape(hf, config):
    """[out_features, in_features] as PyTorch stores them, to catch a transposed tensor."""
    h, ff, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q = config["num_attention_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    table = {
        "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h),
        "self_attn.v_proj.weight": (kv, h), "self_attn.o_proj.weight": (h, q),
        "mlp.gate_proj.weight": (ff, h), "mlp.up_proj.weight": (ff, h), "mlp.down_proj.weight": (h, ff),
        "model.embed_tokens.weight": (v, h), "lm_head.weight": (v, h), "model.norm.weight": (h,),
    }
    return table[hf.split(".", 3)[3] if hf.startswith("model.layers.") else hf]


def hf_tensors(reader, config):
    """Dequantized float32 tensors under Hugging Face names, in model order, plus the
    dequantized GGUF arrays (for --verify)."""
    converted, from_gguf = {}, {}
    for t in reader.tensors:
        w = np.ascontiguousarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        name = hf_name(t.name)
        from_gguf[name] = w
        if name.endswith("q_proj.weight"):
            w = unpermute_rows(w, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            w = unpermute_rows(w, config["num_key_value_heads"])
        want = expected_shape(name, config)
        if w.shape != want:
            sys.exit(f"{reader.path}: {t.name}: shape {w.shape}, expected {want} for {name}")
        converted[name] = np.ascontiguousarray(w)
    n_layers = config["num_hidden_layers"]
    expected = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{part}" for i in range(n_layers) for part in LAYER_NAMES.values()}
    if not config["tie_word_embeddings"]:
        expected.add("lm_head.weight")
    if set(converted) != expected:
        sys.exit(f"{reader.path}: tensors missing: {sorted(expected - set(converted))[:5]}, "
                 f"unexpected: {sorted(set(converted) - expected)[:5]}")
    return dict(sorted(converted.items(), key=lambda kv: model_order(kv[0]))), from_gguf


def model_order(name):
    """Embeddings, then layer by layer, then the final norm and head (how shards split)."""
    match = re.match(r"model\.layers\.(\d+)\.", name)
    if match:
        return (1, int(match.group(1)), name)
    return (0 if name == "model.embed_tokens.weight" else 2, 0, name)


def split_into_shards(tensors, n):
    """Consecutive groups of roughly equal bytes, none empty."""
    names = list(tensors)
    if not 1 <= n <= len(names):
        sys.exit(f"--shards must be between 1 and {len(names)}")
    total = sum(a.nbytes for a in tensors.values())
    shards, done = [[]], 0
    for i, name in enumerate(names):
        k = len(shards) - 1
        left = len(names) - i
        # Move on once this shard has its share, or when each shard still to come needs
        # one of the tensors left.
        if shards[k] and k < n - 1 and (done >= (k + 1) * total / n or left == n - 1 - k):
            shards.append([])
        shards[-1].append(name)
        done += tensors[name].nbytes
    return shards


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def replace_file(path, write):
    """Write through a temporary name and rename, so a reader never sees half a file."""
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}")
    write(tmp)
    os.chmod(tmp, 0o644)  # the safetensors writer creates its file private (0600)
    os.replace(tmp, path)


def write_json(path, value):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2)
            f.write("\n")
    replace_file(path, write)


def write_safetensors(path, tensors):
    replace_file(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


def remove_stale(outdir, keep):
    """Model files of an earlier run with another --shards."""
    for name in os.listdir(outdir):
        stale = name in (SINGLE_NAME, INDEX_NAME) or SHARD_RE.match(name) or name.startswith(".tmp-model")
        if stale and name not in keep:
            os.remove(os.path.join(outdir, name))


def write_model(outdir, tensors, n_shards):
    """Returns the files written. The index is written after its shards and the single
    file is removed only then (and the reverse), so a reader finds a whole model."""
    if n_shards is None:
        write_safetensors(os.path.join(outdir, SINGLE_NAME), tensors)
        written = [SINGLE_NAME]
    else:
        groups = split_into_shards(tensors, n_shards)
        weight_map, written = {}, []
        for i, group in enumerate(groups):
            shard = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
            write_safetensors(os.path.join(outdir, shard), {name: tensors[name] for name in group})
            weight_map.update({name: shard for name in group})
            written.append(shard)
        total = sum(a.nbytes for a in tensors.values())
        write_json(os.path.join(outdir, INDEX_NAME),
                   {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
        written.append(INDEX_NAME)
    remove_stale(outdir, set(written))
    return written


def stamp_for(gguf_path, n_shards):
    st = os.stat(gguf_path)
    return {"script_version": SCRIPT_VERSION, "gguf": os.path.realpath(gguf_path),
            "gguf_size": st.st_size, "gguf_mtime_ns": st.st_mtime_ns, "shards": n_shards}


def up_to_date(outdir, stamp):
    try:
        with open(os.path.join(outdir, STAMP_NAME)) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return False
    return old.get("stamp") == stamp and all(os.path.isfile(os.path.join(outdir, n)) for n in old.get("files", []))


# ---------------------------------------------------------------------------
# Verification (--verify)
# ---------------------------------------------------------------------------

def rope_half(x, pos, theta):
    """Hugging Face: element i pairs with i + d/2 (rotate_half)."""
    d = x.shape[-1]
    freq = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    cos, sin = np.cos(pos * freq), np.sin(pos * freq)
    a, b = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def rope_interleaved(x, pos, theta):
    """llama.cpp (LLAMA_ROPE_TYPE_NORM): element 2i pairs with 2i + 1."""
    d = x.shape[-1]
    freq = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    cos, sin = np.cos(pos * freq), np.sin(pos * freq)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return out


def attention_scores(wq, wk, x_q, x_k, p_q, p_k, config, rope):
    """q.k per query head for one query token and one key token (GQA: head h reads KV
    head h // group)."""
    hd, n_head, n_kv = config["head_dim"], config["num_attention_heads"], config["num_key_value_heads"]
    q = rope((wq.astype(np.float64) @ x_q).reshape(n_head, hd), p_q, config["rope_theta"])
    k = rope((wk.astype(np.float64) @ x_k).reshape(n_kv, hd), p_k, config["rope_theta"])
    group = n_head // n_kv
    return np.array([q[h] @ k[h // group] for h in range(n_head)])


def verify(outdir, n_shards, config, from_gguf):
    if n_shards is None:
        loaded = load_file(os.path.join(outdir, SINGLE_NAME))
    else:
        with open(os.path.join(outdir, INDEX_NAME)) as f:
            weight_map = json.load(f)["weight_map"]
        loaded = {}
        for shard in sorted(set(weight_map.values())):
            part = load_file(os.path.join(outdir, shard))
            assert all(weight_map[n] == shard for n in part), f"{shard} holds a tensor the index puts elsewhere"
            loaded.update(part)
        assert set(loaded) == set(weight_map), "index and shards disagree"
    assert set(loaded) == set(from_gguf), "tensor names differ from the GGUF's"
    with open(os.path.join(outdir, "config.json")) as f:
        assert json.load(f) == config
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    for name, w in loaded.items():
        assert w.dtype == np.float32 and w.shape == expected_shape(name, config), name
        if name.endswith("q_proj.weight"):
            w = permute_rows(w, n_head)
        elif name.endswith("k_proj.weight"):
            w = permute_rows(w, n_kv)
        assert np.array_equal(w, from_gguf[name]), f"{name}: values differ from the dequantized GGUF"

    # The independent check: the two RoPE conventions give the same attention scores,
    # each on its own layout of the weights.
    rng = np.random.default_rng(0)
    for layer in (0, config["num_hidden_layers"] - 1):
        prefix = f"model.layers.{layer}.self_attn."
        x_q, x_k = rng.standard_normal(config["hidden_size"]), rng.standard_normal(config["hidden_size"])
        for p_q, p_k in ((0, 0), (7, 3), (1000, 2)):
            hf = attention_scores(loaded[prefix + "q_proj.weight"], loaded[prefix + "k_proj.weight"],
                                  x_q, x_k, p_q, p_k, config, rope_half)
            gg = attention_scores(from_gguf[prefix + "q_proj.weight"], from_gguf[prefix + "k_proj.weight"],
                                  x_q, x_k, p_q, p_k, config, rope_interleaved)
            assert np.allclose(hf, gg, rtol=1e-9, atol=1e-9), f"layer {layer}: RoPE scores differ: {hf} vs {gg}"
            # And the check has teeth: the un-permuted weights under the wrong RoPE differ.
            wrong = attention_scores(loaded[prefix + "q_proj.weight"], loaded[prefix + "k_proj.weight"],
                                     x_q, x_k, p_q, p_k, config, rope_interleaved)
            assert p_q == p_k or not np.allclose(wrong, hf, rtol=1e-6), "RoPE check cannot tell the layouts apart"
    x = rng.standard_normal((6, 10))
    assert np.array_equal(unpermute_rows(permute_rows(x, 3), 3), x)
    print(f"verified {len(loaded)} tensors: names, shapes, exact values, RoPE scores")


# ---------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf")
    parser.add_argument("outdir")
    parser.add_argument("--shards", type=int, help="write N shards and model.safetensors.index.json")
    parser.add_argument("--force", action="store_true", help="rewrite even if the stamp says up to date")
    parser.add_argument("--verify", action="store_true", help="reload the output and check it against the GGUF")
    args = parser.parse_args()
    if args.shards is not None and args.shards < 1:
        parser.error("--shards must be at least 1")
    if not os.path.isfile(args.gguf):
        parser.error(f"{args.gguf}: no such file")

    start = time.time()
    os.makedirs(args.outdir, exist_ok=True)
    stamp = stamp_for(args.gguf, args.shards)
    fresh = not args.force and up_to_date(args.outdir, stamp)
    if fresh and not args.verify:
        print(f"{args.outdir}: up to date")
        return
    reader = FastReader(args.gguf)
    config = read_config(reader)
    tensors, from_gguf = hf_tensors(reader, config)
    if not fresh:
        stamp_path = os.path.join(args.outdir, STAMP_NAME)
        if os.path.exists(stamp_path):
            os.remove(stamp_path)  # a half-written directory must not look up to date
        write_json(os.path.join(args.outdir, "config.json"), config)
        files = write_model(args.outdir, tensors, args.shards)
        write_json(stamp_path, {"stamp": stamp, "files": ["config.json"] + files})
        print(f"{args.outdir}: {len(tensors)} tensors in {', '.join(files)} ({time.time() - start:.1f} s)")
    if args.verify:
        verify(args.outdir, args.shards, config, from_gguf)


if __name__ == "__main__":
    main()
