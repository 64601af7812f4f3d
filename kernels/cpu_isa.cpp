// Run-time instruction-set check (see cpu_isa.h).
#include "kernels/cpu_isa.h"

#if KVSCOPE_X86
#include <cpuid.h>
#endif

namespace kvscope::kernels {

namespace {

bool cpu_has_avx2() {
#if KVSCOPE_X86
    static const bool has = [] {
        __builtin_cpu_init();
        // F16C (fp16 <-> fp32) is CPUID leaf 1, ECX bit 29; not every compiler's
        // __builtin_cpu_supports knows its name. Every AVX2 CPU so far has it.
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29));
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    }();
    return has;
#else
    return false;
#endif
}

} // namespace

CpuIsa cpu_isa() { return cpu_has_avx2() ? CpuIsa::Avx2 : CpuIsa::Scalar; }

bool cpu_isa_supported(CpuIsa isa) { return isa == CpuIsa::Scalar || cpu_has_avx2(); }

} // namespace kvscope::kernels
