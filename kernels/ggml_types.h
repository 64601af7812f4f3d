// The ggml tensor types KVScope reads from GGUF files, with their block layout.
// Values are the on-disk type ids of the GGUF specification.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvscope::kernels {

enum class GgmlType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 8,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    BF16 = 30,
};

struct GgmlTypeInfo {
    const char* name;    // "Q4_1"
    int64_t block_elems; // elements per block (1 for plain floats)
    size_t block_bytes;  // bytes per block
};

// Layout of `type_id`, or nullptr when KVScope does not read that type.
const GgmlTypeInfo* ggml_type_info(uint32_t type_id);

} // namespace kvscope::kernels
