#include "core/kv_store.h"

#include "core/error.h"
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

namespace {

// Host data to the store's device. To a GPU it goes through pinned memory without waiting:
// an ordinary copy from pageable memory would stall the host until the device drains its
// queue, once per layer and step. (The caching host allocator keeps the pinned block until
// the copy has run.)
template <class T> at::Tensor upload(const std::vector<T>& v, at::IntArrayRef shape, c10::Device device) {
    const at::ScalarType type = std::is_same_v<T, int32_t> ? at::kInt : std::is_same_v<T, float> ? at::kFloat : at::kLong;
    at::Tensor host = at::from_blob(const_cast<T*>(v.data()), shape, type);
    if (device.is_cpu()) return host.clone();
    at::Tensor pinned = at::empty(shape, at::TensorOptions(type).pinned_memory(true));
    pinned.copy_(host);
    return pinned.to(device, /*non_blocking=*/true);
}

template <class T> at::Tensor upload(const std::vector<T>& v, c10::Device device) {
    return upload(v, {int64_t(v.size())}, device);
}

} // namespace

KvStore::KvStore(const ModelConfig& config, c10::Device device, c10::ScalarType dtype, int64_t page_size)
    : n_head_(config.n_head), n_head_kv_(config.n_head_kv), head_dim_(config.head_dim),
      sliding_window_(config.sliding_window), page_size_(page_size), device_(device), dtype_(dtype),
      heads_(config.n_layer * config.n_head_kv), mass_(config.n_layer) {
    if (page_size < 1) throw Error("kv store", "page_size", "must be >= 1");
    resize_pool(1); // page 0: the padding page
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
    for (at::Tensor& m : mass_) m = at::Tensor();
    n_past_ = 0;
}

void KvStore::set_state_channels(int64_t n) {
    if (n < 0) throw Error("kv store", "state channels", "must be >= 0");
    n_state_ = n;
    state_pool_ = at::zeros({n_pages_ * page_size_, n}, at::TensorOptions().device(device_).dtype(at::kFloat));
}

// ---- layout -----------------------------------------------------------------------------

int64_t KvStore::max_slots(int64_t layer) const {
    int64_t s = 0;
    for (int64_t g = 0; g < n_head_kv_; ++g) s = std::max(s, n_slots(layer, g));
    return s;
}

int64_t KvStore::total_slots() const {
    int64_t s = 0;
    for (const Head& h : heads_) s += int64_t(h.positions.size());
    return s;
}

at::Tensor KvStore::slot_rows(int64_t layer) const {
    const int64_t S = max_slots(layer);
    std::vector<int64_t> rows(size_t(n_head_kv_ * S), 0);
    for (int64_t g = 0; g < n_head_kv_; ++g) {
        const Head& h = head_at(layer, g);
        for (int64_t s = 0; s < int64_t(h.order.size()); ++s) rows[g * S + s] = pool_row(h, h.order[s]);
    }
    return upload(rows, device_);
}

at::Tensor KvStore::positions_tensor(int64_t layer) const {
    const int64_t S = max_slots(layer);
    std::vector<int32_t> pos(size_t(n_head_kv_ * S), -1);
    for (int64_t g = 0; g < n_head_kv_; ++g) {
        const std::vector<int32_t>& p = head_at(layer, g).positions;
        std::copy(p.begin(), p.end(), pos.begin() + g * S);
    }
    return upload(pos, {n_head_kv_, S}, device_);
}

at::Tensor KvStore::keys(int64_t layer) const {
    return k_pool_.index_select(0, slot_rows(layer)).view({n_head_kv_, max_slots(layer), head_dim_});
}

at::Tensor KvStore::values(int64_t layer) const {
    return v_pool_.index_select(0, slot_rows(layer)).view({n_head_kv_, max_slots(layer), head_dim_});
}

at::Tensor KvStore::state(int64_t layer) const {
    return state_pool_.index_select(0, slot_rows(layer)).view({n_head_kv_, max_slots(layer), n_state_});
}

void KvStore::write_state(int64_t layer, const at::Tensor& state) {
    // Padding rows all point at the padding page; whatever lands there is never read.
    state_pool_.index_copy_(0, slot_rows(layer), state.reshape({-1, n_state_}).to(at::kFloat));
}

// ---- a step -----------------------------------------------------------------------------

at::Tensor KvStore::append(int64_t layer, int64_t n_tokens) {
    if (layer == 0) { // the whole step's pages at once: one pool growth at most
        int64_t needed = 0;
        for (const Head& h : heads_) {
            const int64_t rows = int64_t(h.row_pos.size()) + std::max<int64_t>(0, n_tokens - int64_t(h.holes.size()));
            needed += std::max<int64_t>(0, (rows + page_size_ - 1) / page_size_ - int64_t(h.pages.size()));
        }
        reserve_pages(needed);
    }
    std::vector<int64_t> rows;
    rows.reserve(size_t(n_head_kv_ * n_tokens));
    for (int64_t g = 0; g < n_head_kv_; ++g) {
        Head& h = head_at(layer, g);
        for (int64_t t = 0; t < n_tokens; ++t) {
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
            h.order.push_back(r); // the newest token: last in position order
            h.positions.push_back(pos);
            rows.push_back(pool_row(h, r));
        }
    }
    return upload(rows, device_);
}

at::Tensor KvStore::attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    if (layer == 0) apply_pending();
    const int64_t T = q.size(1);
    if (n_past_ + T > std::numeric_limits<int32_t>::max())
        throw Error("kv store", "positions", "past the int32 range");
    at::Tensor rows = append(layer, T); // head-major, like k and v below
    k_pool_.index_copy_(0, rows, k.reshape({n_head_kv_ * T, head_dim_}).to(dtype_));
    v_pool_.index_copy_(0, rows, v.reshape({n_head_kv_ * T, head_dim_}).to(dtype_));
    at::Tensor pos = at::arange(n_past_, n_past_ + T, pos_pool_.options()).repeat({n_head_kv_});
    pos_pool_.index_copy_(0, rows, pos);
    if (n_state_ > 0) state_pool_.index_fill_(0, rows, 0.0);

    const int64_t mass_queries = mass_window_ < 0 ? T : std::min(mass_window_, T);
#if KVSCOPE_CUDA
    const bool has_kernel = device_.is_cpu() ? dtype_ == at::kFloat : device_.is_cuda();
#else
    const bool has_kernel = device_.is_cpu() && dtype_ == at::kFloat;
#endif
    if (!has_kernel) return attend_reference(layer, q, mass_queries);
    at::Tensor out = attend_kernel(layer, q, mass_queries);
    if (mass_queries > 0) sort_mass(layer);
    return out;
}

// The paged kernel (CPU fp32, or CUDA) reads the pool through the page tables.
at::Tensor KvStore::attend_kernel(int64_t layer, const at::Tensor& q_in, int64_t mass_queries) {
    const int64_t T = q_in.size(1);
    int64_t stride = 0;
    for (int64_t g = 0; g < n_head_kv_; ++g) stride = std::max(stride, int64_t(head_at(layer, g).pages.size()));
    std::vector<int32_t> page_table(size_t(n_head_kv_ * stride), 0), n_slots(static_cast<size_t>(n_head_kv_));
    int64_t S = 0; // rows the kernel scans per head (holes included)
    for (int64_t g = 0; g < n_head_kv_; ++g) {
        const Head& h = head_at(layer, g);
        std::copy(h.pages.begin(), h.pages.end(), page_table.begin() + g * stride);
        n_slots[g] = int32_t(h.row_pos.size());
        S = std::max(S, int64_t(h.row_pos.size()));
    }
    std::vector<int32_t> q_pos(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) q_pos[t] = int32_t(n_past_ + t);

    at::Tensor q = q_in.to(dtype_).contiguous();
    at::Tensor out = at::empty_like(q);
    mass_[layer] = mass_queries > 0 ? at::zeros({n_head_, S}, q.options().dtype(at::kFloat)) : at::Tensor();

    kernels::PagedKv kv{};
    kv.k = k_pool_.data_ptr();
    kv.v = v_pool_.data_ptr();
    kv.dtype = dtype_ == at::kFloat ? kernels::KvDtype::F32 : dtype_ == at::kHalf ? kernels::KvDtype::F16 : kernels::KvDtype::BF16;
    kv.positions = pos_pool_.data_ptr<int32_t>();
    kv.page_table = page_table.data();
    kv.page_table_stride = stride;
    kv.page_size = page_size_;
    kv.n_slots = n_slots.data();
    kv.n_head_kv = n_head_kv_;
    kv.head_dim = head_dim_;
    kernels::AttentionQueries qs{};
    qs.q = q.data_ptr();
    qs.q_pos = q_pos.data();
    qs.n_head = n_head_;
    qs.T = T;
    qs.window = sliding_window_;
    qs.scale = float(1.0 / std::sqrt(double(head_dim_)));
    qs.out = out.data_ptr();
    qs.mass = mass_queries > 0 ? mass_[layer].data_ptr<float>() : nullptr;
    qs.mass_stride = S;
    qs.mass_queries = mass_queries;
#if KVSCOPE_CUDA
    if (device_.is_cuda()) { // the tables go to the device; everything else already is
        std::vector<int32_t> tables(page_table); // one copy to the device for all three
        tables.insert(tables.end(), n_slots.begin(), n_slots.end());
        tables.insert(tables.end(), q_pos.begin(), q_pos.end());
        at::Tensor device_tables = upload(tables, device_);
        kv.page_table = device_tables.data_ptr<int32_t>();
        kv.n_slots = kv.page_table + page_table.size();
        qs.q_pos = kv.n_slots + n_slots.size();
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

// Any device and dtype, with ATen: gathers the layer's slots and forms the [T, S] scores
// per head. The CUDA kernel takes this path's place on the GPU.
at::Tensor KvStore::attend_reference(int64_t layer, const at::Tensor& q, int64_t mass_queries) {
    const int64_t T = q.size(1), S = max_slots(layer), group = n_head_ / n_head_kv_;
    at::Tensor K = keys(layer), V = values(layer);                       // [kv, S, d]
    at::Tensor kpos = positions_tensor(layer).view({n_head_kv_, 1, 1, S}); // -1 = padding
    at::Tensor qpos = at::arange(n_past_, n_past_ + T, kpos.options()).view({1, 1, T, 1});
    at::Tensor hidden = kpos.lt(0).logical_or(kpos.gt(qpos));
    if (sliding_window_ > 0) hidden = hidden.logical_or(kpos.le(qpos - sliding_window_));

    at::Tensor scores = at::matmul(q.to(dtype_).reshape({n_head_kv_, group * T, head_dim_}), K.transpose(1, 2))
                            .to(at::kFloat)
                            .mul_(1.0 / std::sqrt(double(head_dim_)))
                            .view({n_head_kv_, group, T, S})
                            .masked_fill(hidden, -std::numeric_limits<float>::infinity());
    at::Tensor probs = at::softmax(scores, -1);
    mass_[layer] = mass_queries > 0 ? probs.narrow(2, T - mass_queries, mass_queries).sum(2).reshape({n_head_, S})
                                    : at::Tensor();
    return at::matmul(probs.view({n_head_kv_, group * T, S}).to(dtype_), V).view({n_head_, T, head_dim_}).to(q.scalar_type());
}

// The kernel's mass is per row of each head; callers read it per slot (position order).
void KvStore::sort_mass(int64_t layer) {
    const int64_t S = max_slots(layer), group = n_head_ / n_head_kv_;
    bool identity = true; // no holes, rows in position order: the common full-cache case
    for (int64_t g = 0; g < n_head_kv_ && identity; ++g) {
        const Head& h = head_at(layer, g);
        identity = h.holes.empty() && int64_t(h.order.size()) == S;
        for (int64_t s = 0; s < S && identity; ++s) identity = h.order[s] == s;
    }
    at::Tensor& mass = mass_[layer];
    if (identity) {
        mass = mass.narrow(1, 0, S);
        return;
    }
    std::vector<int64_t> index(size_t(n_head_ * S), 0);
    std::vector<float> valid(size_t(n_head_ * S), 0.0f);
    for (int64_t h = 0; h < n_head_; ++h) {
        const std::vector<int32_t>& order = head_at(layer, h / group).order;
        for (size_t s = 0; s < order.size(); ++s) {
            index[h * S + s] = order[s];
            valid[h * S + s] = 1.0f;
        }
    }
    mass = mass.gather(1, upload(index, {n_head_, S}, device_)).mul_(upload(valid, {n_head_, S}, device_));
}

void KvStore::keep(int64_t layer, const std::vector<std::vector<int64_t>>& kept, bool defer) {
    if (int64_t(kept.size()) != n_head_kv_)
        throw Error("kv store", "keep", "needs one slot list per KV head");
    for (int64_t g = 0; g < n_head_kv_; ++g) { // check everything before changing anything
        const std::vector<int64_t>& slots = kept[g];
        const int64_t n = n_slots(layer, g);
        for (size_t i = 0; i < slots.size(); ++i)
            if (slots[i] < 0 || slots[i] >= n || (i > 0 && slots[i] <= slots[i - 1]))
                throw Error("kv store", "keep", "layer " + std::to_string(layer) + " head " + std::to_string(g) +
                                                    ": slot lists must be increasing and inside [0, " +
                                                    std::to_string(n) + ")");
    }
    std::vector<int64_t>& holes = pending_holes_;
    std::vector<int64_t>& from = pending_from_;
    std::vector<int64_t>& to = pending_to_;
    for (int64_t g = 0; g < n_head_kv_; ++g) {
        Head& h = head_at(layer, g);
        const std::vector<int64_t>& slots = kept[g];
        if (slots.size() == h.order.size()) continue;
        std::vector<int32_t> order, positions;
        order.reserve(slots.size());
        positions.reserve(slots.size());
        size_t i = 0;
        for (int64_t s = 0; s < int64_t(h.order.size()); ++s) {
            if (i < slots.size() && slots[i] == s) {
                order.push_back(h.order[s]);
                positions.push_back(h.positions[s]);
                ++i;
            } else { // evicted: its row becomes a hole
                h.row_pos[h.order[s]] = -1;
                h.holes.push_back(h.order[s]);
                holes.push_back(pool_row(h, h.order[s]));
            }
        }
        h.order = std::move(order);
        h.positions = std::move(positions);
        std::sort(h.holes.begin(), h.holes.end(), std::greater<>());
        compact(h, from, to);
    }
    std::sort(free_pages_.begin(), free_pages_.end(), std::greater<>());
    if (!defer) apply_pending();
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
    const int64_t pages = (int64_t(h.order.size()) + page_size_ - 1) / page_size_;
    if (int64_t(h.pages.size()) <= pages) return;
    const int32_t end = int32_t(pages * page_size_); // rows from here on are given back
    std::vector<int32_t> slot_of(h.row_pos.size(), -1);
    for (size_t s = 0; s < h.order.size(); ++s) slot_of[h.order[s]] = int32_t(s);
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
        h.order[slot_of[r]] = dst;
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
    return int64_t(head_at(layer, head).pages.size()) * page_bytes();
}

int64_t KvStore::bytes(int64_t layer) const {
    int64_t total = 0;
    for (int64_t g = 0; g < n_head_kv_; ++g) total += bytes(layer, g);
    return total;
}

int64_t KvStore::bytes() const {
    int64_t pages = 0;
    for (const Head& h : heads_) pages += int64_t(h.pages.size());
    return pages * page_bytes();
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
    for (at::Tensor& m : copy.mass_)
        if (m.defined()) m = m.clone();
    return copy;
}

} // namespace kvscope
