// The CPU instruction sets the kernels are written for, checked once at run time, and the
// AVX2 helpers more than one kernel file uses. Kernels build their AVX2 functions with
// KVSCOPE_AVX2 (a per-function target, so the library still runs on any x86-64) and call
// them only after cpu_isa_supported(CpuIsa::Avx2).
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>
#define KVSCOPE_X86 1
#define KVSCOPE_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define KVSCOPE_X86 0
#endif

namespace kvscope::kernels {

// Scalar: portable C++ (the reference twin); Avx2: AVX2 + FMA + F16C.
enum class CpuIsa { Scalar, Avx2 };

// The best one this CPU runs.
CpuIsa cpu_isa();

// Whether this CPU can run `isa` (Scalar: always).
bool cpu_isa_supported(CpuIsa isa);

#if KVSCOPE_X86
// The sum of the eight lanes.
KVSCOPE_AVX2 inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

} // namespace kvscope::kernels
