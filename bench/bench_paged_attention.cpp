// paged_attention_cpu speed in decode (T = 1) on one layer of the default model's shape
// (SmolLM2-135M: 9 query heads, 3 KV heads, head_dim 64), one thread, all heads.
//
//   BM_DecodeAttention/<isa>/ctx<N>/<cache>/<mass>  every KV head holds N slots in pages of
//       16, scattered over the pool in random order (as after eviction and reuse); cache
//       "hot" reuses one layer (it stays in L2/L3), "cold" cycles through 30 layers' pools
//       as one decoded token does, so keys and values come from DRAM; "cold_thp" is cold
//       with the pools in transparent huge pages (madvise), which halves the TLB misses'
//       cost of reading scattered 4 KiB pages (twice the bandwidth on the VM we measured
//       on). mass: "mass" also
//       accumulates the per-key attention mass of the query (what scorers read), "nomass"
//       does not.
// Counters: bytes_per_second and GB/s (decimal) count the keys and values read, each once
// (3 KV heads x N slots x 64 x 4 bytes x 2); positions and scores are not counted.
#include "kernels/paged_attention.h"

#include <benchmark/benchmark.h>

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

using kvscope::kernels::AttentionQueries;
using kvscope::kernels::CpuIsa;
using kvscope::kernels::KvDtype;
using kvscope::kernels::PagedKv;

constexpr int64_t kHeads = 9, kKvHeads = 3, kDim = 64, kPage = 16, kLayers = 30;

// A float array, in huge pages when asked (2 MiB aligned, MADV_HUGEPAGE).
struct Pool {
    std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};
    Pool(int64_t n, bool huge) {
        const size_t bytes = (size_t(n) * sizeof(float) + (2u << 20) - 1) / (2u << 20) * (2u << 20);
        data.reset(static_cast<float*>(std::aligned_alloc(2u << 20, bytes)));
        if (huge) madvise(data.get(), bytes, MADV_HUGEPAGE);
    }
};

// One layer's pool, page table and positions, every head holding n slots.
struct Layer {
    std::unique_ptr<Pool> k_pool, v_pool;
    float* k = nullptr;
    float* v = nullptr;
    std::vector<int32_t> positions, page_table, n_slots;
    std::vector<float> mass;
    int64_t stride = 0;

    PagedKv kv() const {
        PagedKv kv;
        kv.k = k;
        kv.v = v;
        kv.dtype = KvDtype::F32;
        kv.positions = positions.data();
        kv.page_table = page_table.data();
        kv.page_table_stride = stride;
        kv.page_size = kPage;
        kv.n_slots = n_slots.data();
        kv.n_head_kv = kKvHeads;
        kv.head_dim = kDim;
        return kv;
    }
};

Layer make_layer(int64_t n, bool huge, std::mt19937& rng) {
    Layer L;
    L.stride = (n + kPage - 1) / kPage;
    const int64_t pages = kKvHeads * L.stride;
    std::vector<int32_t> ids(pages);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    L.page_table = ids;
    L.n_slots.assign(kKvHeads, int32_t(n));
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    L.k_pool = std::make_unique<Pool>(pages * kPage * kDim, huge);
    L.v_pool = std::make_unique<Pool>(pages * kPage * kDim, huge);
    L.k = L.k_pool->data.get();
    L.v = L.v_pool->data.get();
    for (int64_t i = 0; i < pages * kPage * kDim; ++i) {
        L.k[i] = uni(rng);
        L.v[i] = uni(rng);
    }
    L.positions.resize(pages * kPage);
    for (int64_t g = 0; g < kKvHeads; ++g)
        for (int64_t s = 0; s < n; ++s)
            L.positions[int64_t(L.page_table[g * L.stride + s / kPage]) * kPage + s % kPage] = int32_t(s);
    L.mass.assign(kHeads * n, 0.0f);
    return L;
}

enum class Cache { Hot, Cold, ColdThp };

void BM_DecodeAttention(benchmark::State& state, CpuIsa isa, int64_t n, Cache cache, bool with_mass) {
    if (!kvscope::kernels::cpu_isa_supported(isa)) {
        state.SkipWithError("this CPU lacks AVX2");
        return;
    }
    std::mt19937 rng(42);
    std::vector<Layer> layers;
    const int64_t n_layers = cache == Cache::Hot ? 1 : kLayers;
    while (int64_t(layers.size()) < n_layers) layers.push_back(make_layer(n, cache == Cache::ColdThp, rng));
    std::vector<float> q(kHeads * kDim), out(kHeads * kDim);
    for (float& x : q) x = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
    const int32_t q_pos = int32_t(n);

    AttentionQueries qs;
    qs.q = q.data();
    qs.q_pos = &q_pos;
    qs.n_head = kHeads;
    qs.T = 1;
    qs.scale = float(1.0 / std::sqrt(double(kDim)));
    qs.out = out.data();
    qs.mass_stride = n;
    qs.mass_queries = with_mass ? 1 : 0;
    size_t next = 0;
    for (auto _ : state) {
        Layer& L = layers[next];
        qs.mass = with_mass ? L.mass.data() : nullptr;
        kvscope::kernels::paged_attention_cpu_with_isa(isa, L.kv(), qs, 0, kHeads);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
        if (++next == layers.size()) next = 0;
    }
    const int64_t bytes = kKvHeads * n * kDim * int64_t(sizeof(float)) * 2;
    state.SetBytesProcessed(state.iterations() * bytes);
    state.counters["GB/s"] =
        benchmark::Counter(double(bytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

const bool registered = [] {
    const CpuIsa best = kvscope::kernels::cpu_isa();
    const std::string best_name = best == CpuIsa::Avx2 ? "avx2" : "scalar";
    for (int64_t n : {512, 2048, 8192}) {
        for (Cache cache : {Cache::Hot, Cache::Cold, Cache::ColdThp}) {
            for (bool mass : {true, false}) {
                const char* cache_name = cache == Cache::Hot ? "/hot" : cache == Cache::Cold ? "/cold" : "/cold_thp";
                const std::string name = "BM_DecodeAttention/" + best_name + "/ctx" + std::to_string(n) + cache_name +
                                         (mass ? "/mass" : "/nomass");
                benchmark::RegisterBenchmark(name.c_str(), BM_DecodeAttention, best, n, cache, mass)
                    ->Unit(benchmark::kMicrosecond);
            }
        }
    }
    if (best != CpuIsa::Scalar)
        for (int64_t n : {2048, 8192})
            benchmark::RegisterBenchmark(("BM_DecodeAttention/scalar/ctx" + std::to_string(n) + "/hot/mass").c_str(),
                                         BM_DecodeAttention, CpuIsa::Scalar, n, Cache::Hot, true)
                ->Unit(benchmark::kMicrosecond);
    return true;
}();

} // namespace
