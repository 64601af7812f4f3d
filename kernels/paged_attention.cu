// Paged attention on CUDA (see paged_attention.h): the GPU twin of paged_attention.cpp.
//
// [SECTION] index
//   [1] Element loads and layouts (which lanes hold which elements of a row)
//   [2] The kernel: pass 1, the merges, pass 2
//   [3] Launch: layout, block width and cluster size; the entry point
//
// One thread block per (query, query head); in decode, where that makes only n_head
// blocks, a cluster of up to 8 blocks (Hopper) shares each one, splitting its slots. A slot
// is handled by a group of kG lanes that each hold kE elements of the query, the key and
// the value; a warp covers 32 / kG consecutive slots per load, so its reads are contiguous,
// and it loads kUnroll such sets before using any (decode is latency-bound: bytes in flight
// are what counts). The dot product is a reduction over the group's lanes.
//   pass 1  online softmax per group: a running max m, sum l and output o over its slots;
//           the groups then merge inside the warp (shuffles), the warps through shared
//           memory and the blocks of a cluster through distributed shared memory, giving
//           out and the final max M and sum L;
//   pass 2  only when this query adds mass: prob = exp(score - M) / L, one atomicAdd per
//           visible slot. The scores come from shared memory, where pass 1 left them, when
//           the head's page table fits there; otherwise they are computed again (the same
//           code, so the same bits).
// Layouts: where a row is a whole number of 16-byte vectors (head_dim 32, 64, 128, 256 in
// any type) and the pointers are 16-byte aligned, lanes load 16 bytes at a time; any other
// head_dim <= 256 takes one element per lane and load, 32 lanes per slot.
// H100, SmolLM2 shape (9 heads, 3 KV heads, head_dim 64), bf16, one layer, pages of 16
// scattered: decode 11 us at 512 slots, 21 us at 8192 (300 GB/s of keys and values), 60 us
// at 32768 (tests/test_paged_attention_cuda.cpp prints these). Prefill is correct but not
// tiled: every (query, head) block reads the head's keys again (from L2), 2.9 ms for a
// 2048-token prompt; a tensor-core tiled kernel would be the next step for long prompts.
#include "kernels/paged_attention.h"

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace kvscope::kernels {

namespace {

// Warps per block: decode has only n_head blocks (each also a cluster of up to 8), so they
// are wide; prefill has n_head * T blocks, and narrow ones let several share a
// multiprocessor, hiding each other's memory latency.
constexpr int kDecodeWarps = 16, kPrefillWarps = 4;
constexpr int kMaxDim = 256;
constexpr int64_t kMaxSharedScores = 40960; // slots whose scores pass 1 keeps (160 KiB)
constexpr int64_t kMaxSharedPages = 8192;    // page ids staged in shared memory (32 KiB)

// =======================================================================================
// [1] Element loads and layouts

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// 16 bytes at p (16-byte aligned) as floats.
__device__ __forceinline__ void load16(const float* p, float* out) {
    const float4 x = __ldg(reinterpret_cast<const float4*>(p));
    out[0] = x.x, out[1] = x.y, out[2] = x.z, out[3] = x.w;
}
__device__ __forceinline__ void load16(const __half* p, float* out) {
    const uint4 x = __ldg(reinterpret_cast<const uint4*>(p));
    const __half2* h = reinterpret_cast<const __half2*>(&x);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(h[i]);
        out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ void load16(const __nv_bfloat16* p, float* out) {
    const uint4 x = __ldg(reinterpret_cast<const uint4*>(p));
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&x);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(h[i]);
        out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
}

// Slot sets a warp loads before using any: as many as the registers allow.
__host__ __device__ constexpr int unroll_for(int elements_per_lane) { return elements_per_lane <= 8 ? 4 : 2; }

// Which elements of a row lane gl of a slot's group holds, and how it loads them.
// Vectors: kG lanes per slot, kNV 16-byte vectors per lane (vector gl + kG * i).
template <typename T, int kGroup, int kVectors>
struct Vectors {
    static constexpr int kG = kGroup;
    static constexpr int kPer = 16 / int(sizeof(T));
    static constexpr int kE = kVectors * kPer;
    __device__ static int64_t index(int gl, int e) { return int64_t(gl + kG * (e / kPer)) * kPer + e % kPer; }
    __device__ static bool valid(int64_t, int64_t) { return true; }
    __device__ static void load(const T* row, int gl, int64_t, float* out) {
#pragma unroll
        for (int i = 0; i < kVectors; ++i) load16(row + int64_t(gl + kG * i) * kPer, out + i * kPer);
    }
};
// Elements: 32 lanes per slot, element gl + 32 * e, any head_dim <= 32 * kPerLane.
template <typename T, int kPerLane>
struct Elements {
    static constexpr int kG = 32;
    static constexpr int kE = kPerLane;
    __device__ static int64_t index(int gl, int e) { return gl + 32 * e; }
    __device__ static bool valid(int64_t i, int64_t dim) { return i < dim; }
    __device__ static void load(const T* row, int gl, int64_t dim, float* out) {
#pragma unroll
        for (int e = 0; e < kPerLane; ++e) out[e] = gl + 32 * e < dim ? to_float(row[gl + 32 * e]) : 0.0f;
    }
};

// =======================================================================================
// [2] The kernel

// paged_attention_cuda's arguments, by value.
struct Args {
    const void* k;
    const void* v;
    const int32_t* positions;
    const int32_t* page_table;
    int64_t page_table_stride, page_size;
    const int32_t* n_slots;
    int64_t head_dim;
    const void* q;
    const int32_t* q_pos;
    int64_t group, T, window;
    float scale;
    void* out;
    float* mass;
    int64_t mass_stride, mass_queries;
    float* lse;
    bool shared_scores; // pass 1 keeps the scores in dynamic shared memory (capacity floats)
    bool shared_pages;  // the head's page ids are staged in shared memory after them
};

// Online-softmax state (m, l, o) of b merged into a's (both over disjoint slot sets).
template <int kE>
__device__ __forceinline__ void merge(float& m, float& l, float* o, float m2, float l2, const float* o2) {
    const float mm = fmaxf(m, m2);
    if (mm == -INFINITY) return; // both empty
    const float c1 = expf(m - mm), c2 = expf(m2 - mm);
    l = l * c1 + l2 * c2;
#pragma unroll
    for (int e = 0; e < kE; ++e) o[e] = o[e] * c1 + o2[e] * c2;
    m = mm;
}

template <typename T, typename Layout, int kWarps>
__global__ void __launch_bounds__(kWarps * 32) paged_attention_kernel(Args a) {
    constexpr int kG = Layout::kG, kE = Layout::kE, kGroups = 32 / kG;
    constexpr int kUnroll = unroll_for(kE);
    constexpr int kStep = kWarps * kGroups * kUnroll; // slots per block step
    extern __shared__ float dynamic_shared[];
    __shared__ float warp_m[kWarps], warp_l[kWarps];
    __shared__ float warp_o[kWarps][kMaxDim];
    __shared__ float block_ml[2], block_o[kMaxDim], final_ml[2];

    // A cluster of blocks (Hopper) may share one (query, head): rank r takes steps r,
    // r + n_ranks, ... and rank 0 merges the blocks' results through distributed shared
    // memory. Elsewhere, and when the launch asks for none, a cluster is one block.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    const int rank = int(cluster.block_rank()), n_ranks = int(cluster.num_blocks());
    auto remote = [&](float* p, int r) { return n_ranks > 1 ? cluster.map_shared_rank(p, r) : p; };
    auto sync_cluster = [&] { n_ranks > 1 ? cluster.sync() : __syncthreads(); };
#else
    const int rank = 0, n_ranks = 1;
    auto remote = [](float* p, int) { return p; };
    auto sync_cluster = [] { __syncthreads(); };
#endif
    const int64_t first_step = int64_t(rank) * kStep, step_stride = int64_t(n_ranks) * kStep;

    const int64_t t = blockIdx.x / n_ranks, h = blockIdx.y, g = h / a.group;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gl = lane % kG, grp = lane / kG;
    const int64_t dim = a.head_dim, ps = a.page_size;
    const int64_t n = a.n_slots[g];
    const int64_t capacity = a.page_table_stride * ps;
    float* shared_scores = dynamic_shared;
    // Page ids from shared memory: a slot's row costs no memory round trip before its
    // key and value loads can go out.
    const int32_t* pages = a.page_table + g * a.page_table_stride;
    if (a.shared_pages) {
        int32_t* staged = reinterpret_cast<int32_t*>(dynamic_shared + (a.shared_scores ? capacity : 0));
        const int64_t n_pages = (n + ps - 1) / ps;
        for (int64_t i = threadIdx.x; i < n_pages; i += blockDim.x) staged[i] = pages[i];
        __syncthreads();
        pages = staged;
    }
    const T* K = static_cast<const T*>(a.k);
    const T* V = static_cast<const T*>(a.v);
    const int64_t newest = a.q_pos[t];
    const int64_t oldest = a.window > 0 ? max(newest - a.window, int64_t(-1)) : -1; // position -1: a hole

    float q[kE];
    Layout::load(static_cast<const T*>(a.q) + (h * a.T + t) * dim, gl, dim, q);

    // Slot u of this group in the step at `base`, and its pool row; false past the end.
    auto locate = [&](int64_t base, int u, int64_t& s, int64_t& row) {
        s = base + (int64_t(warp) * kUnroll + u) * kGroups + grp;
        if (s >= n) return false;
        row = int64_t(pages[s / ps]) * ps + s % ps;
        return true;
    };
    auto sees = [&](int64_t row) {
        const int64_t pos = a.positions[row];
        return pos <= newest && pos > oldest;
    };
    // scale * q . k over the group's lanes (all lanes of the warp call it).
    auto group_score = [&](const float* k) {
        float d = 0.0f;
#pragma unroll
        for (int e = 0; e < kE; ++e) d = fmaf(q[e], k[e], d);
#pragma unroll
        for (int off = kG / 2; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
        return d * a.scale;
    };

    // ---- pass 1
    float m = -INFINITY, l = 0.0f, o[kE];
#pragma unroll
    for (int e = 0; e < kE; ++e) o[e] = 0.0f;
    for (int64_t base = first_step; base < n; base += step_stride) {
        int64_t s[kUnroll], row[kUnroll];
        bool seen[kUnroll];
        float kk[kUnroll][kE], vv[kUnroll][kE];
        bool listed[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) listed[u] = locate(base, u, s[u], row[u]);
        // Decode loads every listed slot's key and value with its position, not after it:
        // one memory round trip per step (a listed row is always safe to read). Prefill
        // reads the positions first and skips what the warp does not see (causal: half).
        if (a.T > 1) {
            bool any = false;
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                listed[u] = listed[u] && sees(row[u]);
                any = any || listed[u];
            }
            if (!__any_sync(0xffffffffu, any)) {
                if (a.shared_scores && gl == 0)
#pragma unroll
                    for (int u = 0; u < kUnroll; ++u)
                        if (s[u] < n) shared_scores[s[u]] = -INFINITY;
                continue;
            }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            seen[u] = listed[u];
            if (seen[u]) {
                Layout::load(K + row[u] * dim, gl, dim, kk[u]);
                Layout::load(V + row[u] * dim, gl, dim, vv[u]);
                if (a.T == 1) seen[u] = sees(row[u]);
                if (!seen[u])
#pragma unroll
                    for (int e = 0; e < kE; ++e) vv[u][e] = 0.0f;
            } else {
#pragma unroll
                for (int e = 0; e < kE; ++e) kk[u][e] = vv[u][e] = 0.0f;
            }
        }
        float sc[kUnroll];
        float m_new = m;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const float d = group_score(kk[u]); // every lane: the shuffles span the warp
            sc[u] = seen[u] ? d : -INFINITY;
            m_new = fmaxf(m_new, sc[u]);
            if (a.shared_scores && gl == 0 && s[u] < n) shared_scores[s[u]] = sc[u];
        }
        if (m_new == -INFINITY) continue; // nothing seen yet by this group
        const float c = expf(m - m_new);  // 0 while m is -inf
        l *= c;
#pragma unroll
        for (int e = 0; e < kE; ++e) o[e] *= c;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const float p = expf(sc[u] - m_new); // 0 for unseen slots
            l += p;
#pragma unroll
            for (int e = 0; e < kE; ++e) o[e] = fmaf(p, vv[u][e], o[e]);
        }
        m = m_new;
    }

    // ---- merge: the groups of a warp (lanes gl of every group hold the same elements),
    // then the warps, then the blocks of the cluster
#pragma unroll
    for (int off = kG; off < 32; off <<= 1) {
        float o2[kE];
#pragma unroll
        for (int e = 0; e < kE; ++e) o2[e] = __shfl_xor_sync(0xffffffffu, o[e], off);
        const float m2 = __shfl_xor_sync(0xffffffffu, m, off), l2 = __shfl_xor_sync(0xffffffffu, l, off);
        merge<kE>(m, l, o, m2, l2, o2);
    }
    if (lane == 0) {
        warp_m[warp] = m;
        warp_l[warp] = l;
    }
    if (grp == 0) {
#pragma unroll
        for (int e = 0; e < kE; ++e) {
            const int64_t i = Layout::index(gl, e);
            if (Layout::valid(i, dim)) warp_o[warp][i] = o[e];
        }
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, warp_m[w]);
    float L = 0.0f;
    if (M != -INFINITY)
        for (int w = 0; w < kWarps; ++w) L += warp_l[w] * expf(warp_m[w] - M);
    for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
        float acc = 0.0f; // the block's output, not yet divided by L
        if (M != -INFINITY)
            for (int w = 0; w < kWarps; ++w)
                if (warp_m[w] != -INFINITY) acc += warp_o[w][d] * expf(warp_m[w] - M);
        block_o[d] = acc;
    }
    if (threadIdx.x == 0) block_ml[0] = M, block_ml[1] = L;
    sync_cluster();
    if (rank == 0) {
        float Mc = -INFINITY, Lc = 0.0f;
        for (int r = 0; r < n_ranks; ++r) Mc = fmaxf(Mc, remote(block_ml, r)[0]);
        if (Mc != -INFINITY)
            for (int r = 0; r < n_ranks; ++r) Lc += remote(block_ml, r)[1] * expf(remote(block_ml, r)[0] - Mc);
        T* out = static_cast<T*>(a.out) + (h * a.T + t) * dim;
        for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
            float acc = 0.0f;
            if (Mc != -INFINITY) {
                for (int r = 0; r < n_ranks; ++r) {
                    const float mr = remote(block_ml, r)[0];
                    if (mr != -INFINITY) acc += remote(block_o, r)[d] * expf(mr - Mc);
                }
                acc /= Lc;
            }
            out[d] = from_float<T>(acc); // a query that sees nothing gets zeros
        }
        if (threadIdx.x == 0) final_ml[0] = Mc, final_ml[1] = Lc;
        if (threadIdx.x == 0 && a.lse) a.lse[h * a.T + t] = Mc == -INFINITY ? -INFINITY : Mc + logf(Lc);
    }
    sync_cluster();
    M = remote(final_ml, 0)[0];
    L = remote(final_ml, 0)[1];
    sync_cluster(); // rank 0's shared memory stays until every block has read it

    // ---- pass 2: mass
    if (!a.mass || t < a.T - a.mass_queries || M == -INFINITY) return;
    float* mass = a.mass + h * a.mass_stride;
    const float inv_l = 1.0f / L;
    if (a.shared_scores) { // this block's slots, written before the barriers above
        for (int64_t base = first_step; base < n; base += step_stride)
            for (int64_t s = base + threadIdx.x; s < min(base + kStep, n); s += blockDim.x) {
                const float sc = shared_scores[s];
                if (sc != -INFINITY) atomicAdd(mass + s, expf(sc - M) * inv_l);
            }
        return;
    }
    for (int64_t base = first_step; base < n; base += step_stride) {
        int64_t s[kUnroll], row[kUnroll];
        bool seen[kUnroll];
        float kk[kUnroll][kE];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            seen[u] = locate(base, u, s[u], row[u]);
            if (seen[u]) {
                Layout::load(K + row[u] * dim, gl, dim, kk[u]);
                seen[u] = sees(row[u]);
            } else
#pragma unroll
                for (int e = 0; e < kE; ++e) kk[u][e] = 0.0f;
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const float sc = group_score(kk[u]);
            if (seen[u] && gl == 0) atomicAdd(mass + s[u], expf(sc - M) * inv_l);
        }
    }
}

// =======================================================================================
// [3] Launch

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess)
        throw std::runtime_error(std::string("paged_attention_cuda: ") + what + ": " + cudaGetErrorString(err));
}

// The device's multiprocessor count, and whether it and `kernel`'s machine code run
// thread block clusters (compute capability 9.0 on both sides).
struct DeviceInfo {
    int sm_count = 1;
    bool clusters = false;
};
DeviceInfo device_info(const void* kernel) {
    DeviceInfo info;
    int device = 0, major = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&info.sm_count, cudaDevAttrMultiProcessorCount, device), "device attribute");
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "device attribute");
    cudaFuncAttributes attr{};
    check(cudaFuncGetAttributes(&attr, kernel), "cudaFuncGetAttributes");
    info.clusters = major >= 9 && attr.binaryVersion >= 90;
    return info;
}

template <typename T, typename Layout, int kWarps>
void launch_warps(const Args& args, int64_t n_head, cudaStream_t stream, size_t shared_bytes) {
    const auto kernel = paged_attention_kernel<T, Layout, kWarps>;
    // Per process, from the first device used (DESIGN.md: one process, one GPU).
    static const DeviceInfo info = device_info(reinterpret_cast<const void*>(kernel));
    static std::atomic<size_t> shared_allowed{0}; // dynamic bytes the kernel is cleared for
    if (shared_bytes > shared_allowed) {
        check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared_bytes)),
              "shared memory");
        shared_allowed = shared_bytes;
    }
    // Decode has n_head blocks for ~132 multiprocessors: give each (query, head) a cluster
    // of up to 8 blocks, while the blocks fit on the device twice over and each gets work.
    constexpr int64_t kStep = kWarps * (32 / Layout::kG) * unroll_for(Layout::kE);
    const int64_t blocks = args.T * n_head, capacity = args.page_table_stride * args.page_size;
    unsigned ranks = 1;
    if (info.clusters)
        while (ranks < 8 && blocks * ranks * 2 <= info.sm_count && capacity > ranks * kStep) ranks *= 2;
    const dim3 grid(static_cast<unsigned>(args.T) * ranks, static_cast<unsigned>(n_head));
    if (ranks == 1) {
        kernel<<<grid, kWarps * 32, shared_bytes, stream>>>(args);
        return;
    }
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = dim3(kWarps * 32);
    config.dynamicSmemBytes = shared_bytes;
    config.stream = stream;
    cudaLaunchAttribute cluster{};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = ranks;
    cluster.val.clusterDim.y = 1;
    cluster.val.clusterDim.z = 1;
    config.attrs = &cluster;
    config.numAttrs = 1;
    check(cudaLaunchKernelEx(&config, kernel, args), "cluster launch");
}

template <typename T, typename Layout>
void launch_layout(const Args& args, int64_t n_head, cudaStream_t stream, size_t shared_bytes) {
    if (args.T * n_head >= 256) return launch_warps<T, Layout, kPrefillWarps>(args, n_head, stream, shared_bytes);
    launch_warps<T, Layout, kDecodeWarps>(args, n_head, stream, shared_bytes);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T>
void launch(const Args& args, int64_t n_head, cudaStream_t stream, size_t shared_bytes) {
    const int64_t vectors = args.head_dim * int64_t(sizeof(T)) / 16;
    const bool vec = args.head_dim * int64_t(sizeof(T)) % 16 == 0 && aligned16(args.k) && aligned16(args.v) &&
                     aligned16(args.q);
    if (vec && vectors == 4) return launch_layout<T, Vectors<T, 4, 1>>(args, n_head, stream, shared_bytes);
    if (vec && vectors == 8) return launch_layout<T, Vectors<T, 8, 1>>(args, n_head, stream, shared_bytes);
    if (vec && vectors == 16) return launch_layout<T, Vectors<T, 16, 1>>(args, n_head, stream, shared_bytes);
    if (vec && vectors == 32) return launch_layout<T, Vectors<T, 32, 1>>(args, n_head, stream, shared_bytes);
    if (vec && vectors == 64) return launch_layout<T, Vectors<T, 32, 2>>(args, n_head, stream, shared_bytes);
    if (args.head_dim <= 64) return launch_layout<T, Elements<T, 2>>(args, n_head, stream, shared_bytes);
    if (args.head_dim <= 128) return launch_layout<T, Elements<T, 4>>(args, n_head, stream, shared_bytes);
    return launch_layout<T, Elements<T, 8>>(args, n_head, stream, shared_bytes);
}

} // namespace

void paged_attention_cuda(const PagedKv& kv, const AttentionQueries& qs, void* cuda_stream) {
    check_paged_attention(kv, qs);
    if (kv.head_dim > kMaxDim)
        throw std::invalid_argument("paged_attention_cuda: head_dim " + std::to_string(kv.head_dim) + " > " +
                                    std::to_string(kMaxDim));
    if (qs.T > INT_MAX / 8 || qs.n_head > 65535)
        throw std::invalid_argument("paged_attention_cuda: T or n_head beyond the launch grid");
    if (qs.T == 0) return;
    Args args{};
    args.k = kv.k;
    args.v = kv.v;
    args.positions = kv.positions;
    args.page_table = kv.page_table;
    args.page_table_stride = kv.page_table_stride;
    args.page_size = kv.page_size;
    args.n_slots = kv.n_slots;
    args.head_dim = kv.head_dim;
    args.q = qs.q;
    args.q_pos = qs.q_pos;
    args.group = qs.n_head / kv.n_head_kv;
    args.T = qs.T;
    args.window = qs.window;
    args.scale = qs.scale;
    args.out = qs.out;
    args.mass = qs.mass;
    args.mass_stride = qs.mass_stride;
    args.mass_queries = qs.mass_queries;
    args.lse = qs.lse;
    // n_slots lives on the device: the page table's capacity bounds it.
    const int64_t capacity = kv.page_table_stride * kv.page_size;
    args.shared_scores = qs.mass && qs.mass_queries > 0 && capacity <= kMaxSharedScores;
    args.shared_pages = kv.page_table_stride <= kMaxSharedPages;
    const size_t shared_bytes = (args.shared_scores ? size_t(capacity) * sizeof(float) : 0) +
                                (args.shared_pages ? size_t(kv.page_table_stride) * sizeof(int32_t) : 0);
    const auto stream = static_cast<cudaStream_t>(cuda_stream);
    switch (kv.dtype) {
    case KvDtype::F32: launch<float>(args, qs.n_head, stream, shared_bytes); break;
    case KvDtype::F16: launch<__half>(args, qs.n_head, stream, shared_bytes); break;
    case KvDtype::BF16: launch<__nv_bfloat16>(args, qs.n_head, stream, shared_bytes); break;
    }
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
        throw std::runtime_error(std::string("paged_attention_cuda: launch failed: ") + cudaGetErrorString(err));
}

} // namespace kvscope::kernels
