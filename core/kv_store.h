// The paged KV store: every run's cache, the reference lane's included.
//
// Per layer and per KV head, a variable number of token slots in pages of `page_size`
// slots. All pages of all layers come from one pool of key rows and one of value rows
// ([capacity_slots, head_dim] each), so a layer or head that keeps fewer tokens really
// holds fewer pages, and freed pages go back to a free list for reuse. Each slot
// remembers its token's original position.
//
// Callers see a head's slots in position order. Inside, a slot lives at any row of the
// head's pages: an evicted slot becomes a hole that the next token fills, so evicting one
// token moves nothing, and a head whose holes add up to a page has its last pages' tokens
// moved into the holes and the pages freed. Bytes are pages held, exactly.
//
// Attention reads the pool through each head's page table (kernels/paged_attention.h;
// holes have position -1 and are never visible) and can return, per query head, the
// attention mass each slot received from the step's last queries, without forming
// attention matrices. That is what scorers read.
//
// Page 0 is never handed out: padded slots in gathered views point at it.
#pragma once

#include "core/kv_cache.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
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
    int64_t bytes() const override; // key and value pages held by heads

    // ---- attention statistics
    // Queries of each step whose attention mass attend() records: 0 none, -1 all, w > 0
    // the last w (METHODS.md's observation window).
    void set_mass_window(int64_t window) { mass_window_ = window; }
    int64_t mass_window() const { return mass_window_; }
    // float32 [n_head, max_slots(layer)] from the last step: mass[h, s] is what slot s of
    // h's KV head received; undefined when no statistics were asked for.
    const at::Tensor& mass(int64_t layer) const { return mass_[layer]; }

    // ---- layout
    int64_t n_layer() const { return int64_t(heads_.size()) / n_head_kv_; }
    int64_t n_head_kv() const { return n_head_kv_; }
    int64_t n_head() const { return n_head_; }
    int64_t head_dim() const { return head_dim_; }
    int64_t page_size() const { return page_size_; }
    c10::Device device() const { return device_; }
    c10::ScalarType dtype() const { return dtype_; }
    int64_t n_slots(int64_t layer, int64_t head) const { return int64_t(head_at(layer, head).positions.size()); }
    int64_t max_slots(int64_t layer) const;
    int64_t total_slots() const;
    // Original positions of the slots, in slot (= position) order.
    const std::vector<int32_t>& positions(int64_t layer, int64_t head) const { return head_at(layer, head).positions; }

    // Gathered copies for a layer, padded to max_slots(layer) per KV head:
    at::Tensor positions_tensor(int64_t layer) const; // int32 [n_head_kv, S], padding -1
    at::Tensor keys(int64_t layer) const;             // [n_head_kv, S, head_dim]
    at::Tensor values(int64_t layer) const;
    at::Tensor state(int64_t layer) const;            // float32 [n_head_kv, S, n_state]
    void write_state(int64_t layer, const at::Tensor& state); // back from the layout above

    // ---- decisions
    // Keeps, for every KV head g of `layer`, the slots kept[g] (strictly increasing slot
    // indices) and frees the rest: their rows become holes, and when a head's holes add up
    // to a page its last pages' tokens move into them and those pages are freed. With
    // `defer`, the row moves wait for apply_pending(), so a policy acting on every layer
    // moves rows in one batch (the bookkeeping above is immediate either way).
    void keep(int64_t layer, const std::vector<std::vector<int64_t>>& kept, bool defer = false);
    void apply_pending();
    // Gives unused pool capacity back to the allocator (after a large eviction).
    void shrink_to_fit();

    // ---- per-slot state kept for a method (moves with its slot; zero for new slots)
    void set_state_channels(int64_t n);
    int64_t state_channels() const { return n_state_; }

    // ---- bytes
    int64_t page_bytes() const;                       // keys + values of one page
    int64_t bytes(int64_t layer) const;
    int64_t bytes(int64_t layer, int64_t head) const;
    int64_t reserved_bytes() const;                   // the pools' capacity, state included

    KvStore clone() const;

private:
    struct Head {
        std::vector<int32_t> pages;     // page ids; row i of the head is pages[i / P] * P + i % P
        std::vector<int32_t> row_pos;   // per row below the high-water mark: position, -1 = hole
        std::vector<int32_t> holes;     // rows that are holes, highest first
        std::vector<int32_t> order;     // rows of the tokens held, in position order
        std::vector<int32_t> positions; // their positions: the slots callers see
    };
    Head& head_at(int64_t layer, int64_t head) { return heads_[layer * n_head_kv_ + head]; }
    const Head& head_at(int64_t layer, int64_t head) const { return heads_[layer * n_head_kv_ + head]; }
    int64_t pool_row(const Head& h, int64_t row) const {
        return int64_t(h.pages[row / page_size_]) * page_size_ + row % page_size_;
    }
    // Moves the tokens of h's trailing pages into its holes and frees those pages.
    void compact(Head& h, std::vector<int64_t>& from, std::vector<int64_t>& to);
    void sort_mass(int64_t layer);
    int32_t take_page();
    void reserve_pages(int64_t n_free_needed);
    void resize_pool(int64_t n_pages);
    at::Tensor slot_rows(int64_t layer) const; // int64 [n_head_kv * S], padding -> row 0
    at::Tensor append(int64_t layer, int64_t n_tokens); // -> int64 pool rows [n_head_kv * T]
    at::Tensor attend_kernel(int64_t layer, const at::Tensor& q, int64_t mass_queries);
    at::Tensor attend_reference(int64_t layer, const at::Tensor& q, int64_t mass_queries);

    int64_t n_head_, n_head_kv_, head_dim_, sliding_window_, page_size_;
    c10::Device device_;
    c10::ScalarType dtype_;
    int64_t n_past_ = 0;
    int64_t mass_window_ = 0;
    int64_t n_state_ = 0;

    std::vector<Head> heads_;           // [n_layer * n_head_kv]
    std::vector<int32_t> free_pages_;
    int64_t n_pages_ = 0;               // pool capacity in pages (page 0 included)
    at::Tensor k_pool_, v_pool_;        // [n_pages * page_size, head_dim]
    at::Tensor pos_pool_;               // int32 [n_pages * page_size], on the device
    at::Tensor state_pool_;             // float32 [n_pages * page_size, n_state]
    std::vector<at::Tensor> mass_;      // per layer
    std::vector<int64_t> pending_holes_, pending_from_, pending_to_; // pool rows (keep with defer)
};

} // namespace kvscope
