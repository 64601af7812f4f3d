// The paged KV store: every run's cache, the reference lane's included.
//
// Per layer and per KV head, a variable number of token slots in pages of `page_size`
// slots. All pages of all layers come from one pool of key rows and one of value rows
// ([capacity_slots, head_dim] each), so a layer or head that keeps fewer tokens really
// holds fewer pages, and freed pages go back to a free list for reuse. Each slot
// remembers its token's original position.
//
// A head's slots are its rows, in storage order: an evicted token leaves a hole (position
// -1) that the next token fills, so evicting moves nothing, and a head whose holes add up
// to a page has its last pages' tokens moved into the holes and the pages freed. Bytes
// are pages held, exactly.
//
// Attention reads the pool through each head's page table (kernels/paged_attention.h;
// holes are never visible) and can return, per query head, the attention mass each row
// received from the step's last queries, without forming attention matrices. The views
// methods read (positions, mass, keys, ...) are in that same row order, so the mass is
// the kernel's output as it stands and a view costs a few gathers on the device, however
// long the context: nothing is sorted or copied per token on the host.
//
// Page 0 is never handed out: padding rows in gathered views point at it (position -1).
//
// Two services for the methods that ask (core/policy.cpp configures them):
// - moments: besides the mass, the sums over the same queries of A^2 and -A ln A per row
//   (CAKE's variance and dispersion), from those queries' probabilities formed with ATen;
// - compensation (RazorAttention): every evicted token's key and value are added to its
//   head's compensation slot, which attention reads as the mean key and value with logit
//   q.k/sqrt(d) + ln(count), so the slot stands for everything the head dropped. A decode
//   step merges the slot into the kernel's softmax by its log-sum-exp; a step of several
//   queries (a chunk after an eviction) goes through the ATen path, which forms the scores.
#pragma once

#include "core/kv_cache.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace kvscope {

class KvStore final : public KvCache {
public:
    KvStore(const ModelConfig& config, c10::Device device, c10::ScalarType dtype, int64_t page_size = 16);

    // ---- KvCache
    int64_t n_past() const override { return n_past_; }
    at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
    void commit(int64_t n_tokens) override { n_past_ += n_tokens; }
    void clear() override;
    int64_t bytes() const override; // key and value pages held by heads, and compensation slots

    // ---- attention statistics
    // Queries of each step whose attention mass attend() records: 0 none, -1 all, w > 0
    // the last w (METHODS.md's observation window).
    void set_mass_window(int64_t window) { mass_window_ = window; }
    int64_t mass_window() const { return mass_window_; }
    void set_moments(bool on) { moments_on_ = on; }
    // (sum A^2, sum -A ln A), each float32 [n_layer, n_head, R] like mass(); undefined
    // without set_moments or a mass window.
    std::pair<at::Tensor, at::Tensor> moments();

    // ---- compensation
    // Throws Error for a model with a sliding window (the slot has no position to slide past).
    void set_compensate(bool on);
    int64_t compensated(int64_t layer, int64_t head) const { return comp_count_[size_t(layer * n_head_kv_ + head)]; }
    at::Tensor compensation_keys() const { return comp_k_; }   // float32 [n_layer, n_head_kv, head_dim]: sums
    at::Tensor compensation_values() const { return comp_v_; }

    // ---- layout
    int64_t n_layer() const { return int64_t(heads_.size()) / n_head_kv_; }
    int64_t n_head_kv() const { return n_head_kv_; }
    int64_t n_head() const { return n_head_; }
    int64_t head_dim() const { return head_dim_; }
    int64_t page_size() const { return page_size_; }
    c10::Device device() const { return device_; }
    c10::ScalarType dtype() const { return dtype_; }
    int64_t n_slots(int64_t layer, int64_t head) const { return int64_t(head_at(layer, head).positions.size()); }
    int64_t total_slots() const;
    // Positions of the tokens a head holds, increasing.
    const std::vector<int32_t>& positions(int64_t layer, int64_t head) const { return head_at(layer, head).positions; }
    // Position of each row of a head, -1 for a hole: the row order of the views below.
    const std::vector<int32_t>& row_positions(int64_t layer, int64_t head) const { return head_at(layer, head).row_pos; }
    int64_t max_rows() const; // R below: the most rows any (layer, KV head) has

    // Every layer's rows, padded to R per (layer, KV head), on the store's device: what a
    // method's view holds. A row holds a token when its position is >= 0.
    const at::Tensor& positions_tensor();         // int32 [n_layer, n_head_kv, R], hole and padding -1
    at::Tensor mass();                            // float32 [n_layer, n_head, R] from the last step
                                                  // (valid until the rows change), 0 where no token;
                                                  // undefined without statistics
    at::Tensor keys(int64_t layer = -1);          // [n_layer, n_head_kv, R, head_dim], or one layer's
    at::Tensor values(int64_t layer = -1);
    at::Tensor state(int64_t layer = -1);         // float32 [n_layer, n_head_kv, R, n_state], or one layer's
    void write_state(const at::Tensor& state, int64_t layer = -1); // back from the layout above

    // ---- decisions
    // Evicts, for every KV head g of `layer`, the rows evicted[g] (distinct rows holding
    // tokens): they become holes, and when a head's holes add up to a page its last pages'
    // tokens move into them and those pages are freed. With `defer`, the row moves wait
    // for apply_pending(), so a policy acting on every layer moves rows in one batch (the
    // bookkeeping is immediate either way).
    void evict(int64_t layer, const std::vector<std::vector<int64_t>>& evicted, bool defer = false);
    void apply_pending();
    // Gives unused pool capacity back to the allocator (after a large eviction).
    void shrink_to_fit();

    // ---- per-slot state kept for a method (moves with its slot; zero for new slots)
    void set_state_channels(int64_t n);
    int64_t state_channels() const { return n_state_; }

    // ---- bytes
    int64_t page_bytes() const;                       // keys + values of one page
    int64_t bytes(int64_t layer) const;
    int64_t bytes(int64_t layer, int64_t head) const; // its pages, and its compensation slot when used
    int64_t reserved_bytes() const;                   // the pools' capacity, state included

    KvStore clone() const;

private:
    struct Head {
        std::vector<int32_t> pages;     // page ids; row i of the head is pages[i / P] * P + i % P
        std::vector<int32_t> row_pos;   // per row below the high-water mark: position, -1 = hole
        std::vector<int32_t> holes;     // rows that are holes, highest first
        std::vector<int32_t> positions; // positions held, increasing
    };
    // Every head's page table and row count, on the device: what attention and the views
    // read. Made at each step's layer 0 for all layers (with the step's extras), and again
    // when evictions have changed the rows since.
    struct Tables {
        bool valid = false;
        int64_t stride = 0, max_rows = 0, n_tokens = 0;
        std::vector<int32_t> host;      // page tables [heads, stride], rows per head [heads], then for a
                                        // step: query positions [T], new positions [n_head_kv * T]
        std::vector<int64_t> rows;      // a step's new tokens' pool rows [n_layer, n_head_kv * T]
        at::Tensor device, device_rows; // the two above on the store's device
    };
    // The gathered layout (positions_tensor() and friends), valid until the rows change.
    struct Layout {
        bool valid = false;
        int64_t R = 0;
        at::Tensor rows;                // int64 [n_layer * n_head_kv, R]: pool rows, padding -> row 0
        at::Tensor positions;           // gathered on first use after the last attend()
    };
    Head& head_at(int64_t layer, int64_t head) { return heads_[layer * n_head_kv_ + head]; }
    const Head& head_at(int64_t layer, int64_t head) const { return heads_[layer * n_head_kv_ + head]; }
    int64_t pool_row(const Head& h, int64_t row) const {
        return int64_t(h.pages[row / page_size_]) * page_size_ + row % page_size_;
    }
    // Moves the tokens of h's trailing pages into its holes and frees those pages.
    void compact(Head& h, std::vector<int64_t>& from, std::vector<int64_t>& to);
    static void remove_positions(std::vector<int32_t>& positions, std::vector<int32_t>& gone);
    int32_t take_page();
    void reserve_pages(int64_t n_free_needed);
    void resize_pool(int64_t n_pages);
    void begin_step(int64_t n_tokens);   // every layer's rows for the new tokens, one upload
    void build_tables(int64_t n_tokens);
    const Layout& layout();
    at::Tensor rows(int64_t layer);      // layout rows of one layer, or all (-1), flattened
    at::Tensor gather(const at::Tensor& pool, int64_t layer);
    at::Tensor attend_kernel(int64_t layer, const at::Tensor& q, int64_t mass_queries, float* lse = nullptr);
    // One decode query's kernel output `out` with the compensation slot merged in, by the
    // kernel's log-sum-exp `lse` [n_head, 1]; the layer's mass shrinks by the slot's share.
    at::Tensor merge_compensation(int64_t layer, const at::Tensor& q, const at::Tensor& out, const at::Tensor& lse,
                                  int64_t mass_queries);
    at::Tensor attend_reference(int64_t layer, const at::Tensor& q, int64_t mass_queries);
    // Softmax of the queries q [n_head, T', d] at positions first.. over the layer's rows,
    // with the compensation slot as one more column when it holds tokens: [n_head_kv,
    // group, T', R (+1)], fp32.
    at::Tensor probabilities(int64_t layer, const at::Tensor& q, int64_t first);
    void record_moments(int64_t layer, const at::Tensor& probs); // probs of the mass queries
    void fold_evicted(int64_t layer, const std::vector<std::vector<int64_t>>& evicted);
    bool compensating(int64_t layer) const;
    at::Tensor compensation_counts(int64_t layer) const; // float32 [n_head_kv] on the device
    void rows_changed() { tables_.valid = layout_.valid = false; }

    int64_t n_head_, n_head_kv_, head_dim_, sliding_window_, page_size_;
    c10::Device device_;
    c10::ScalarType dtype_;
    int64_t n_past_ = 0;
    int64_t mass_window_ = 0;
    int64_t n_state_ = 0;
    bool moments_on_ = false, compensate_ = false;

    std::vector<Head> heads_;           // [n_layer * n_head_kv]
    std::vector<int32_t> free_pages_;
    int64_t n_pages_ = 0;               // pool capacity in pages (page 0 included)
    at::Tensor k_pool_, v_pool_;        // [n_pages * page_size, head_dim]
    at::Tensor pos_pool_;               // int32 [n_pages * page_size], on the device; page 0 is -1
    at::Tensor state_pool_;             // float32 [n_pages * page_size, n_state]
    at::Tensor mass_rows_;              // float32 [n_layer, n_head, max_rows]: the last step's mass per row
    at::Tensor sq_rows_, entropy_rows_; // the same for the moments
    at::Tensor comp_k_, comp_v_;        // float32 [n_layer, n_head_kv, head_dim]: sums of the evicted
    std::vector<int64_t> comp_count_;   // [n_layer * n_head_kv]: tokens folded in
    Tables tables_;
    Layout layout_;
    std::vector<int64_t> pending_holes_, pending_from_, pending_to_; // pool rows (evict with defer)
};

} // namespace kvscope
