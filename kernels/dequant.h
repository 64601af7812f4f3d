// CPU dequantization of ggml block formats to fp32.
#pragma once

#include "kernels/ggml_types.h"

#include <cstdint>

namespace kvscope::kernels {

// Converts `n` elements of `type` starting at `src` to fp32 in `dst`.
// `n` must be a multiple of the type's block_elems; the caller has checked that
// `src` holds n / block_elems * block_bytes readable bytes.
void dequantize(GgmlType type, const void* src, float* dst, int64_t n);

} // namespace kvscope::kernels
