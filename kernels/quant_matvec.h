// Matrix-vector products that read ggml-quantized weights in their block form, with fp32
// activations: the CPU decode path's weight reads shrink to the quantized size (Q4_1 moves
// 20 bytes per 32 weights instead of 128).
//
// The result equals the product of the dequantized fp32 matrix with x up to the order of
// summation (x is never quantized), so parity against an fp32 reference holds.
#pragma once

#include "kernels/cpu_isa.h"
#include "kernels/ggml_types.h"

#include <cstdint>

namespace kvscope::kernels {

// y[r] = sum_c W[r,c] * x[c] for every r in [row_begin, row_end); y[r] outside that range is
// not touched, so threads may each take a row range of the same y.
//
// W is row-major: row r starts at `weights + r * row_bytes` and holds n_cols / block_elems
// consecutive blocks of `type` (row_bytes >= that many bytes; GGUF rows are exactly that).
// Types with a dedicated kernel: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K; any other
// type ggml_type_info knows (Q5_K) dequantizes one row at a time into a per-thread buffer.
// No alignment is required of weights, x or y.
//
// Thread-safe; no allocation after a thread's first call at a given n_cols (per-thread
// scratch grows once). Throws std::invalid_argument on an unknown type, n_cols not a
// whole number of blocks, row_bytes too small, or a negative / reversed row range.
// Uses AVX2+FMA+F16C when the CPU has them (checked once at run time), else portable code.
//
// A GGUF weight of shape [n_out, n_in] (ne0 = n_in) is exactly this layout: row r is output
// feature r, row_bytes = n_in / block_elems * block_bytes. Threads split [0, n_out) into
// contiguous ranges (even-sized ranges let the two-row kernels cover every row); any split
// gives bit-identical y.
void quant_matvec(GgmlType type, const void* weights, int64_t row_bytes, int64_t row_begin,
                  int64_t row_end, int64_t n_cols, const float* x, float* y);

// The instruction sets quant_matvec can run on (kernels/cpu_isa.h); tests and benchmarks
// pick one by hand.
using MatvecIsa = CpuIsa;

// The one quant_matvec uses on this CPU.
MatvecIsa quant_matvec_isa();

// Whether this CPU can run `isa` (Scalar: always).
bool quant_matvec_isa_supported(MatvecIsa isa);

// quant_matvec on a chosen instruction set; throws std::invalid_argument when the CPU
// lacks it.
void quant_matvec_with_isa(MatvecIsa isa, GgmlType type, const void* weights, int64_t row_bytes,
                           int64_t row_begin, int64_t row_end, int64_t n_cols, const float* x,
                           float* y);

// True when `type` has a dedicated kernel; false when it takes the dequantize-a-row path.
bool quant_matvec_has_kernel(GgmlType type);

} // namespace kvscope::kernels
