// Block layouts of the ggml tensor types KVScope reads (GGUF specification / ggml-common.h).
#include "kernels/ggml_types.h"

namespace kvscope::kernels {

namespace {

struct TypeEntry {
    GgmlType type;
    GgmlTypeInfo info;
};

// Bytes per block, spelled out so the sum can be checked against the block structs:
//   Q4_0 = fp16 d + 16 nibble bytes; Q4_1 = fp16 d, m + 16; Q8_0 = fp16 d + 32 int8;
//   Q4_K = fp16 d, dmin + 12 packed scales + 128 nibble bytes;
//   Q5_K = Q4_K + 32 bytes of high bits; Q6_K = 128 low nibbles + 64 high pairs + 16 int8
//   scales + fp16 d.
constexpr TypeEntry kTypes[] = {
    {GgmlType::F32, {"F32", 1, 4}},
    {GgmlType::F16, {"F16", 1, 2}},
    {GgmlType::BF16, {"BF16", 1, 2}},
    {GgmlType::Q4_0, {"Q4_0", 32, 2 + 16}},
    {GgmlType::Q4_1, {"Q4_1", 32, 2 + 2 + 16}},
    {GgmlType::Q8_0, {"Q8_0", 32, 2 + 32}},
    {GgmlType::Q4_K, {"Q4_K", 256, 2 + 2 + 12 + 128}},
    {GgmlType::Q5_K, {"Q5_K", 256, 2 + 2 + 12 + 32 + 128}},
    {GgmlType::Q6_K, {"Q6_K", 256, 128 + 64 + 16 + 2}},
};

} // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t type_id) {
    for (const TypeEntry& entry : kTypes)
        if (static_cast<uint32_t>(entry.type) == type_id) return &entry.info;
    return nullptr;
}

} // namespace kvscope::kernels
