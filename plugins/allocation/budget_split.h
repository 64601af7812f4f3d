// Budget splits the head-aware allocators share (razor, duo, headkv, cake): integer
// budgets that spend a total exactly, never giving a head or layer more than it holds.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace kvs {

// `total` split in proportion to `weight` (all zero: equally), each share at most its
// `cap`: a share that would pass its cap gets the cap and the rest is split again among
// the others. Shares are floored, and the slots flooring leaves go one each to the largest
// remainders (ties to the lower index). Spends min(total, sum of caps).
inline std::vector<int64_t> split_proportional(int64_t total, const std::vector<double>& weight,
                                               const std::vector<int64_t>& cap) {
    const size_t n = weight.size();
    std::vector<int64_t> out(n, 0);
    std::vector<bool> capped(n, false);
    int64_t left = total;
    for (;;) {
        double w_sum = 0;
        size_t open = 0;
        for (size_t i = 0; i < n; ++i)
            if (!capped[i]) w_sum += weight[i], ++open;
        if (open == 0 || left <= 0) return out;
        auto exact = [&](size_t i) { return w_sum > 0 ? double(left) * weight[i] / w_sum : double(left) / double(open); };
        bool any_capped = false;
        for (size_t i = 0; i < n; ++i)
            if (!capped[i] && exact(i) >= double(cap[i])) {
                out[i] = cap[i], capped[i] = true, any_capped = true;
                left -= cap[i];
            }
        if (any_capped) continue;
        std::vector<size_t> order;
        int64_t spent = 0;
        for (size_t i = 0; i < n; ++i)
            if (!capped[i]) {
                out[i] = int64_t(exact(i));
                spent += out[i];
                order.push_back(i);
            }
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
            return exact(a) - double(out[a]) > exact(b) - double(out[b]);
        });
        for (size_t k = 0; k < order.size() && spent < left; ++k, ++spent) ++out[order[k]];
        return out;
    }
}

// The two-class split of RazorAttention and DuoAttention over every (layer, KV head),
// layer-major: `candidates` (best first) keep every slot they hold while the heads left
// can still have `min_stream` each; the others ("streaming" heads) share the rest of the
// total equally. Writes the budgets to out and returns which heads are full.
inline std::vector<bool> two_class_budgets(int64_t heads, const int64_t* n_slots, const int64_t* budget,
                                           const std::vector<int64_t>& candidates, int64_t min_stream, int64_t* out) {
    const int64_t total = std::accumulate(budget, budget + heads, int64_t(0));
    std::vector<bool> full(size_t(heads), false);
    int64_t full_slots = 0, n_full = 0;
    for (int64_t i : candidates) {
        if (full_slots + n_slots[i] + (heads - n_full - 1) * min_stream > total) break;
        full[size_t(i)] = true;
        full_slots += n_slots[i];
        ++n_full;
    }
    std::vector<double> equal(size_t(heads - n_full), 1.0);
    std::vector<int64_t> cap(size_t(heads - n_full), total);
    const std::vector<int64_t> share = split_proportional(total - full_slots, equal, cap);
    for (int64_t i = 0, k = 0; i < heads; ++i) out[i] = full[size_t(i)] ? n_slots[i] : share[size_t(k++)];
    return full;
}

// Indices of the entries of `score` above `threshold`, highest score first (ties to the
// lower index).
inline std::vector<int64_t> ranked_above(const at::Tensor& score, double threshold) {
    const at::Tensor s = score.to(at::kCPU, at::kDouble).contiguous().view(-1);
    const double* v = s.data_ptr<double>();
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < s.numel(); ++i)
        if (v[i] > threshold) idx.push_back(i);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
    return idx;
}

} // namespace kvs
