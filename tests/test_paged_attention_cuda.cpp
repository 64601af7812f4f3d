// paged_attention_cuda against paged_attention_cpu (itself tested against a double
// reference in test_paged_attention.cpp), on the same random paged stores: scattered
// pages, NaN in every pool row no head lists, positions with gaps and holes (negative),
// heads of different lengths, window on and off, T = 1 and 37, mass_queries 0, 1 and T;
// decode lengths up to 40k slots (clusters of blocks on Hopper, scores kept in shared
// memory or computed again).
//
// Tolerances. F32: |out - cpu| <= 1e-5 (outputs are O(1): weighted means of values in
// [-1, 1]) and mass within 1e-5 relative + 1e-7; only the summation order differs. F16 /
// BF16: keys, values and queries are rounded to the type first and the CPU runs on the
// rounded values, so the GPU differs by its fp32 summation order and the rounding of out to
// the type: |out - cpu| <= 2e-3 (F16, 2^-11 relative) and 8e-3 (BF16, 2^-8 relative);
// mass stays fp32 on both sides: 1e-5 relative + 1e-7.
//
// Needs a CUDA device (label gpu); skips without one. Also prints decode timings on the
// default model's shape.
#include "kernels/paged_attention.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

using kvscope::kernels::AttentionQueries;
using kvscope::kernels::KvDtype;
using kvscope::kernels::PagedKv;

#define CUDA_OK(call)                                                                                  \
    do {                                                                                               \
        const cudaError_t err_ = (call);                                                               \
        ASSERT_EQ(err_, cudaSuccess) << #call << ": " << cudaGetErrorString(err_);                     \
    } while (0)

bool have_gpu() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Device memory holding a copy of a host vector.
class DeviceBuffer {
  public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
        if (cudaMalloc(&ptr_, std::max<size_t>(bytes, 1)) != cudaSuccess) ptr_ = nullptr;
    }
    template <typename T>
    explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size() * sizeof(T)) {
        if (ptr_) cudaMemcpy(ptr_, host.data(), bytes_, cudaMemcpyHostToDevice);
    }
    DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        std::swap(ptr_, o.ptr_);
        std::swap(bytes_, o.bytes_);
        return *this;
    }
    ~DeviceBuffer() {
        if (ptr_) cudaFree(ptr_);
    }
    void* get() const { return ptr_; }
    template <typename T>
    std::vector<T> to_host() const {
        std::vector<T> out(bytes_ / sizeof(T));
        cudaMemcpy(out.data(), ptr_, bytes_, cudaMemcpyDeviceToHost);
        return out;
    }

  private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

// ---------------------------------------------------------------------------------------
// Storage types on the host

uint16_t to_bf16(float f) { // round to nearest even (inputs are finite or NaN)
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if (std::isnan(f)) return 0x7fc0;
    return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t h) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
uint16_t to_fp16(float f) { // normal range only (|f| <= 2, or NaN), round to nearest even
    if (std::isnan(f)) return 0x7e00;
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const int32_t exponent = int32_t((u >> 23) & 0xff) - 127 + 15;
    uint32_t mantissa = u & 0x7fffffu;
    if (exponent <= 0) return static_cast<uint16_t>(sign); // tiny: flush (not produced here)
    uint32_t h = (uint32_t(exponent) << 10) | (mantissa >> 13);
    const uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
}
float from_fp16(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    uint32_t u;
    if (exponent == 0x1f) u = sign | 0x7f800000u | (mantissa << 13);
    else if (exponent == 0) {
        const float m = float(mantissa) * 0x1p-24f;
        return sign ? -m : m;
    } else u = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Rounds every value to `dtype` in place; returns the stored bits (empty for F32).
std::vector<uint16_t> round_to(KvDtype dtype, std::vector<float>& x) {
    std::vector<uint16_t> bits;
    if (dtype == KvDtype::F32) return bits;
    bits.resize(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
        bits[i] = dtype == KvDtype::BF16 ? to_bf16(x[i]) : to_fp16(x[i]);
        x[i] = dtype == KvDtype::BF16 ? from_bf16(bits[i]) : from_fp16(bits[i]);
    }
    return bits;
}

std::string dtype_name(KvDtype d) { return d == KvDtype::F32 ? "f32" : d == KvDtype::F16 ? "f16" : "bf16"; }

// ---------------------------------------------------------------------------------------
// A random store (as in test_paged_attention.cpp)

struct Shape {
    int64_t n_head, n_head_kv, head_dim, page_size;
    std::vector<int64_t> n_old;
    int64_t T, window;
};

struct Store {
    Shape shape;
    int64_t stride = 0;
    std::vector<float> k, v, q;
    std::vector<int32_t> positions, page_table, n_slots, q_pos;
    int64_t max_slots() const { return *std::max_element(n_slots.begin(), n_slots.end()); }
};

Store make_store(const Shape& sh, std::mt19937& rng) {
    Store st;
    st.shape = sh;
    const int64_t G = sh.n_head_kv, D = sh.head_dim, ps = sh.page_size;
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    const int64_t P0 = 2 * *std::max_element(sh.n_old.begin(), sh.n_old.end()) + 5;
    std::vector<std::vector<int32_t>> pos(G);
    int64_t pages_total = 0, most_pages = 0;
    for (int64_t g = 0; g < G; ++g) {
        std::vector<int32_t> all(P0);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        pos[g].assign(all.begin(), all.begin() + sh.n_old[g]);
        std::sort(pos[g].begin(), pos[g].end());
        for (int64_t t = 0; t < sh.T; ++t) pos[g].push_back(int32_t(P0 + t));
        const int64_t pages = (int64_t(pos[g].size()) + ps - 1) / ps;
        pages_total += pages;
        most_pages = std::max(most_pages, pages);
    }
    const int64_t capacity = pages_total + 3;
    std::vector<int32_t> ids(capacity);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    st.stride = most_pages + 1;
    st.page_table.assign(G * st.stride, std::numeric_limits<int32_t>::max() / 2);
    st.k.assign(capacity * ps * D, std::numeric_limits<float>::quiet_NaN());
    st.v = st.k;
    st.positions.assign(capacity * ps, 0);
    size_t next = 0;
    for (int64_t g = 0; g < G; ++g) {
        const int64_t n = int64_t(pos[g].size());
        st.n_slots.push_back(int32_t(n));
        for (int64_t p = 0; p < (n + ps - 1) / ps; ++p) st.page_table[g * st.stride + p] = ids[next++];
        for (int64_t s = 0; s < n; ++s) {
            const int64_t r = int64_t(st.page_table[g * st.stride + s / ps]) * ps + s % ps;
            st.positions[r] = pos[g][s];
            for (int64_t d = 0; d < D; ++d) {
                st.k[r * D + d] = uni(rng);
                st.v[r * D + d] = uni(rng);
            }
        }
    }
    st.q.resize(sh.n_head * sh.T * D);
    for (float& x : st.q) x = uni(rng);
    for (int64_t t = 0; t < sh.T; ++t) st.q_pos.push_back(int32_t(P0 + t));
    return st;
}

PagedKv kv_view(const Store& st, KvDtype dtype, const void* k, const void* v, const int32_t* positions,
                const int32_t* page_table, const int32_t* n_slots) {
    PagedKv kv;
    kv.k = k;
    kv.v = v;
    kv.dtype = dtype;
    kv.positions = positions;
    kv.page_table = page_table;
    kv.page_table_stride = st.stride;
    kv.page_size = st.shape.page_size;
    kv.n_slots = n_slots;
    kv.n_head_kv = st.shape.n_head_kv;
    kv.head_dim = st.shape.head_dim;
    return kv;
}

AttentionQueries queries_view(const Store& st, const void* q, const int32_t* q_pos, void* out, float* mass,
                              int64_t mass_stride, int64_t mass_queries) {
    AttentionQueries qs;
    qs.q = q;
    qs.q_pos = q_pos;
    qs.n_head = st.shape.n_head;
    qs.T = st.shape.T;
    qs.window = st.shape.window;
    qs.scale = float(1.0 / std::sqrt(double(st.shape.head_dim)));
    qs.out = out;
    qs.mass = mass;
    qs.mass_stride = mass_stride;
    qs.mass_queries = mass_queries;
    return qs;
}

// Runs both kernels on `st` (its k, v, q rounded to dtype first) and compares.
void compare(Store st, KvDtype dtype, int64_t mass_queries, const std::string& what) {
    const Shape& sh = st.shape;
    const int64_t D = sh.head_dim, S = st.max_slots() + 2;
    const std::vector<uint16_t> k16 = round_to(dtype, st.k), v16 = round_to(dtype, st.v), q16 = round_to(dtype, st.q);

    // CPU on the rounded values
    std::vector<float> cpu_out(sh.n_head * sh.T * D), cpu_mass(sh.n_head * S, 0.0f);
    kvscope::kernels::paged_attention_cpu(
        kv_view(st, KvDtype::F32, st.k.data(), st.v.data(), st.positions.data(), st.page_table.data(),
                st.n_slots.data()),
        queries_view(st, st.q.data(), st.q_pos.data(), cpu_out.data(), mass_queries ? cpu_mass.data() : nullptr, S,
                     mass_queries),
        0, sh.n_head);

    // GPU
    const bool f32 = dtype == KvDtype::F32;
    DeviceBuffer k = f32 ? DeviceBuffer(st.k) : DeviceBuffer(k16), v = f32 ? DeviceBuffer(st.v) : DeviceBuffer(v16);
    DeviceBuffer q = f32 ? DeviceBuffer(st.q) : DeviceBuffer(q16);
    DeviceBuffer positions(st.positions), page_table(st.page_table), n_slots(st.n_slots), q_pos(st.q_pos);
    DeviceBuffer out(sh.n_head * sh.T * D * (f32 ? 4 : 2));
    DeviceBuffer mass(std::vector<float>(sh.n_head * S, 0.0f));
    ASSERT_TRUE(k.get() && v.get() && q.get() && out.get() && mass.get());
    kvscope::kernels::paged_attention_cuda(
        kv_view(st, dtype, k.get(), v.get(), static_cast<const int32_t*>(positions.get()),
                static_cast<const int32_t*>(page_table.get()), static_cast<const int32_t*>(n_slots.get())),
        queries_view(st, q.get(), static_cast<const int32_t*>(q_pos.get()), out.get(),
                     mass_queries ? static_cast<float*>(mass.get()) : nullptr, S, mass_queries),
        nullptr);
    CUDA_OK(cudaDeviceSynchronize());

    std::vector<float> gpu_out;
    if (f32) {
        gpu_out = out.to_host<float>();
    } else {
        for (uint16_t b : out.to_host<uint16_t>()) gpu_out.push_back(dtype == KvDtype::BF16 ? from_bf16(b) : from_fp16(b));
    }
    const std::vector<float> gpu_mass = mass.to_host<float>();
    const double out_tol = f32 ? 1e-5 : dtype == KvDtype::F16 ? 2e-3 : 8e-3;
    int failures = 0;
    for (size_t i = 0; i < cpu_out.size() && failures < 5; ++i)
        if (!(std::fabs(double(gpu_out[i]) - cpu_out[i]) <= out_tol) && ++failures <= 5)
            ADD_FAILURE() << what << ": out[" << i / (sh.T * D) << ", " << (i / D) % sh.T << ", " << i % D
                          << "] gpu " << gpu_out[i] << " cpu " << cpu_out[i];
    for (size_t i = 0; i < cpu_mass.size() && failures < 5; ++i)
        if (!(std::fabs(double(gpu_mass[i]) - cpu_mass[i]) <= 1e-5 * cpu_mass[i] + 1e-7) && ++failures <= 5)
            ADD_FAILURE() << what << ": mass[" << i / S << ", " << i % S << "] gpu " << gpu_mass[i] << " cpu "
                          << cpu_mass[i];
    EXPECT_EQ(failures, 0) << what;
}

// ---------------------------------------------------------------------------------------

// Mean time of one call in microseconds, after `warmup` calls, by CUDA events.
double microseconds_per_call(const PagedKv& kv, const AttentionQueries& qs, int warmup, int reps) {
    for (int i = 0; i < warmup; ++i) kvscope::kernels::paged_attention_cuda(kv, qs, nullptr);
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    cudaEventRecord(start);
    for (int i = 0; i < reps; ++i) kvscope::kernels::paged_attention_cuda(kv, qs, nullptr);
    cudaEventRecord(stop);
    EXPECT_EQ(cudaEventSynchronize(stop), cudaSuccess) << "timing run failed";
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, stop);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return 1e3 * ms / reps;
}

TEST(PagedAttentionCuda, MatchesCpuKernel) {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
    std::mt19937 rng(77);
    struct Heads {
        int64_t n_head, n_head_kv;
        std::vector<int64_t> n_old;
    };
    const Heads heads[] = {{9, 3, {173, 40, 301}}, {24, 2, {65, 129}}, {4, 4, {33, 0, 7, 100}}};
    for (const Heads& hd : heads)
        for (int64_t head_dim : {64, 20, 128, 256})
            for (int64_t T : {1, 37})
                for (int64_t window : {0, 50}) {
                    const Shape sh{hd.n_head, hd.n_head_kv, head_dim, head_dim == 64 ? 16 : 5, hd.n_old, T, window};
                    const Store st = make_store(sh, rng);
                    for (KvDtype dtype : {KvDtype::F32, KvDtype::F16, KvDtype::BF16})
                        for (int64_t mq : {int64_t{0}, int64_t{1}, T})
                            compare(st, dtype, mq,
                                    dtype_name(dtype) + " n_head=" + std::to_string(sh.n_head) + "/" +
                                        std::to_string(sh.n_head_kv) + " D=" + std::to_string(head_dim) +
                                        " T=" + std::to_string(T) + " window=" + std::to_string(window) +
                                        " mass_queries=" + std::to_string(mq));
                }
}

TEST(PagedAttentionCuda, LongContextAndEmptyQueries) {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
    std::mt19937 rng(78);
    compare(make_store(Shape{9, 3, 64, 16, {8000, 2500, 5100}, 1, 0}, rng), KvDtype::F32, 1, "long f32");
    compare(make_store(Shape{9, 3, 64, 16, {8000, 2500, 5100}, 1, 0}, rng), KvDtype::BF16, 1, "long bf16");
    // past what shared memory holds: pass 2 computes the scores again
    compare(make_store(Shape{9, 3, 64, 16, {45000, 300, 20000}, 1, 0}, rng), KvDtype::BF16, 1, "longest bf16");
    compare(make_store(Shape{9, 3, 128, 16, {45000, 300, 20000}, 2, 100}, rng), KvDtype::F32, 2, "longest f32");
    Store holes = make_store(Shape{9, 3, 64, 16, {3000, 700, 1200}, 1, 0}, rng);
    for (int64_t g = 0; g < 3; ++g)
        for (int64_t s = 0; s < holes.n_slots[g]; s += 3)
            holes.positions[int64_t(holes.page_table[g * holes.stride + s / 16]) * 16 + s % 16] = -1;
    for (KvDtype dtype : {KvDtype::F32, KvDtype::BF16}) compare(holes, dtype, 1, "holes " + dtype_name(dtype));
    Store st = make_store(Shape{4, 2, 64, 16, {30, 50}, 3, 0}, rng);
    st.n_slots[1] = 0; // an empty head
    st.q_pos[0] = -1;  // a query before every key
    for (KvDtype dtype : {KvDtype::F32, KvDtype::BF16}) compare(st, dtype, 3, "sees nothing " + dtype_name(dtype));
}

TEST(PagedAttentionCuda, BadArgumentsThrow) {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
    std::mt19937 rng(79);
    const Store st = make_store(Shape{4, 2, 512, 4, {10, 12}, 1, 0}, rng);
    float dummy = 0.0f;
    const PagedKv kv = kv_view(st, KvDtype::BF16, &dummy, &dummy, st.positions.data(), st.page_table.data(),
                               st.n_slots.data());
    const AttentionQueries qs = queries_view(st, &dummy, st.q_pos.data(), &dummy, nullptr, 0, 0);
    EXPECT_THROW(kvscope::kernels::paged_attention_cuda(kv, qs, nullptr), std::invalid_argument) << "head_dim 512";
}

// Decode (and prefill) on the default model's shape (9 query heads, 3 KV heads, head_dim
// 64), one layer, pages of 16 scattered; prints time and bandwidth (keys + values read once).
TEST(PagedAttentionCuda, DecodeTimings) {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
    std::mt19937 rng(80);
    for (KvDtype dtype : {KvDtype::BF16, KvDtype::F32}) {
        for (int64_t ctx : {512, 2048, 8192, 32768}) {
            Store st = make_store(Shape{9, 3, 64, 16, {ctx - 1, ctx - 1, ctx - 1}, 1, 0}, rng);
            const int64_t S = st.max_slots();
            const bool f32 = dtype == KvDtype::F32;
            const std::vector<uint16_t> k16 = round_to(dtype, st.k), v16 = round_to(dtype, st.v),
                                        q16 = round_to(dtype, st.q);
            DeviceBuffer k = f32 ? DeviceBuffer(st.k) : DeviceBuffer(k16), v = f32 ? DeviceBuffer(st.v) : DeviceBuffer(v16);
            DeviceBuffer q = f32 ? DeviceBuffer(st.q) : DeviceBuffer(q16);
            DeviceBuffer positions(st.positions), page_table(st.page_table), n_slots(st.n_slots), q_pos(st.q_pos);
            DeviceBuffer out(9 * 64 * 4), mass(std::vector<float>(9 * S, 0.0f));
            const PagedKv kv = kv_view(st, dtype, k.get(), v.get(), static_cast<const int32_t*>(positions.get()),
                                       static_cast<const int32_t*>(page_table.get()),
                                       static_cast<const int32_t*>(n_slots.get()));
            for (int64_t mq : {0, 1}) {
                const AttentionQueries qs = queries_view(st, q.get(), static_cast<const int32_t*>(q_pos.get()),
                                                         out.get(), static_cast<float*>(mass.get()), S, mq);
                const double us = microseconds_per_call(kv, qs, 10, 200);
                const double bytes = 3.0 * double(S) * 64 * (f32 ? 4 : 2) * 2;
                std::printf("decode %-4s ctx %6lld mass %lld: %8.2f us  %7.1f GB/s (K+V)\n", dtype_name(dtype).c_str(),
                            static_cast<long long>(S), static_cast<long long>(mq), us, bytes / us * 1e-3);
            }
        }
    }
    // Prefill: a prompt of T tokens into an empty store, mass from the last 32 queries.
    for (int64_t T : {512, 2048}) {
        Store st = make_store(Shape{9, 3, 64, 16, {0, 0, 0}, T, 0}, rng);
        const std::vector<uint16_t> k16 = round_to(KvDtype::BF16, st.k), v16 = round_to(KvDtype::BF16, st.v),
                                    q16 = round_to(KvDtype::BF16, st.q);
        DeviceBuffer k(k16), v(v16), q(q16), positions(st.positions), page_table(st.page_table), n_slots(st.n_slots),
            q_pos(st.q_pos), out(9 * T * 64 * 2), mass(std::vector<float>(9 * T, 0.0f));
        const PagedKv kv = kv_view(st, KvDtype::BF16, k.get(), v.get(), static_cast<const int32_t*>(positions.get()),
                                   static_cast<const int32_t*>(page_table.get()),
                                   static_cast<const int32_t*>(n_slots.get()));
        const AttentionQueries qs = queries_view(st, q.get(), static_cast<const int32_t*>(q_pos.get()), out.get(),
                                                 static_cast<float*>(mass.get()), T, 32);
        std::printf("prefill bf16 T %5lld (causal, mass 32): %8.1f us per layer\n", static_cast<long long>(T),
                    microseconds_per_call(kv, qs, 3, 20));
    }
}

} // namespace
