#include "core/policy.h"

#include "core/error.h"
#include "core/kv_store.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

namespace kvscope {

namespace {

using Clock = std::chrono::steady_clock;

DLTensor dl(const at::Tensor& t) {
    DLTensor d{};
    if (!t.defined()) return d;
    d.data = t.data_ptr();
    d.device = {t.is_cuda() ? kDLCUDA : kDLCPU, t.is_cuda() ? int32_t(t.get_device()) : 0};
    d.ndim = int32_t(t.dim());
    switch (t.scalar_type()) {
    case at::kFloat: d.dtype = {kDLFloat, 32, 1}; break;
    case at::kHalf: d.dtype = {kDLFloat, 16, 1}; break;
    case at::kBFloat16: d.dtype = {kDLBfloat, 16, 1}; break;
    case at::kInt: d.dtype = {kDLInt, 32, 1}; break;
    case at::kLong: d.dtype = {kDLInt, 64, 1}; break;
    default: throw Error("policy", "tensor", "dtype without a DLPack code");
    }
    d.shape = const_cast<int64_t*>(t.sizes().data());
    d.strides = const_cast<int64_t*>(t.strides().data());
    return d;
}

uint64_t mix(uint64_t x) { // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

} // namespace

struct Policy::Instance {
    MethodRef ref;
    void* self = nullptr;
    kvs_instance_info info{};

    Instance() = default;
    Instance(const Instance&) = delete;
    Instance& operator=(const Instance&) = delete;
    // Here rather than in ~Policy: when the constructor throws (a later method's create
    // fails, two scorers), ~Policy does not run but the instances made so far still go.
    ~Instance() {
        if (self) ref.method->destroy(self);
    }

    std::string where(const char* hook, int64_t layer = -1) const {
        std::string w = "plugin '" + ref.plugin->name + "' (" + ref.plugin->origin + "): " + ref.method->name + "." + hook;
        if (layer >= 0) w += ", layer " + std::to_string(layer);
        return w;
    }
    [[noreturn]] void fault(const char* hook, int64_t layer, const std::string& message) const {
        throw Error(where(hook, layer) + ": " + message);
    }
    // Runs a hook: a nonzero return, an exception or overtime becomes an Error.
    template <class F> void call(const char* hook, int64_t layer, double limit, F&& f) const {
        char err[512] = "";
        int rc;
        auto start = Clock::now();
        try {
            rc = f(err, sizeof err);
        } catch (const std::exception& e) {
            fault(hook, layer, std::string("threw: ") + e.what());
        } catch (...) {
            fault(hook, layer, "threw an unknown exception");
        }
        const double took = std::chrono::duration<double>(Clock::now() - start).count();
        if (rc != 0) fault(hook, layer, std::string("failed (") + std::to_string(rc) + "): " + (err[0] ? err : "no message"));
        if (took > limit) fault(hook, layer, "took " + std::to_string(took) + " s, over the limit of " + std::to_string(limit) + " s");
    }
};

// The tensors behind one layer's view; they must outlive the hook calls.
struct LayerData {
    at::Tensor positions, mass, keys, values, future, state;
    std::vector<int64_t> n_slots, budget;
    kvs_layer_view view{};
    bool over = false;  // some head holds more than its budget: the method acts here
    at::Tensor scores;  // what score() returned, on the device, then on the host
};

Policy::Policy(const std::vector<ResolvedMethod>& methods, Budget budget, uint64_t seed) : budget_(budget), seed_(seed) {
    for (const ResolvedMethod& m : methods) {
        auto inst = std::make_unique<Instance>();
        inst->ref = m.ref;
        inst->info.struct_size = sizeof(kvs_instance_info);
        const kvs_method& method = *m.ref.method;
        inst->call("create", -1, hook_limit_, [&](char* err, size_t n) {
            return method.create(m.params.data(), &inst->info, &inst->self, err, n);
        });
        const bool scorer = std::string(method.family) == "scorer";
        auto claim = [&](Instance*& slot, const char* role) {
            if (slot)
                throw Error("method spec", m.text,
                            std::string("a run has one ") + role + ", and " + slot->ref.method->name + " is already it");
            slot = inst.get();
        };
        if (scorer) claim(scorer_, "scorer");
        if (method.layer_budgets) claim(layer_allocator_, "layer allocator");
        if (method.head_budgets) claim(head_allocator_, "head allocator");
        if (inst->info.n_state < 0 || inst->info.every < 0 || inst->info.sinks < 0 || inst->info.recent < 0 ||
            inst->info.recent_fraction < 0 || inst->info.recent_fraction > 1)
            inst->fault("create", -1, "returned an invalid kvs_instance_info");
        text_ += (text_.empty() ? "" : "+") + m.text;
        instances_.push_back(std::move(inst));
    }
    if (!scorer_ && (layer_allocator_ || head_allocator_))
        throw Error("method spec", text_, "an allocator needs a scorer to choose the tokens (e.g. snapkv+" + text_ + ")");
}

Policy::~Policy() = default;

bool Policy::compresses() const { return scorer_ && (scorer_->ref.method->score || scorer_->ref.method->select); }

int64_t Policy::mass_window() const {
    int64_t w = 0;
    for (auto& inst : instances_) {
        const int64_t m = inst->info.mass_window;
        if (m == KVS_MASS_ALL || w == KVS_MASS_ALL) w = KVS_MASS_ALL;
        else w = std::max(w, m);
    }
    return w;
}

int64_t Policy::state_channels() const { return scorer_ ? scorer_->info.n_state : 0; }

bool Policy::needs_future() const {
    for (auto& inst : instances_)
        if (inst->info.needs & KVS_NEEDS_FUTURE) return true;
    return false;
}

void Policy::configure(KvStore& store) const {
    store.set_mass_window(mass_window());
    store.set_state_channels(state_channels());
}

namespace {

// The shared selector: the first `sinks` and last `recent` slots, then the best of the
// rest by score (ties to the newer slot). Returns increasing slot indices.
std::vector<int64_t> select_top(const float* score, int64_t n, int64_t budget, int64_t sinks, int64_t recent) {
    std::vector<int64_t> kept;
    if (n <= budget) {
        kept.resize(size_t(n));
        std::iota(kept.begin(), kept.end(), 0);
        return kept;
    }
    const int64_t s = std::min(sinks, budget), r = std::min(recent, budget - s);
    std::vector<int64_t> rest(size_t(n - s - r));
    std::iota(rest.begin(), rest.end(), s);
    const int64_t take = budget - s - r;
    auto better = [&](int64_t a, int64_t b) { return score[a] > score[b] || (score[a] == score[b] && a > b); };
    std::nth_element(rest.begin(), rest.begin() + take, rest.end(), better);
    for (int64_t i = 0; i < s; ++i) kept.push_back(i);
    kept.insert(kept.end(), rest.begin(), rest.begin() + take);
    for (int64_t i = n - r; i < n; ++i) kept.push_back(i);
    std::sort(kept.begin(), kept.end());
    return kept;
}

} // namespace

void Policy::after_step(KvStore& store, int64_t step, int64_t n_prompt, const std::vector<at::Tensor>* future,
                        std::vector<Decision>* decisions) {
    if (!scorer_) return;
    const kvs_method& sm = *scorer_->ref.method;
    const int64_t every = scorer_->info.every;
    const bool acts = compresses() && (step == 0 || (every > 0 && step % every == 0));
    if (!acts && !sm.observe) return;
    auto start = Clock::now();

    const int64_t n_layer = store.n_layer(), n_kv = store.n_head_kv();
    const int64_t budget = budget_.tokens(store.n_past());
    std::vector<int64_t> layer_budget(size_t(n_layer), budget);
    if (acts && layer_allocator_) {
        kvs_budget_view bv{sizeof(kvs_budget_view), int32_t(n_layer), int32_t(n_kv), n_prompt, store.n_past(), budget,
                           scorer_->info.recent + int64_t(std::floor(scorer_->info.recent_fraction * double(budget)))};
        const kvs_method& am = *layer_allocator_->ref.method;
        layer_allocator_->call("layer_budgets", -1, hook_limit_, [&](char* err, size_t n) {
            return am.layer_budgets(layer_allocator_->self, &bv, layer_budget.data(), err, n);
        });
        int64_t sum = 0;
        for (int64_t l = 0; l < n_layer; ++l) {
            if (layer_budget[l] < 0) layer_allocator_->fault("layer_budgets", l, "gave a negative budget");
            sum += layer_budget[l];
        }
        if (sum > n_layer * budget)
            layer_allocator_->fault("layer_budgets", -1, "gave " + std::to_string(sum) + " slots in all, over the total budget of " +
                                                             std::to_string(n_layer * budget));
    }

    // Every layer's views and scores first, then one copy of all scores to the host (a GPU
    // waits once per step, not once per layer), then the decisions.
    const uint32_t needs = scorer_->info.needs | (head_allocator_ ? head_allocator_->info.needs : 0);
    std::vector<LayerData> layers(static_cast<size_t>(n_layer));
    for (int64_t l = 0; l < n_layer; ++l) {
        LayerData& d = layers[l];
        d.positions = store.positions_tensor(l);
        const int64_t S = d.positions.size(1);
        for (int64_t g = 0; g < n_kv; ++g) {
            d.n_slots.push_back(store.n_slots(l, g));
            d.budget.push_back(layer_budget[l]);
            d.over |= acts && d.n_slots[g] > layer_budget[l];
        }
        if (store.mass_window() != 0) d.mass = store.mass(l);
        if (needs & KVS_NEEDS_KEYS) d.keys = store.keys(l);
        if (needs & KVS_NEEDS_VALUES) d.values = store.values(l);
        if (needs & KVS_NEEDS_FUTURE) {
            if (!future) scorer_->fault("score", l, "needs the reference run's future attention, which this run lacks");
            const int64_t group = store.n_head() / n_kv;
            at::Tensor idx = d.positions.to(at::kLong).clamp_min(0).repeat_interleave(group, 0);
            at::Tensor valid = d.positions.ge(0).repeat_interleave(group, 0);
            const at::Tensor& f = (*future)[l];
            d.future = f.gather(1, idx.clamp_max(f.size(1) - 1)).mul(valid.to(at::kFloat));
        }
        if (store.state_channels() > 0) d.state = store.state(l);
        kvs_layer_view& v = d.view;
        v.struct_size = sizeof(kvs_layer_view);
        v.layer = int32_t(l);
        v.n_layer = int32_t(n_layer);
        v.n_head = int32_t(store.n_head());
        v.n_head_kv = int32_t(n_kv);
        v.head_dim = int32_t(store.head_dim());
        v.n_prompt = n_prompt;
        v.n_past = store.n_past();
        v.step = step;
        v.n_max = S;
        v.n_slots = d.n_slots.data();
        v.budget = d.budget.data();
        v.seed = mix(seed_ ^ mix(uint64_t(l) << 32 ^ uint64_t(step)));
        v.positions = dl(d.positions);
        v.mass = dl(d.mass);
        v.keys = dl(d.keys);
        v.values = dl(d.values);
        v.future_mass = dl(d.future);
        v.state = dl(d.state);

        if (sm.observe) {
            scorer_->call("observe", l, hook_limit_,
                          [&](char* err, size_t n) { return sm.observe(scorer_->self, &v, err, n); });
            if (d.state.defined()) store.write_state(l, d.state);
        }
        if (d.over && sm.score) {
            d.scores = at::empty({n_kv, S}, at::TensorOptions().dtype(at::kFloat).device(store.device()));
            DLTensor out = dl(d.scores);
            scorer_->call("score", l, hook_limit_, [&](char* err, size_t n) { return sm.score(scorer_->self, &v, &out, err, n); });
        }
    }
    if (store.device().is_cuda()) {
        std::vector<at::Tensor> device_scores;
        for (LayerData& d : layers)
            if (d.scores.defined()) device_scores.push_back(d.scores.flatten());
        if (!device_scores.empty()) {
            at::Tensor host = at::cat(device_scores).to(at::kCPU);
            int64_t offset = 0;
            for (LayerData& d : layers)
                if (d.scores.defined()) {
                    d.scores = host.narrow(0, offset, d.scores.numel()).view(d.scores.sizes());
                    offset += d.scores.numel();
                }
        }
    }
    for (int64_t l = 0; l < n_layer; ++l)
        if (layers[l].over) act_on_layer(store, l, layers[l], layer_budget[l], decisions);
    store.apply_pending();
    if (acts && store.reserved_bytes() > 2 * store.bytes() + 4 * store.page_bytes()) store.shrink_to_fit();
    seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
}

void Policy::act_on_layer(KvStore& store, int64_t l, const LayerData& d, int64_t layer_budget,
                          std::vector<Decision>* decisions) {
    const int64_t n_kv = store.n_head_kv(), S = d.view.n_max;
    const kvs_method& sm = *scorer_->ref.method;
    std::vector<int64_t> head_budget(d.budget);
    // (sinks, recent) protected in head g: what the scorer asks for, within the budget.
    auto protection = [&](int64_t g) {
        const int64_t b = std::min(head_budget[g], d.n_slots[g]);
        const int64_t sinks = std::min(scorer_->info.sinks, b);
        const int64_t recent = scorer_->info.recent + int64_t(std::floor(scorer_->info.recent_fraction * double(head_budget[g])));
        return std::pair<int64_t, int64_t>{sinks, std::min(recent, b - sinks)};
    };
    std::vector<std::vector<int64_t>> kept(static_cast<size_t>(n_kv));

    if (sm.score) {
        at::Tensor scores = d.scores.contiguous(); // on the host by now
        const float* sc = scores.data_ptr<float>();
        for (int64_t g = 0; g < n_kv; ++g)
            for (int64_t s = 0; s < d.n_slots[g]; ++s)
                if (std::isnan(sc[g * S + s])) scorer_->fault("score", l, "returned NaN for head " + std::to_string(g) + " slot " + std::to_string(s));
        if (head_allocator_) {
            at::Tensor marked = scores.clone();
            for (int64_t g = 0; g < n_kv; ++g) {
                auto [sinks, recent] = protection(g);
                const int64_t n = d.n_slots[g];
                marked[g].narrow(0, 0, sinks).fill_(INFINITY);
                marked[g].narrow(0, n - recent, recent).fill_(INFINITY);
            }
            at::Tensor marked_dev = marked.to(store.device());
            DLTensor marked_dl = dl(marked_dev);
            const kvs_method& hm = *head_allocator_->ref.method;
            head_allocator_->call("head_budgets", l, hook_limit_, [&](char* err, size_t n) {
                return hm.head_budgets(head_allocator_->self, &d.view, layer_budget, &marked_dl, head_budget.data(), err, n);
            });
            int64_t sum = 0;
            for (int64_t g = 0; g < n_kv; ++g) {
                if (head_budget[g] < 0) head_allocator_->fault("head_budgets", l, "gave head " + std::to_string(g) + " a negative budget");
                sum += head_budget[g];
            }
            if (sum > n_kv * layer_budget)
                head_allocator_->fault("head_budgets", l, "gave " + std::to_string(sum) + " slots, over the layer's " +
                                                              std::to_string(n_kv * layer_budget));
        }
        for (int64_t g = 0; g < n_kv; ++g) {
            auto [sinks, recent] = protection(g);
            kept[g] = select_top(sc + g * S, d.n_slots[g], head_budget[g], sinks, recent);
        }
    } else {
        std::vector<int64_t> slots(size_t(n_kv * S)), counts(size_t(n_kv), 0);
        scorer_->call("select", l, hook_limit_, [&](char* err, size_t n) {
            return sm.select(scorer_->self, &d.view, slots.data(), counts.data(), err, n);
        });
        for (int64_t g = 0; g < n_kv; ++g) {
            const int64_t n = d.n_slots[g], count = counts[g];
            const std::string head = "head " + std::to_string(g);
            if (count < 0 || count > std::min(n, head_budget[g]))
                scorer_->fault("select", l, head + " keeps " + std::to_string(count) + " slots, over its budget of " +
                                                std::to_string(std::min(n, head_budget[g])));
            std::vector<int64_t> k(slots.begin() + g * S, slots.begin() + g * S + count);
            std::sort(k.begin(), k.end());
            for (size_t i = 0; i < k.size(); ++i) {
                if (k[i] < 0 || k[i] >= n)
                    scorer_->fault("select", l, head + ": slot " + std::to_string(k[i]) + " is outside [0, " + std::to_string(n) + ")");
                if (i > 0 && k[i] == k[i - 1]) scorer_->fault("select", l, head + ": slot " + std::to_string(k[i]) + " returned twice");
            }
            auto [sinks, recent] = protection(g);
            for (int64_t s = 0; s < n; ++s)
                if ((s < sinks || s >= n - recent) && !std::binary_search(k.begin(), k.end(), s))
                    scorer_->fault("select", l, head + ": evicted protected slot " + std::to_string(s));
            kept[g] = std::move(k);
        }
    }

    if (decisions)
        for (int64_t g = 0; g < n_kv; ++g) {
            const std::vector<int32_t>& pos = store.positions(l, g);
            if (int64_t(kept[g].size()) == int64_t(pos.size())) continue;
            Decision dec{l, g, {}, {}};
            size_t i = 0;
            for (int64_t s = 0; s < int64_t(pos.size()); ++s) {
                if (i < kept[g].size() && kept[g][i] == s) {
                    dec.kept.push_back(pos[s]);
                    ++i;
                } else {
                    dec.evicted.push_back(pos[s]);
                }
            }
            decisions->push_back(std::move(dec));
        }
    store.keep(l, kept, /*defer=*/true);
}

} // namespace kvscope
