#include "core/cpu_threads.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <dlfcn.h>
#include <thread>

namespace kvscope {

void set_cpu_threads(int n) {
    at::set_num_threads(n > 0 ? n : int(std::max(1u, std::thread::hardware_concurrency())));
    // Present only when the BLAS behind libtorch is OpenBLAS (Debian's alternatives
    // decide at run time), hence the lookup rather than a link-time dependency.
    using SetThreads = void (*)(int);
    if (auto openblas = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
        openblas(1);
}

} // namespace kvscope
