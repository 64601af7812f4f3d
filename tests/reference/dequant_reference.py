#!/usr/bin/env python3
"""Independent reference for tests/test_dequant.cpp, built on PyPI gguf's NumPy code.

usage: dequant_reference.py MODEL.gguf OUT_DIR

Writes into OUT_DIR:
  model_reference.json      one record per tensor of MODEL.gguf, dequantized to fp32 by
                            gguf.quants.dequantize: element count, float64 sum, sum of |x|,
                            sum of squares (sums over finite values), a position-weighted sum (catches values that are
                            right but in the wrong place), and samples (first 64, last 64 and
                            256 spread-out positions) as float32 bit patterns.
  synthetic.gguf            a small GGUF (written by gguf.GGUFWriter) with one tensor per
                            type the C++ side reads, including Q4_K/Q5_K/Q6_K, which the
                            default model lacks.
  synthetic_reference.json  every value of every synthetic tensor, as float32 bits.

gguf 0.19 quantizes F16, BF16, Q4_0, Q4_1 and Q8_0 but has no quantizer for the K-quants
(dequantize only), so their blocks are random bytes with finite fp16 scales: every bit
pattern of the packed fields gets exercised.

Files are written to a temporary name and renamed, so a killed run leaves no half file.
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

N_HEAD = 64
N_TAIL = 64
N_SPREAD = 256
WEIGHT_PERIOD = 251  # weighted sum uses w_i = i % 251 + 1


def float_bits(values):
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).tolist()


def tensor_record(name, type_name, values):
    """Sums run over the finite values only (inf/nan are checked through the samples)."""
    x = values.reshape(-1)
    n = x.size
    finite = np.isfinite(x)
    x64 = np.where(finite, x, 0).astype(np.float64)
    weights = (np.arange(n, dtype=np.int64) % WEIGHT_PERIOD + 1).astype(np.float64)
    spread = [((2 * k + 1) * n) // (2 * N_SPREAD) for k in range(N_SPREAD)] if n else []
    return {
        "name": name,
        "type": type_name,
        "count": int(n),
        "sum": float(x64.sum()),
        "sum_abs": float(np.abs(x64).sum()),
        "sum_sq": float(np.dot(x64, x64)),
        "weighted_sum": float(np.dot(x64, weights)),
        "head": float_bits(x[:N_HEAD]),
        "tail": float_bits(x[max(0, n - N_TAIL):]),
        "spread_index": spread,
        "spread": float_bits(x[spread]),
    }


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def model_reference(model_path):
    reader = gguf.GGUFReader(model_path)
    records = []
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        records.append(tensor_record(t.name, t.tensor_type.name, values))
    return {
        "model": model_path,
        "model_size": os.path.getsize(model_path),
        "weight_period": WEIGHT_PERIOD,
        "tensors": records,
    }


def random_fp16(rng, n, low, high):
    """Finite fp16 scales with random signs and magnitudes in [low, high)."""
    mags = rng.uniform(low, high, n) * rng.choice([-1.0, 1.0], n)
    return mags.astype(np.float16)


def random_k_blocks(rng, qtype, n_blocks):
    """Random K-quant blocks whose fp16 d (and dmin) fields hold finite values."""
    block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    if qtype in (T.Q4_K, T.Q5_K):  # d, dmin at the front
        blocks[:, 0:2] = random_fp16(rng, n_blocks, 1e-4, 0.1).view(np.uint8).reshape(n_blocks, 2)
        blocks[:, 2:4] = random_fp16(rng, n_blocks, 1e-4, 0.1).view(np.uint8).reshape(n_blocks, 2)
    else:  # Q6_K: d at the end
        blocks[:, -2:] = random_fp16(rng, n_blocks, 1e-4, 0.1).view(np.uint8).reshape(n_blocks, 2)
    return blocks


# Values an fp16/bf16 tensor should carry besides ordinary numbers.
SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 6.1e-5, 5.96e-8, -5.96e-8,
                     1e-6, 65504.0, -65504.0, 1e38, -3e-39], dtype=np.float32)


def synthetic_tensors(rng):
    """(name, array, raw_dtype) triples: 8 rows x 512 columns of each type."""
    rows, cols = 8, 512
    data = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    specials = data.copy()
    specials.reshape(-1)[:SPECIALS.size] = SPECIALS
    with np.errstate(over="ignore"):  # 1e38 becomes fp16 inf, on purpose
        f16 = gguf.quants.quantize(specials, T.F16)
    out = [
        ("f32", data, None),
        ("f16", f16, None),
        ("bf16", gguf.quants.quantize(specials, T.BF16), T.BF16),
        ("q4_0", gguf.quants.quantize(data, T.Q4_0), T.Q4_0),
        ("q4_1", gguf.quants.quantize(data, T.Q4_1), T.Q4_1),
        ("q8_0", gguf.quants.quantize(data, T.Q8_0), T.Q8_0),
    ]
    for qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        blocks = random_k_blocks(rng, qtype, rows * cols // 256)
        out.append((qtype.name.lower(), blocks.reshape(rows, -1), qtype))
    return out


def synthetic(out_dir):
    rng = np.random.default_rng(20240611)
    tensors = synthetic_tensors(rng)
    gguf_path = os.path.join(out_dir, "synthetic.gguf")
    tmp = gguf_path + ".tmp"
    writer = gguf.GGUFWriter(tmp, "llama")
    for name, array, raw_dtype in tensors:
        writer.add_tensor(name, array, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, gguf_path)

    # The reference values come from reading the written file back, like the C++ side does.
    records = []
    for t in gguf.GGUFReader(gguf_path).tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)
        record = tensor_record(t.name, t.tensor_type.name, values)
        record["values"] = float_bits(values)
        records.append(record)
    write_json(os.path.join(out_dir, "synthetic_reference.json"), {"tensors": records})


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_path, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    synthetic(out_dir)
    write_json(os.path.join(out_dir, "model_reference.json"), model_reference(model_path))


if __name__ == "__main__":
    main()
