#include "core/head_roles.h"

#include "core/attention_recorder.h"
#include "core/error.h"
#include "core/model.h"

#include <ATen/ATen.h>

#include <cmath>

namespace kvscope {

namespace {

enum Role : size_t { kSink, kLocality, kPrevious, kEntropy, kInduction, kEcho, kRetrieval, kRoles };
const char* const kRoleNames[kRoles] = {"sink", "locality", "previous_token", "entropy", "induction", "echo", "retrieval"};

constexpr int64_t kSinkFrom = 16, kLocalWindow = 64, kPreferenceWindow = 32;
constexpr double kTau1 = 1.6, kTau2 = 0.6; // CAKE's temperatures, as its reimplementation sets them

// Row means of A's diagonal `offset` below the main one (A[h, t, t - offset]) over the
// queries t in [first, last]: [n_head].
at::Tensor diagonal_mean(const at::Tensor& a, int64_t offset, int64_t first, int64_t last) {
    const at::Tensor d = a.diagonal(-offset, 1, 2); // d[h, i] = a[h, offset + i, i]
    return d.narrow(1, first - offset, last - first + 1).mean(1);
}

} // namespace

const std::vector<double>& HeadRoles::role(const std::string& name) const {
    for (size_t i = 0; i < roles.size(); ++i)
        if (roles[i] == name) return scores[i];
    throw Error("head roles", name, "is not a role (sink, locality, previous_token, entropy, induction, echo, retrieval)");
}

std::vector<double> HeadRoles::per_kv_head(const std::string& name) const {
    const std::vector<double>& s = role(name);
    const int64_t group = n_head / n_head_kv;
    std::vector<double> out(size_t(n_layer * n_head_kv), 0.0);
    for (int64_t i = 0; i < n_layer * n_head; ++i) out[size_t(i / n_head * n_head_kv + i % n_head / group)] += s[size_t(i)] / double(group);
    return out;
}

RoleScorer::RoleScorer(int64_t n_layer, int64_t n_head, int64_t n_head_kv)
    : sum_(kRoles, std::vector<double>(size_t(n_layer * n_head), 0.0)), weight_(sum_),
      preference_sum_(size_t(n_layer), 0.0), preference_n_(size_t(n_layer), 0.0) {
    shape_.n_layer = n_layer;
    shape_.n_head = n_head;
    shape_.n_head_kv = n_head_kv;
}

void RoleScorer::add_role(size_t role, int64_t layer, const at::Tensor& per_head, double weight) {
    const at::Tensor h = per_head.to(at::kDouble).contiguous();
    for (int64_t i = 0; i < shape_.n_head; ++i) {
        sum_[role][size_t(layer * shape_.n_head + i)] += h.data_ptr<double>()[i] * weight;
        weight_[role][size_t(layer * shape_.n_head + i)] += weight;
    }
}

void RoleScorer::add(const Probe& probe, int64_t layer, const at::Tensor& attention) {
    const at::Tensor a = attention.to(at::kCPU, at::kFloat);
    const int64_t T = a.size(1);
    switch (probe.kind) {
    case Probe::Kind::text: {
        if (T > kSinkFrom) add_role(kSink, layer, a.select(2, 0).narrow(1, kSinkFrom, T - kSinkFrom).mean(1), 1);
        if (T > kLocalWindow) // mass in (t - r, t] = 1 - mass in [0, t - r]
            add_role(kLocality, layer, 1 - diagonal_mean(a.cumsum(2), kLocalWindow, kLocalWindow, T - 1), 1);
        if (T > 1) {
            add_role(kPrevious, layer, diagonal_mean(a, 1, 1, T - 1), 1);
            const at::Tensor ln_keys = at::arange(1, T, a.options()).add_(1).log_(); // ln(t + 1), t >= 1
            const at::Tensor entropy = at::xlogy(a, a).sum(2).neg_().narrow(1, 1, T - 1).div_(ln_keys);
            add_role(kEntropy, layer, entropy.mean(1), 1);
        }
        if (T >= kPreferenceWindow) {
            const at::Tensor w = a.narrow(1, T - kPreferenceWindow, kPreferenceWindow).to(at::kDouble);
            const double dispersion = at::xlogy(w, w).sum().neg().item<double>();
            const double shift = w.var(1, /*unbiased=*/false).sum().item<double>();
            preference_sum_[size_t(layer)] += std::pow(dispersion, 1 / kTau1) * std::pow(shift, 1 / kTau2);
            preference_n_[size_t(layer)] += 1;
        }
        break;
    }
    case Probe::Kind::repeat: {
        const int64_t N = probe.period, first = probe.second_copy, last = probe.second_copy + N - 2;
        if (N < 2 || last >= T) throw Error("head roles", probe.name, "is shorter than its two copies");
        add_role(kInduction, layer, diagonal_mean(a, N - 1, first, last), 1);
        add_role(kEcho, layer, diagonal_mean(a, N, first, last), 1);
        break;
    }
    case Probe::Kind::needle: {
        if (probe.copies.empty()) break;
        std::vector<int64_t> queries, sources;
        for (const auto& [q, s] : probe.copies) {
            queries.push_back(q);
            sources.push_back(s);
        }
        const at::Tensor q = at::tensor(queries, at::kLong), s = at::tensor(sources, at::kLong);
        const at::Tensor hits = a.index_select(1, q).argmax(2).eq(s.view({1, -1})).to(at::kDouble).mean(1);
        add_role(kRetrieval, layer, hits, double(queries.size())); // a fraction of all answer tokens
        break;
    }
    }
}

HeadRoles RoleScorer::result() const {
    HeadRoles r = shape_;
    for (size_t role = 0; role < kRoles; ++role) {
        r.roles.push_back(kRoleNames[role]);
        std::vector<double> s(sum_[role].size(), 0.0);
        for (size_t i = 0; i < s.size(); ++i) s[i] = weight_[role][i] > 0 ? sum_[role][i] / weight_[role][i] : 0.0;
        r.scores.push_back(std::move(s));
    }
    for (size_t l = 0; l < preference_sum_.size(); ++l)
        r.layer_preference.push_back(preference_n_[l] > 0 ? preference_sum_[l] / preference_n_[l] : 0.0);
    return r;
}

const std::vector<std::string>& role_names() {
    static const std::vector<std::string> names(kRoleNames, kRoleNames + kRoles);
    return names;
}

HeadRoles analyze_heads(const Model& model, const std::vector<Probe>& probes,
                        const std::function<void(const Probe&)>& progress) {
    const ModelConfig& c = model.config();
    RoleScorer scorer(c.n_layer, c.n_head, c.n_head_kv);
    for (const Probe& probe : probes) {
        if (int64_t(probe.tokens.size()) > c.n_ctx)
            throw Error("head roles", probe.name,
                        std::to_string(probe.tokens.size()) + " tokens, over the model's context of " + std::to_string(c.n_ctx));
        if (progress) progress(probe);
        AttentionRecorder recorder(c, [&](int64_t layer, const at::Tensor& p) { scorer.add(probe, layer, p); });
        model.forward(probe.tokens, recorder);
    }
    return scorer.result();
}

} // namespace kvscope
