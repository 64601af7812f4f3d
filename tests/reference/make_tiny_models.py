#!/usr/bin/env python3
"""Write a tiny but real Llama model, as a GGUF file and as a Hugging Face directory, and
damaged copies of both, for the command-line bad-input tests (tests/test_cli_errors.cpp).

    make_tiny_models.py OUTDIR

Needs only numpy and the PyPI `gguf` and `safetensors` packages. Output is deterministic
(seeded weights, fixed vocabulary). Written into OUTDIR:

  tiny.gguf               llama, 2 layers, n_embd 64, 4 heads / 2 KV heads, n_ff 128,
                          context 64, byte-level BPE vocabulary; F32 weights plus one F16
                          and one Q8_0 tensor
  tiny-hf/                the same model as a Hugging Face directory (config.json,
                          model.safetensors, tokenizer.json, tokenizer_config.json), made
                          by make_hf_dir.py and gguf_to_tokenizer_json.py
  truncated.gguf          cut in the middle of the data of TRUNCATED_TENSOR
  bad-magic.gguf          first four bytes are not "GGUF"
  offset-past-end.gguf    OFFSET_TENSOR's data offset points beyond the end of the file
  unknown-dtype.gguf      DTYPE_TENSOR's ggml type id is 99
  shape-mismatch.gguf     blk.0.attn_q.weight has 48 rows where the config implies 64
  unsupported-arch.gguf   general.architecture is "mamba"
  no-tokenizer.gguf       no tokenizer.* keys
  hf-no-tokenizer/        tiny-hf without tokenizer.json
  hf-unsupported-arch/    tiny-hf with model_type "gpt_neox"
  hf-bad-config/          tiny-hf whose config.json is not valid JSON
  hf-missing-tensor/      tiny-hf whose model.safetensors lacks MISSING_HF_TENSOR

The tensors each damaged file names are fixed here and repeated by the C++ test.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType, quants
from safetensors.numpy import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))

N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_CTX = 2, 64, 4, 2, 128, 64
HEAD_DIM = N_EMBD // N_HEAD
SEED = 20240611

TRUNCATED_TENSOR = "blk.0.ffn_up.weight"
OFFSET_TENSOR = "blk.1.attn_k.weight"
DTYPE_TENSOR = "blk.0.attn_k.weight"
F16_TENSOR = "blk.0.attn_v.weight"
Q8_0_TENSOR = "blk.1.ffn_gate.weight"
MISSING_HF_TENSOR = "model.layers.1.mlp.down_proj.weight"

# Common English pairs, in byte-level text (Ġ is a space), applied in this order. Each
# result becomes a token.
MERGES = [
    ("Ġ", "t"), ("h", "e"), ("Ġ", "a"), ("i", "n"), ("Ġt", "he"), ("e", "r"), ("o", "n"),
    ("r", "e"), ("a", "n"), ("e", "n"), ("Ġ", "s"), ("Ġ", "w"), ("o", "u"), ("i", "t"),
    ("Ġ", "o"), ("a", "t"), ("l", "l"), ("e", "s"), ("Ġ", "c"), ("Ġ", "h"), ("o", "r"),
    ("i", "s"), ("Ġ", "b"), ("e", "d"), ("in", "g"), ("Ġ", "f"), ("a", "r"), ("Ġ", "m"),
    ("he", "ll"), ("hell", "o"), ("Ġ", "hello"), ("Ġ", "i"), ("Ġ", "in"), ("Ġo", "f"),
    ("Ġa", "n"), ("Ġan", "d"), ("Ġ", "is"), ("Ġw", "or"), ("l", "d"), ("Ġwor", "ld"),
]
CONTROL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
                   " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
                   "{{ '<|im_start|>assistant\\n' }}{% endif %}")


def byte_level_alphabet():
    """GPT-2's reversible byte -> printable character mapping: printable Latin-1 bytes map
    to themselves, the rest to U+0100 upwards, in byte order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
                 + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def vocabulary():
    """(tokens, token types, merges as "a b" strings, bos id, eos id)."""
    alphabet = byte_level_alphabet()
    tokens = [alphabet[b] for b in range(256)]
    known = set(tokens)
    merges = []
    for a, b in MERGES:
        assert a in known and b in known, (a, b)
        merges.append(f"{a} {b}")
        if a + b not in known:
            tokens.append(a + b)
            known.add(a + b)
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    for text in CONTROL_TOKENS:
        tokens.append(text)
        types.append(int(gguf.TokenType.CONTROL))
    bos, eos = tokens.index("<|endoftext|>"), tokens.index("<|im_end|>")
    return tokens, types, merges, bos, eos


def weights(n_vocab, q_rows):
    """name -> float32 array in PyTorch order [out, in]; norms near 1, the rest N(0, 0.1)."""
    rng = np.random.default_rng(SEED)

    def normal(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    def norm():
        return (1.0 + rng.standard_normal(N_EMBD) * 0.1).astype(np.float32)

    kv_rows = N_HEAD_KV * HEAD_DIM
    w = {"token_embd.weight": normal(n_vocab, N_EMBD)}
    for il in range(N_LAYER):
        p = f"blk.{il}."
        w[p + "attn_norm.weight"] = norm()
        w[p + "attn_q.weight"] = normal(N_HEAD * HEAD_DIM, N_EMBD)
        w[p + "attn_k.weight"] = normal(kv_rows, N_EMBD)
        w[p + "attn_v.weight"] = normal(kv_rows, N_EMBD)
        w[p + "attn_output.weight"] = normal(N_EMBD, N_HEAD * HEAD_DIM)
        w[p + "ffn_norm.weight"] = norm()
        w[p + "ffn_gate.weight"] = normal(N_FF, N_EMBD)
        w[p + "ffn_up.weight"] = normal(N_FF, N_EMBD)
        w[p + "ffn_down.weight"] = normal(N_EMBD, N_FF)
    w["output_norm.weight"] = norm()
    w["output.weight"] = normal(n_vocab, N_EMBD)
    if q_rows != N_HEAD * HEAD_DIM:  # same random stream, then cut: the rest stays identical
        w["blk.0.attn_q.weight"] = w["blk.0.attn_q.weight"][:q_rows].copy()
    return w


def llama_writer(path, name, n_layer, n_ctx, n_embd, n_ff, n_head, n_head_kv, arch="llama", with_tokenizer=True):
    """A GGUFWriter holding a Llama config and (optionally) this file's vocabulary; the
    caller adds the tensors and writes. Returns (writer, vocabulary size)."""
    tokens, types, merges, bos, eos = vocabulary()
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(name)
    writer.add_block_count(n_layer)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_vocab_size(len(tokens))
    if with_tokenizer:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt2")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(bos)
        writer.add_eos_token_id(eos)
        writer.add_add_bos_token(False)
        writer.add_chat_template(CHATML_TEMPLATE)
    return writer, len(tokens)


def write_gguf(path, arch="llama", with_tokenizer=True, q_rows=N_HEAD * HEAD_DIM):
    writer, n_tokens = llama_writer(path, "tiny-llama", N_LAYER, N_CTX, N_EMBD, N_FF, N_HEAD, N_HEAD_KV, arch,
                                    with_tokenizer)
    for name, w in weights(n_tokens, q_rows).items():
        if name == F16_TENSOR:
            writer.add_tensor(name, w.astype(np.float16))
        elif name == Q8_0_TENSOR:
            writer.add_tensor(name, quants.quantize(w, GGMLQuantizationType.Q8_0),
                              raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tensor_of(reader, name):
    return next(t for t in reader.tensors if t.name == name)


def info_field_offsets(tensor):
    """Absolute file offsets of a tensor info's type and data-offset fields. Its parts are
    name length (u64), name bytes, n_dims (u32), ne[n_dims] (u64 each), type (u32), offset (u64)."""
    parts = tensor.field.parts
    type_at = tensor.field.offset + sum(int(p.nbytes) for p in parts[:4])
    offset_at = type_at + int(parts[4].nbytes)
    assert int(parts[4][0]) == int(tensor.tensor_type) and offset_at + 8 == tensor.field.offset + sum(
        int(p.nbytes) for p in parts)
    return type_at, offset_at


def patched(data, at, value_bytes):
    out = bytearray(data)
    out[at:at + len(value_bytes)] = value_bytes
    return bytes(out)


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def copy_hf(src, dst, drop=()):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    for name in drop:
        os.remove(os.path.join(dst, name))


def run(script, *args):
    subprocess.run([sys.executable, os.path.join(HERE, script), *args], check=True, stdout=subprocess.DEVNULL)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tiny = os.path.join(out, "tiny.gguf")
    write_gguf(tiny)
    write_gguf(os.path.join(out, "shape-mismatch.gguf"), q_rows=48)
    write_gguf(os.path.join(out, "unsupported-arch.gguf"), arch="mamba")
    write_gguf(os.path.join(out, "no-tokenizer.gguf"), with_tokenizer=False)

    with open(tiny, "rb") as f:
        data = f.read()
    reader = gguf.GGUFReader(tiny)
    alignment = 32
    assert "general.alignment" not in reader.fields

    cut = tensor_of(reader, TRUNCATED_TENSOR)
    write_bytes(os.path.join(out, "truncated.gguf"), data[:cut.data_offset + cut.n_bytes // 2])
    write_bytes(os.path.join(out, "bad-magic.gguf"), b"GGUX" + data[4:])
    _, offset_at = info_field_offsets(tensor_of(reader, OFFSET_TENSOR))
    past_end = (len(data) // alignment + 1) * alignment * 4  # aligned, far beyond the data section
    write_bytes(os.path.join(out, "offset-past-end.gguf"), patched(data, offset_at, past_end.to_bytes(8, "little")))
    type_at, _ = info_field_offsets(tensor_of(reader, DTYPE_TENSOR))
    write_bytes(os.path.join(out, "unknown-dtype.gguf"), patched(data, type_at, (99).to_bytes(4, "little")))

    hf = os.path.join(out, "tiny-hf")
    run("make_hf_dir.py", tiny, hf, "--force")
    run("gguf_to_tokenizer_json.py", tiny, hf)

    copy_hf(hf, os.path.join(out, "hf-no-tokenizer"), drop=["tokenizer.json"])
    neox = os.path.join(out, "hf-unsupported-arch")
    copy_hf(hf, neox)
    with open(os.path.join(neox, "config.json")) as f:
        config = json.load(f)
    config.update(model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"])
    with open(os.path.join(neox, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    bad = os.path.join(out, "hf-bad-config")
    copy_hf(hf, bad)
    with open(os.path.join(bad, "config.json")) as f:
        text = f.read()
    with open(os.path.join(bad, "config.json"), "w") as f:
        f.write(text[:len(text) // 2])  # cut inside the object: not valid JSON
    missing = os.path.join(out, "hf-missing-tensor")
    copy_hf(hf, missing)
    st_path = os.path.join(missing, "model.safetensors")
    tensors = load_file(st_path)
    del tensors[MISSING_HF_TENSOR]
    save_file(tensors, st_path, metadata={"format": "pt"})
    print(f"{out}: tiny models written")


if __name__ == "__main__":
    main()
