#include "core/kv_store.h"

#include "core/error.h"
#include "core/upload.h"
#include "kernels/paged_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#if KVSCOPE_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

namespace kvscope {

KvStore::KvStore(const ModelConfig& config, c10::Device device, c10::ScalarType dtype, int64_t page_size)
    : n_head_(config.n_head), n_head_kv_(config.n_head_kv), head_dim_(config.head_dim),
      sliding_window_(config.sliding_window), page_size_(page_size), device_(device), dtype_(dtype),
      heads_(config.n_layer * config.n_head_kv), comp_count_(heads_.size(), 0) {
    if (page_size < 1) throw Error("kv store", "page_size", "must be >= 1");
    resize_pool(1); // page 0: the padding page
    pos_pool_.fill_(-1);
}

// ---- pool -------------------------------------------------------------------------------

void KvStore::resize_pool(int64_t n_pages) {
    const int64_t rows = n_pages * page_size_, old_rows = n_pages_ * page_size_;
    auto grow = [&](at::Tensor& pool, at::IntArrayRef shape, at::TensorOptions options) {
        at::Tensor fresh = at::zeros(shape, options);
        if (pool.defined() && old_rows > 0) fresh.narrow(0, 0, std::min(rows, old_rows)).copy_(pool.narrow(0, 0, std::min(rows, old_rows)));
        pool = fresh;
    };
    auto options = at::TensorOptions().device(device_);
    grow(k_pool_, {rows, head_dim_}, options.dtype(dtype_));
    grow(v_pool_, {rows, head_dim_}, options.dtype(dtype_));
    grow(pos_pool_, {rows}, options.dtype(at::kInt));
    grow(state_pool_, {rows, n_state_}, options.dtype(at::kFloat));
    for (int64_t p = n_pages_; p < n_pages; ++p)
        if (p > 0) free_pages_.push_back(int32_t(p));
    n_pages_ = n_pages;
    // Hand out low page ids first, so shrinking finds the used pages at the front.
    std::sort(free_pages_.begin(), free_pages_.end(), std::greater<>());
}

void KvStore::reserve_pages(int64_t n_free_needed) {
    const int64_t deficit = n_free_needed - int64_t(free_pages_.size());
    if (deficit <= 0) return;
    // Exact growth for a prefill's burst, a quarter more at a time for decode steps.
    resize_pool(n_pages_ + std::max(deficit, n_pages_ / 4));
}

int32_t KvStore::take_page() {
    int32_t page = free_pages_.back();
    free_pages_.pop_back();
    return page;
}

void KvStore::shrink_to_fit() {
    apply_pending();
    const int64_t used = n_pages_ - 1 - int64_t(free_pages_.size());
    if (used + 1 == n_pages_) return;
    // New page i+1 is the i-th page in use; gather its rows from the old pool.
    std::vector<int64_t> gather(size_t((used + 1) * page_size_));
    for (int64_t r = 0; r < page_size_; ++r) gather[r] = r;
    int32_t next = 1;
    for (Head& h : heads_)
        for (int32_t& page : h.pages) {
            for (int64_t r = 0; r < page_size_; ++r) gather[next * page_size_ + r] = int64_t(page) * page_size_ + r;
            page = next++;
        }
    at::Tensor index = upload(gather, device_);
    k_pool_ = k_pool_.index_select(0, index);
    v_pool_ = v_pool_.index_select(0, index);
    pos_pool_ = pos_pool_.index_select(0, index);
    state_pool_ = state_pool_.index_select(0, index);
    n_pages_ = used + 1;
    free_pages_.clear();
    rows_changed();
}

void KvStore::clear() {
    pending_holes_.clear();
    pending_from_.clear();
    pending_to_.clear();
    for (Head& h : heads_) {
        free_pages_.insert(free_pages_.end(), h.pages.begin(), h.pages.end());
        h = Head{};
    }
    std::sort(free_pages_.begin(), free_pages_.end(), std::greater<>());
    tables_ = Tables{};
    layout_ = Layout{};
    mass_rows_ = sq_rows_ = entropy_rows_ = at::Tensor();
    if (compensate_) set_compensate(true); // empty slots
    n_past_ = 0;
}

void KvStore::set_compensate(bool on) {
    if (on && sliding_window_ > 0)
        throw Error("kv store", "compensation", "a model with a sliding window has no place for a compensation slot");
    compensate_ = on;
    std::fill(comp_count_.begin(), comp_count_.end(), 0);
    const auto options = at::TensorOptions().dtype(at::kFloat).device(device_);
    comp_k_ = on ? at::zeros({n_layer(), n_head_kv_, head_dim_}, options) : at::Tensor();
    comp_v_ = on ? at::zeros({n_layer(), n_head_kv_, head_dim_}, options) : at::Tensor();
}

at::Tensor KvStore::compensation_counts(int64_t layer) const {
    auto first = comp_count_.begin() + layer * n_head_kv_;
    return upload(std::vector<int64_t>(first, first + n_head_kv_), device_).to(at::kFloat);
}

bool KvStore::compensating(int64_t layer) const {
    if (!compensate_) return false;
    auto first = comp_count_.begin() + layer * n_head_kv_;
    return std::any_of(first, first + n_head_kv_, [](int64_t n) { return n > 0; });
}

void KvStore::set_state_channels(int64_t n) {
    if (n < 0) throw Error("kv store", "state channels", "must be >= 0");
    n_state_ = n;
    state_pool_ = at::zeros({n_pages_ * page_size_, n}, at::TensorOptions().device(device_).dtype(at::kFloat));
}

// ---- layout -----------------------------------------------------------------------------

int64_t KvStore::total_slots() const {
    int64_t s = 0;
    for (const Head& h : heads_) s += int64_t(h.positions.size());
    return s;
}

int64_t KvStore::max_rows() const {
    int64_t r = 0;
    for (const Head& h : heads_) r = std::max(r, int64_t(h.row_pos.size()));
    return r;
}

// Page tables and row counts of every head, plus, for a step of T tokens, the query
// positions and the new tokens' positions; one upload.
void KvStore::build_tables(int64_t T) {
    Tables& t = tables_;
    const int64_t heads = int64_t(heads_.size());
    t.stride = t.max_rows = 0;
    for (const Head& h : heads_) {
        t.stride = std::max(t.stride, int64_t(h.pages.size()));
        t.max_rows = std::max(t.max_rows, int64_t(h.row_pos.size()));
    }
    t.n_tokens = T;
    t.host.assign(size_t(heads * (t.stride + 1) + T + n_head_kv_ * T), 0);
    int32_t* rows_per_head = t.host.data() + heads * t.stride;
    for (int64_t i = 0; i < heads; ++i) {
        std::copy(heads_[i].pages.begin(), heads_[i].pages.end(), t.host.begin() + i * t.stride);
        rows_per_head[i] = int32_t(heads_[i].row_pos.size());
    }
    int32_t* q_pos = rows_per_head + heads;
    for (int64_t i = 0; i < T; ++i) q_pos[i] = int32_t(n_past_ + i);
    for (int64_t i = 0; i < n_head_kv_ * T; ++i) q_pos[T + i] = q_pos[i % T]; // head-major, like k and v
    t.device = upload(t.host, device_);
    t.valid = true;
}

// The views' rows, from the page tables on the device: row r of head i is
// pages[i][r / P] * P + r % P while r < its row count, else row 0 (position -1).
const KvStore::Layout& KvStore::layout() {
    if (layout_.valid) return layout_;
    if (!tables_.valid) build_tables(0);
    const Tables& t = tables_;
    const int64_t heads = int64_t(heads_.size()), R = t.max_rows;
    auto longs = at::TensorOptions().dtype(at::kLong).device(device_);
    at::Tensor pages = t.device.narrow(0, 0, heads * t.stride).view({heads, t.stride}).to(at::kLong);
    at::Tensor n_rows = t.device.narrow(0, heads * t.stride, heads).to(at::kLong).view({heads, 1});
    at::Tensor r = at::arange(R, longs);
    at::Tensor rows = pages.index_select(1, r.div(page_size_, "floor")).mul_(page_size_).add_(r.remainder(page_size_));
    layout_.rows = rows.masked_fill_(r.view({1, R}).ge(n_rows), 0);
    layout_.positions = at::Tensor();
    layout_.R = R;
    layout_.valid = true;
    return layout_;
}

// Read from the pool, so after a step's last layer has written its tokens' positions.
const at::Tensor& KvStore::positions_tensor() {
    const Layout& l = layout();
    if (!l.positions.defined()) layout_.positions = pos_pool_.index_select(0, l.rows.flatten()).view({n_layer(), n_head_kv_, l.R});
    return layout_.positions;
}

at::Tensor KvStore::mass() {
    if (!mass_rows_.defined()) return {};
    return mass_rows_.narrow(2, 0, layout().R);
}

std::pair<at::Tensor, at::Tensor> KvStore::moments() {
    if (!sq_rows_.defined()) return {};
    const int64_t R = layout().R;
    return {sq_rows_.narrow(2, 0, R), entropy_rows_.narrow(2, 0, R)};
}

at::Tensor KvStore::rows(int64_t layer) {
    const Layout& l = layout();
    return layer < 0 ? l.rows.flatten() : l.rows.narrow(0, layer * n_head_kv_, n_head_kv_).flatten();
}

at::Tensor KvStore::gather(const at::Tensor& pool, int64_t layer) {
    at::Tensor g = pool.index_select(0, rows(layer)).view({layer < 0 ? n_layer() : 1, n_head_kv_, layout_.R, pool.size(1)});
    return layer < 0 ? g : g[0];
}

at::Tensor KvStore::keys(int64_t layer) { return gather(k_pool_, layer); }
at::Tensor KvStore::values(int64_t layer) { return gather(v_pool_, layer); }
at::Tensor KvStore::state(int64_t layer) { return gather(state_pool_, layer); }

void KvStore::write_state(const at::Tensor& state, int64_t layer) {
    // Padding rows all point at the padding page; whatever lands there is never read.
    state_pool_.index_copy_(0, rows(layer), state.reshape({-1, n_state_}).to(at::kFloat));
}

// ---- a step -----------------------------------------------------------------------------

void KvStore::begin_step(int64_t T) {
    apply_pending();
    int64_t needed = 0; // the whole step's pages at once: one pool growth at most
    for (const Head& h : heads_) {
        const int64_t rows = int64_t(h.row_pos.size()) + std::max<int64_t>(0, T - int64_t(h.holes.size()));
        needed += std::max<int64_t>(0, (rows + page_size_ - 1) / page_size_ - int64_t(h.pages.size()));
    }
    reserve_pages(needed);

    std::vector<int64_t>& new_rows = tables_.rows;
    new_rows.clear();
    for (Head& h : heads_) // head-major within a layer, like the model's k and v
        for (int64_t t = 0; t < T; ++t) {
            int32_t r;
            if (!h.holes.empty()) { // the lowest hole
                r = h.holes.back();
                h.holes.pop_back();
            } else {
                r = int32_t(h.row_pos.size());
                h.row_pos.push_back(-1);
                if (r % page_size_ == 0) h.pages.push_back(take_page());
            }
            const int32_t pos = int32_t(n_past_ + t);
            h.row_pos[r] = pos;
            h.positions.push_back(pos); // the newest token: positions stay increasing
            new_rows.push_back(pool_row(h, r));
        }
    build_tables(T);
    tables_.device_rows = upload(new_rows, device_);
    const auto stats = [&](bool on) {
        return on ? at::zeros({n_layer(), n_head_, tables_.max_rows}, at::TensorOptions().dtype(at::kFloat).device(device_))
                  : at::Tensor();
    };
    mass_rows_ = stats(mass_window_ != 0);
    sq_rows_ = stats(mass_window_ != 0 && moments_on_);
    entropy_rows_ = stats(mass_window_ != 0 && moments_on_);
    layout_.valid = false;
}

at::Tensor KvStore::attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    const int64_t T = q.size(1);
    if (n_past_ + T > std::numeric_limits<int32_t>::max())
        throw Error("kv store", "positions", "past the int32 range");
    if (layer == 0) begin_step(T);
    const int64_t heads = int64_t(heads_.size());
    at::Tensor rows = tables_.device_rows.narrow(0, layer * n_head_kv_ * T, n_head_kv_ * T);
    k_pool_.index_copy_(0, rows, k.reshape({n_head_kv_ * T, head_dim_}).to(dtype_));
    v_pool_.index_copy_(0, rows, v.reshape({n_head_kv_ * T, head_dim_}).to(dtype_));
    pos_pool_.index_copy_(0, rows, tables_.device.narrow(0, heads * (tables_.stride + 1) + T, n_head_kv_ * T));
    if (n_state_ > 0) state_pool_.index_fill_(0, rows, 0.0);
    layout_.positions = at::Tensor(); // now stale

    const int64_t mass_queries = mass_window_ < 0 ? T : std::min(mass_window_, T);
#if KVSCOPE_CUDA
    const bool has_kernel = device_.is_cpu() ? dtype_ == at::kFloat : device_.is_cuda();
#else
    const bool has_kernel = device_.is_cpu() && dtype_ == at::kFloat;
#endif
    const bool compensated = compensating(layer);
    if (!has_kernel || (compensated && T > 1)) return attend_reference(layer, q, mass_queries);
    if (compensated) {
        at::Tensor lse = at::empty({n_head_, T}, at::TensorOptions().dtype(at::kFloat).device(device_));
        return merge_compensation(layer, q, attend_kernel(layer, q, mass_queries, lse.data_ptr<float>()), lse, mass_queries);
    }
    at::Tensor out = attend_kernel(layer, q, mass_queries);
    if (sq_rows_.defined() && mass_queries > 0) { // only the mass queries' probabilities are formed
        const int64_t first = T - mass_queries;
        record_moments(layer, probabilities(layer, q.narrow(1, first, mass_queries), n_past_ + first));
    }
    return out;
}

// The paged kernel (CPU fp32, or CUDA) reads the pool through the step's page tables.
at::Tensor KvStore::attend_kernel(int64_t layer, const at::Tensor& q_in, int64_t mass_queries, float* lse) {
    const int64_t T = q_in.size(1), heads = int64_t(heads_.size());
    at::Tensor q = q_in.to(dtype_).contiguous();
    at::Tensor out = at::empty_like(q);
    // Host pointers for the CPU kernel, device pointers for the CUDA one.
    const int32_t* tables = tables_.device.data_ptr<int32_t>();

    kernels::PagedKv kv{};
    kv.k = k_pool_.data_ptr();
    kv.v = v_pool_.data_ptr();
    kv.dtype = dtype_ == at::kFloat ? kernels::KvDtype::F32 : dtype_ == at::kHalf ? kernels::KvDtype::F16 : kernels::KvDtype::BF16;
    kv.positions = pos_pool_.data_ptr<int32_t>();
    kv.page_table = tables + layer * n_head_kv_ * tables_.stride;
    kv.page_table_stride = tables_.stride;
    kv.page_size = page_size_;
    kv.n_slots = tables + heads * tables_.stride + layer * n_head_kv_;
    kv.n_head_kv = n_head_kv_;
    kv.head_dim = head_dim_;
    kernels::AttentionQueries qs{};
    qs.q = q.data_ptr();
    qs.q_pos = tables + heads * (tables_.stride + 1);
    qs.n_head = n_head_;
    qs.T = T;
    qs.window = sliding_window_;
    qs.scale = float(1.0 / std::sqrt(double(head_dim_)));
    qs.out = out.data_ptr();
    qs.mass = mass_queries > 0 ? mass_rows_.data_ptr<float>() + layer * n_head_ * tables_.max_rows : nullptr;
    qs.mass_stride = tables_.max_rows;
    qs.mass_queries = mass_queries;
    qs.lse = lse;
#if KVSCOPE_CUDA
    if (device_.is_cuda()) {
        kernels::paged_attention_cuda(kv, qs, at::cuda::getCurrentCUDAStream().stream());
        return out.to(q_in.scalar_type());
    }
#endif
    // Threads split KV heads, so each reads a head's pages once for all its query heads.
    const int64_t group = n_head_ / n_head_kv_;
    at::parallel_for(0, n_head_kv_, 1, [&](int64_t begin, int64_t end) {
        kernels::paged_attention_cpu(kv, qs, begin * group, end * group);
    });
    return out.to(q_in.scalar_type());
}

// softmax over the slots and the compensation slot = the kernel's softmax over the slots
// scaled by e^lse / (e^lse + e^s) plus the compensation slot's mean value weighted by
// e^s / (e^lse + e^s), s = q.mean_k * scale + ln(count): no row of the cache is read again.
at::Tensor KvStore::merge_compensation(int64_t layer, const at::Tensor& q, const at::Tensor& out, const at::Tensor& lse,
                                       int64_t mass_queries) {
    const int64_t group = n_head_ / n_head_kv_;
    const at::Tensor count = compensation_counts(layer), per_token = count.clamp_min(1).unsqueeze(1); // [kv], [kv, 1]
    const at::Tensor mean_k = (comp_k_[layer] / per_token).repeat_interleave(group, 0);          // [n_head, d]
    const at::Tensor mean_v = (comp_v_[layer] / per_token).repeat_interleave(group, 0);
    at::Tensor slot = (q.to(at::kFloat) * mean_k.unsqueeze(1)).sum(-1).mul_(1.0 / std::sqrt(double(head_dim_)));
    slot.add_(count.log().repeat_interleave(group).unsqueeze(1));                                 // [n_head, 1]
    const at::Tensor top = at::maximum(lse, slot);
    at::Tensor kept = (lse - top).exp_(), folded = (slot - top).exp_();
    const at::Tensor total = kept + folded;
    kept.div_(total), folded.div_(total);
    if (mass_queries > 0) mass_rows_[layer].mul_(kept); // the step's one query: [n_head, 1]
    return out.to(at::kFloat).mul_(kept.unsqueeze(2)).add_(folded.unsqueeze(2) * mean_v.unsqueeze(1)).to(q.scalar_type());
}

// Any device and dtype, with ATen: gathers the layer's rows and forms the [T, R] scores
// per head. The CUDA kernel takes this path's place on the GPU, except for the
// compensation slot.
at::Tensor KvStore::probabilities(int64_t layer, const at::Tensor& q, int64_t first) {
    const int64_t T = q.size(1), group = n_head_ / n_head_kv_, R = layout().R;
    const double scale = 1.0 / std::sqrt(double(head_dim_));
    at::Tensor K = keys(layer);                                                           // [kv, R, d]
    at::Tensor kpos = pos_pool_.index_select(0, rows(layer)).view({n_head_kv_, 1, 1, R}); // -1: hole or padding
    at::Tensor qpos = at::arange(first, first + T, kpos.options()).view({1, 1, T, 1});
    at::Tensor hidden = kpos.lt(0).logical_or(kpos.gt(qpos));
    if (sliding_window_ > 0) hidden = hidden.logical_or(kpos.le(qpos - sliding_window_));
    at::Tensor qg = q.reshape({n_head_kv_, group * T, head_dim_});
    at::Tensor scores = at::matmul(qg.to(dtype_), K.transpose(1, 2))
                            .to(at::kFloat)
                            .mul_(scale)
                            .view({n_head_kv_, group, T, R})
                            .masked_fill(hidden, -std::numeric_limits<float>::infinity());
    if (compensating(layer)) { // the slot's logit: q.mean_key * scale + ln(count); ln 0 = -inf hides it
        at::Tensor count = compensation_counts(layer);
        at::Tensor mean_k = comp_k_[layer] / count.clamp_min(1).unsqueeze(1);
        at::Tensor slot = at::matmul(qg.to(at::kFloat), mean_k.unsqueeze(2)).mul_(scale).view({n_head_kv_, group, T, 1});
        scores = at::cat({scores, slot.add_(count.log().view({n_head_kv_, 1, 1, 1}))}, -1);
    }
    return at::softmax(scores, -1);
}

void KvStore::record_moments(int64_t layer, const at::Tensor& probs) {
    const int64_t R = layout().R;
    at::Tensor p = probs.narrow(3, 0, R);
    sq_rows_[layer].narrow(1, 0, R).copy_(p.square().sum(2).view({n_head_, R}));
    entropy_rows_[layer].narrow(1, 0, R).copy_(at::xlogy(p, p).neg_().sum(2).view({n_head_, R}));
}

at::Tensor KvStore::attend_reference(int64_t layer, const at::Tensor& q, int64_t mass_queries) {
    const int64_t T = q.size(1), group = n_head_ / n_head_kv_, R = layout().R;
    at::Tensor probs = probabilities(layer, q, n_past_);
    at::Tensor p = probs.narrow(3, 0, R);
    if (mass_queries > 0) {
        at::Tensor last = p.narrow(2, T - mass_queries, mass_queries);
        mass_rows_[layer].narrow(1, 0, R).copy_(last.sum(2).view({n_head_, R}));
        if (sq_rows_.defined()) record_moments(layer, last);
    }
    at::Tensor out = at::matmul(p.reshape({n_head_kv_, group * T, R}).to(dtype_), values(layer));
    if (probs.size(3) > R) { // the compensation slot's share of its mean value
        at::Tensor mean_v = comp_v_[layer] / compensation_counts(layer).clamp_min(1).unsqueeze(1); // [kv, d]
        out = out.to(at::kFloat).add_(probs.narrow(3, R, 1).reshape({n_head_kv_, group * T, 1}) * mean_v.unsqueeze(1));
    }
    return out.view({n_head_, T, head_dim_}).to(q.scalar_type());
}

// ---- decisions --------------------------------------------------------------------------

void KvStore::evict(int64_t layer, const std::vector<std::vector<int64_t>>& evicted, bool defer) {
    if (int64_t(evicted.size()) != n_head_kv_)
        throw Error("kv store", "evict", "needs one row list per KV head");
    for (int64_t g = 0; g < n_head_kv_; ++g) { // check everything before changing anything
        const Head& h = head_at(layer, g);
        std::vector<int64_t> rows = evicted[g];
        std::sort(rows.begin(), rows.end());
        for (size_t i = 0; i < rows.size(); ++i)
            if (rows[i] < 0 || rows[i] >= int64_t(h.row_pos.size()) || h.row_pos[rows[i]] < 0 || (i > 0 && rows[i] == rows[i - 1]))
                throw Error("kv store", "evict", "layer " + std::to_string(layer) + " head " + std::to_string(g) + ": row " +
                                                     std::to_string(rows[i]) + " is not a distinct row holding a token");
    }
    if (compensate_) fold_evicted(layer, evicted); // before any row moves
    for (int64_t g = 0; g < n_head_kv_; ++g) {
        if (evicted[g].empty()) continue;
        Head& h = head_at(layer, g);
        std::vector<int32_t> gone; // positions, increasing
        for (int64_t r : evicted[g]) {
            gone.push_back(h.row_pos[r]);
            h.row_pos[r] = -1;
            h.holes.push_back(int32_t(r));
            pending_holes_.push_back(pool_row(h, r));
        }
        remove_positions(h.positions, gone);
        std::sort(h.holes.begin(), h.holes.end(), std::greater<>());
        compact(h, pending_from_, pending_to_);
    }
    std::sort(free_pages_.begin(), free_pages_.end(), std::greater<>());
    rows_changed();
    if (!defer) apply_pending();
}

// Adds the evicted rows' keys and values to their heads' compensation slots.
void KvStore::fold_evicted(int64_t layer, const std::vector<std::vector<int64_t>>& evicted) {
    std::vector<int64_t> pool_rows, head_of;
    for (int64_t g = 0; g < n_head_kv_; ++g) {
        for (int64_t r : evicted[g]) {
            pool_rows.push_back(pool_row(head_at(layer, g), r));
            head_of.push_back(g);
        }
        comp_count_[size_t(layer * n_head_kv_ + g)] += int64_t(evicted[g].size());
    }
    if (pool_rows.empty()) return;
    at::Tensor rows = upload(pool_rows, device_), heads = upload(head_of, device_);
    comp_k_[layer].index_add_(0, heads, k_pool_.index_select(0, rows).to(at::kFloat));
    comp_v_[layer].index_add_(0, heads, v_pool_.index_select(0, rows).to(at::kFloat));
}

// Removes `gone` (positions held) from the increasing `positions`. A decode step evicts a
// token or two per head: one binary search and one move each. A prefill's eviction
// removes many: one pass.
void KvStore::remove_positions(std::vector<int32_t>& positions, std::vector<int32_t>& gone) {
    std::sort(gone.begin(), gone.end());
    if (gone.size() <= 4) {
        for (auto p = gone.rbegin(); p != gone.rend(); ++p)
            positions.erase(std::lower_bound(positions.begin(), positions.end(), *p));
        return;
    }
    auto kept_end = std::remove_if(positions.begin(), positions.end(),
                                   [&](int32_t p) { return std::binary_search(gone.begin(), gone.end(), p); });
    positions.erase(kept_end, positions.end());
}

void KvStore::apply_pending() {
    if (!pending_holes_.empty()) pos_pool_.index_fill_(0, upload(pending_holes_, device_), -1);
    if (!pending_from_.empty()) {
        at::Tensor src = upload(pending_from_, device_), dst = upload(pending_to_, device_);
        for (at::Tensor* pool : {&k_pool_, &v_pool_, &pos_pool_, &state_pool_})
            pool->index_copy_(0, dst, pool->index_select(0, src));
    }
    pending_holes_.clear();
    pending_from_.clear();
    pending_to_.clear();
}

void KvStore::compact(Head& h, std::vector<int64_t>& from, std::vector<int64_t>& to) {
    const int64_t pages = (int64_t(h.positions.size()) + page_size_ - 1) / page_size_;
    if (int64_t(h.pages.size()) <= pages) return;
    const int32_t end = int32_t(pages * page_size_); // rows from here on are given back
    std::vector<int32_t> free_rows; // holes below `end`, lowest last
    for (int32_t r : h.holes)
        if (r < end) free_rows.push_back(r);
    for (int32_t r = end; r < int32_t(h.row_pos.size()); ++r) {
        if (h.row_pos[r] < 0) continue;
        const int32_t dst = free_rows.back();
        free_rows.pop_back();
        from.push_back(pool_row(h, r));
        to.push_back(pool_row(h, dst));
        h.row_pos[dst] = h.row_pos[r];
    }
    free_pages_.insert(free_pages_.end(), h.pages.begin() + pages, h.pages.end());
    h.pages.resize(size_t(pages));
    h.row_pos.resize(size_t(end));
    h.holes = std::move(free_rows);
    while (!h.row_pos.empty() && h.row_pos.back() < 0) { // no trailing holes for the kernel to scan
        h.row_pos.pop_back();
        h.holes.erase(std::find(h.holes.begin(), h.holes.end(), int32_t(h.row_pos.size())));
    }
}

// ---- bytes ------------------------------------------------------------------------------

int64_t KvStore::page_bytes() const { return 2 * page_size_ * head_dim_ * int64_t(c10::elementSize(dtype_)); }

int64_t KvStore::bytes(int64_t layer, int64_t head) const {
    const int64_t slot = compensated(layer, head) > 0 ? 2 * head_dim_ * int64_t(c10::elementSize(dtype_)) : 0;
    return int64_t(head_at(layer, head).pages.size()) * page_bytes() + slot;
}

int64_t KvStore::bytes(int64_t layer) const {
    int64_t total = 0;
    for (int64_t g = 0; g < n_head_kv_; ++g) total += bytes(layer, g);
    return total;
}

int64_t KvStore::bytes() const {
    int64_t total = 0;
    for (int64_t l = 0; l < n_layer(); ++l) total += bytes(l);
    return total;
}

int64_t KvStore::reserved_bytes() const {
    return k_pool_.nbytes() + v_pool_.nbytes() + pos_pool_.nbytes() + state_pool_.nbytes();
}

KvStore KvStore::clone() const {
    KvStore copy = *this;
    copy.k_pool_ = k_pool_.clone();
    copy.v_pool_ = v_pool_.clone();
    copy.pos_pool_ = pos_pool_.clone();
    copy.state_pool_ = state_pool_.clone();
    for (at::Tensor* t : {&copy.mass_rows_, &copy.sq_rows_, &copy.entropy_rows_, &copy.comp_k_, &copy.comp_v_})
        if (t->defined()) *t = t->clone();
    copy.rows_changed();
    return copy;
}

} // namespace kvscope
