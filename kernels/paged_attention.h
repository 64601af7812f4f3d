// Attention over the paged KV store (core/kv_store.h), decode and prefill alike, with the
// per-key attention mass that scorers read, and without forming attention matrices: each
// query row needs O(slots) scratch, never O(T x slots).
//
// Layout of one layer of the store. Keys and values are two pools of rows,
// [capacity_slots, head_dim], grouped into pages of page_size consecutive rows. KV head g
// owns n_slots[g] logical slots; slot s lives at pool row
//     page_table[g * page_table_stride + s / page_size] * page_size + s % page_size
// and holds the token at positions[row]. Heads hold different numbers of slots, and a
// head's pages need not be in pool order. Rows no head lists are never read; the rows of
// listed slots must hold finite numbers, also where a query does not see them (prefill's
// future tokens): the kernels may read them and weigh them by 0.
//
// For query head h (KV head g = h / (n_head / n_head_kv): the query heads of one KV head
// are adjacent, as in GQA checkpoints) and query t at position p = q_pos[t]:
//     visible(s)  = 0 <= pos(s) <= p  and, when window > 0, pos(s) > p - window
//     prob(s)     = softmax over visible s of scale * q[h,t] . k(s)   (max-subtracted)
//     out[h,t]    = sum_s prob(s) * v(s)
//     mass[h, s] += prob(s)   for the last mass_queries queries (t >= T - mass_queries)
//     lse[h, t]   = ln sum over visible s of exp(scale * q[h,t] . k(s))   (when asked: the
//                   store merges one more key, a compensation slot, into the softmax with it)
// A row whose position is negative is a hole (an evicted slot the store has not refilled):
// never visible.
// All arithmetic is fp32, whatever the storage type. A query that sees no key gets a zero
// output and adds no mass (the store never asks for one; it must not turn into NaN).
// Invisible slots add exactly 0 to mass, and mass entries past n_slots[g] are untouched.
#pragma once

#include "kernels/cpu_isa.h"

#include <cstdint>

namespace kvscope::kernels {

// Storage type of keys, values, queries and outputs (the CPU kernel reads F32 only).
enum class KvDtype { F32, F16, BF16 };

// One layer of the store; the kernels only read it.
struct PagedKv {
    const void* k = nullptr;             // key pool, [capacity_slots, head_dim] rows of `dtype`
    const void* v = nullptr;             // value pool, same layout
    KvDtype dtype = KvDtype::F32;
    const int32_t* positions = nullptr;  // [capacity_slots]: the token each pool row holds (< 0: a hole)
    const int32_t* page_table = nullptr; // [n_head_kv, page_table_stride] page ids, slot order
    int64_t page_table_stride = 0;       // >= the most pages any head holds
    int64_t page_size = 0;               // slots per page
    const int32_t* n_slots = nullptr;    // [n_head_kv]: slots each KV head holds
    int64_t n_head_kv = 0;               // KV heads of the layer
    int64_t head_dim = 0;                // elements per key, value and query row
};

// The queries of one step and where their results go.
struct AttentionQueries {
    const void* q = nullptr;      // [n_head, T, head_dim], the store's dtype
    const int32_t* q_pos = nullptr; // [T]: the queries' token positions (causal mask)
    int64_t n_head = 0;           // a multiple of n_head_kv
    int64_t T = 0;                // queries: 1 in decode, the prompt's length in prefill
    int64_t window = 0;           // > 0: sliding window (Mistral) of this many positions
    float scale = 0.0f;           // score scale, 1/sqrt(head_dim) for Llama-family models
    void* out = nullptr;          // [n_head, T, head_dim], the store's dtype; overwritten
    float* mass = nullptr;        // [n_head, mass_stride] accumulated into; nullptr: none
    int64_t mass_stride = 0;      // >= n_slots of every KV head
    int64_t mass_queries = 0;     // how many of the last queries add mass (0..T)
    float* lse = nullptr;         // [n_head, T] written, -inf where a query sees nothing; nullptr: none
};

// Throws std::invalid_argument, naming the field, when a pointer the call needs is null or
// the sizes disagree (n_head not a multiple of n_head_kv, mass_queries outside 0..T, ...).
// Both kernels call it first; it reads no array, so it works on device pointers too.
void check_paged_attention(const PagedKv& kv, const AttentionQueries& qs);

// CPU, F32 storage: query heads [head_begin, head_end), every query. Threads split the
// heads between them (mass and out rows of different heads never overlap); a thread that
// holds all query heads of a KV head reads its keys and values once for all of them.
// No alignment is required. No allocation after a thread's first call at a given size
// (per-thread scratch grows, never shrinks). Throws std::invalid_argument as
// check_paged_attention does, and on a dtype other than F32, a bad head range, or a head
// with more slots than its page table or mass_stride holds (page ids and positions are
// not checked: the store owns them). Uses AVX2+FMA when the CPU has them, else portable
// code; any head split gives bit-identical results.
void paged_attention_cpu(const PagedKv& kv, const AttentionQueries& qs, int64_t head_begin, int64_t head_end);

// The same on a chosen instruction set (tests, benchmarks); throws std::invalid_argument
// when the CPU lacks it. Both agree with an exact softmax to ~1e-6 relative.
void paged_attention_cpu_with_isa(CpuIsa isa, const PagedKv& kv, const AttentionQueries& qs, int64_t head_begin,
                                  int64_t head_end);

#if KVSCOPE_CUDA
// CUDA: every query head and query, on `cuda_stream` (a cudaStream_t; nullptr: the legacy
// default stream). All pointers are device pointers; F32, F16 and BF16 storage; fp32
// arithmetic; head_dim <= 256. One thread block per (query head, query), or in decode a
// cluster of up to 8 on Hopper. Mass is added with atomics, so when several queries (or
// several calls) add to one entry its low bits depend on their order; out does not.
// Asynchronous: throws std::invalid_argument on bad sizes and std::runtime_error if the
// launch fails, not on errors while the kernel runs. The first call per process reads the
// device's properties (one process, one GPU).
void paged_attention_cuda(const PagedKv& kv, const AttentionQueries& qs, void* cuda_stream);
#endif

} // namespace kvscope::kernels
