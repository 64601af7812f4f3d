// One pool of CPU threads: libtorch's.
#pragma once

namespace kvscope {

// Runs libtorch's intra-op pool with `n` threads (0: one per core) and keeps the BLAS
// library single-threaded inside it. OpenBLAS otherwise starts its own pool, and the two
// pools spin against each other on small decode-time products (measured here, 2 cores,
// context 2048: 6.3 tokens/s with both pools, 26 with one).
void set_cpu_threads(int n);

} // namespace kvscope
