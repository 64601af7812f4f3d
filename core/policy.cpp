#include "core/policy.h"

#include "core/crash_guard.h"
#include "core/error.h"
#include "core/head_roles.h"
#include "core/kv_store.h"
#include "core/upload.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
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
        if (!self || !ref.plugin->crash().empty()) return; // a crashed plugin's code is not run again
        auto destroy = [this] { ref.method->destroy(self); };
        if (const std::optional<Crash> crash = guarded(destroy)) ref.plugin->mark_crashed(where("destroy") + ": " + describe(*crash));
    }

    std::string where(const char* hook, int64_t layer = -1) const {
        std::string w = "plugin '" + ref.plugin->name + "' (" + ref.plugin->origin + "): " + ref.method->name + "." + hook;
        if (layer >= 0) w += ", layer " + std::to_string(layer);
        return w;
    }
    [[noreturn]] void fault(const char* hook, int64_t layer, const std::string& message) const {
        throw Error(where(hook, layer) + ": " + message);
    }
    // Runs a hook: a nonzero return, an exception, a crash or overtime becomes an Error.
    template <class F> void call(const char* hook, int64_t layer, double limit, F&& f) const {
        const std::string earlier = ref.plugin->crash();
        if (!earlier.empty()) fault(hook, layer, "not run: the plugin crashed earlier (" + earlier + "); reload it");
        char err[512] = "";
        int rc = 0;
        std::string thrown;
        auto run = [&] {
            try {
                rc = f(err, sizeof err);
            } catch (const std::exception& e) {
                thrown = std::string("threw: ") + e.what();
            } catch (...) {
                thrown = "threw an unknown exception";
            }
        };
        auto start = Clock::now();
        if (const std::optional<Crash> crash = guarded(run)) {
            ref.plugin->mark_crashed(where(hook, layer) + ": " + describe(*crash));
            fault(hook, layer, "crashed: " + describe(*crash) + ". The plugin is off until it is reloaded");
        }
        const double took = std::chrono::duration<double>(Clock::now() - start).count();
        if (!thrown.empty()) fault(hook, layer, thrown);
        if (rc != 0) fault(hook, layer, std::string("failed (") + std::to_string(rc) + "): " + (err[0] ? err : "no message"));
        if (took > limit) fault(hook, layer, "took " + std::to_string(took) + " s, over the limit of " + std::to_string(limit) + " s");
    }
};

// The tensors behind a step's view; they must outlive the hook calls.
struct StepData {
    at::Tensor positions, mass, keys, values, future, state, mass_sq, mass_entropy;
    std::vector<int64_t> n_slots, budget; // [n_layer * n_head_kv]
    kvs_step_view view{};
    at::Tensor scores;                    // what score() returned, on the device, then on the host
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

uint32_t Policy::needs() const {
    uint32_t bits = 0;
    for (auto& inst : instances_) bits |= inst->info.needs;
    return bits;
}

bool Policy::needs_future() const { return needs() & KVS_NEEDS_FUTURE; }
bool Policy::needs_head_roles() const { return needs() & KVS_NEEDS_HEAD_ROLES; }

void Policy::set_head_roles(const HeadRoles& roles) {
    // The SDK's order (KVS_ROLE_*), by name, so that a profile with more roles still fits.
    static const char* const names[KVS_N_ROLES] = {"sink",      "locality", "previous_token", "entropy",
                                                   "induction", "echo",     "retrieval"};
    const int64_t heads = roles.n_layer * roles.n_head;
    head_roles_ = at::empty({roles.n_layer, roles.n_head, KVS_N_ROLES}, at::kFloat);
    float* out = head_roles_.data_ptr<float>();
    for (int r = 0; r < KVS_N_ROLES; ++r) {
        const std::vector<double>& score = roles.role(names[r]);
        for (int64_t i = 0; i < heads; ++i) out[i * KVS_N_ROLES + r] = float(score[size_t(i)]);
    }
}

void Policy::configure(KvStore& store) const {
    store.set_mass_window(mass_window());
    store.set_state_channels(state_channels());
    store.set_moments(needs() & KVS_NEEDS_MOMENTS);
    store.set_compensate(scorer_ && (scorer_->info.needs & KVS_COMPENSATE));
}

namespace {

// Orders a slot for eviction: by score, lowest first, ties to the older token (so the
// kept set is the top of the score, ties to the newer token). The float's bits, mapped
// to an integer that grows with the float, times 2^31, plus the position: distinct for
// distinct slots, so the selection does not depend on how top-k breaks ties.
at::Tensor eviction_key(const at::Tensor& scores, const at::Tensor& positions) {
    at::Tensor bits = scores.contiguous().view(at::kInt).to(at::kLong);
    at::Tensor ordered = at::where(bits.ge(0), bits + (int64_t(1) << 31), -bits - 1);
    return ordered.mul_(int64_t(1) << 31).add_(positions.to(at::kLong));
}

} // namespace

void Policy::after_step(KvStore& store, int64_t step, int64_t n_prompt, const at::Tensor* future,
                        std::vector<Decision>* decisions) {
    if (!scorer_) return;
    const kvs_method& sm = *scorer_->ref.method;
    const int64_t every = scorer_->info.every;
    const bool acts = compresses() && (step == 0 || (every > 0 && step % every == 0));
    // This step's moments are recorded already; a prefill-only method reads no later ones,
    // and forming them costs a step its kernel path.
    if (step == 0 && every == 0) store.set_moments(false);
    if (!acts && !sm.observe) return;
    auto start = Clock::now();

    const int64_t n_layer = store.n_layer(), n_kv = store.n_head_kv();
    const std::vector<int64_t> layer_budget = layer_budgets(store, n_prompt, acts);
    StepData d;
    bool over = false; // some head holds more than its budget: the method acts
    for (int64_t l = 0; l < n_layer; ++l)
        for (int64_t g = 0; g < n_kv; ++g) {
            d.n_slots.push_back(store.n_slots(l, g));
            d.budget.push_back(layer_budget[l]);
            over |= acts && d.n_slots.back() > layer_budget[l];
        }
    if (!over && !sm.observe) return;

    // One view of every layer: the hooks run once per step, not once per layer.
    const uint32_t needs = scorer_->info.needs | (head_allocator_ ? head_allocator_->info.needs : 0);
    d.positions = store.positions_tensor();
    const int64_t R = d.positions.size(2);
    if (mass_window() != 0) d.mass = store.mass(); // not the store's: a viewer may have asked for mass
    if (needs & KVS_NEEDS_KEYS) d.keys = store.keys();
    if (needs & KVS_NEEDS_VALUES) d.values = store.values();
    if (needs & KVS_NEEDS_FUTURE) {
        if (!future) scorer_->fault("score", -1, "needs the reference run's future attention, which this run lacks");
        const int64_t group = store.n_head() / n_kv;
        at::Tensor idx = d.positions.to(at::kLong).clamp(0, future->size(2) - 1).repeat_interleave(group, 1);
        d.future = future->gather(2, idx).mul(d.positions.ge(0).repeat_interleave(group, 1));
    }
    if (store.state_channels() > 0) d.state = store.state();
    if (needs & KVS_NEEDS_MOMENTS) std::tie(d.mass_sq, d.mass_entropy) = store.moments();
    if (needs & KVS_NEEDS_HEAD_ROLES) {
        if (!head_roles_.defined()) scorer_->fault("score", -1, "needs the model's head roles, which this run lacks");
        if (head_roles_.size(0) != n_layer || head_roles_.size(1) != store.n_head())
            scorer_->fault("score", -1, "was given head roles of another model shape");
    }
    kvs_step_view& v = d.view;
    v.struct_size = sizeof(kvs_step_view);
    v.n_layer = int32_t(n_layer);
    v.n_head = int32_t(store.n_head());
    v.n_head_kv = int32_t(n_kv);
    v.head_dim = int32_t(store.head_dim());
    v.n_prompt = n_prompt;
    v.n_past = store.n_past();
    v.step = step;
    v.n_max = R;
    v.n_slots = d.n_slots.data();
    v.budget = d.budget.data();
    v.seed = mix(seed_ ^ mix(uint64_t(step)));
    v.positions = dl(d.positions);
    v.mass = dl(d.mass);
    v.keys = dl(d.keys);
    v.values = dl(d.values);
    v.future_mass = dl(d.future);
    v.state = dl(d.state);
    v.mass_sq = dl(d.mass_sq);
    v.mass_entropy = dl(d.mass_entropy);
    if (needs & KVS_NEEDS_HEAD_ROLES) v.head_roles = dl(head_roles_);

    if (sm.observe) {
        scorer_->call("observe", -1, hook_limit_, [&](char* err, size_t n) { return sm.observe(scorer_->self, &v, err, n); });
        if (d.state.defined()) store.write_state(d.state);
    }
    if (over) {
        std::vector<std::vector<int64_t>> evicted;
        if (sm.score) {
            d.scores = at::empty({n_layer, n_kv, R}, at::TensorOptions().dtype(at::kFloat).device(store.device()));
            DLTensor out = dl(d.scores);
            scorer_->call("score", -1, hook_limit_, [&](char* err, size_t n) { return sm.score(scorer_->self, &v, &out, err, n); });
            evicted = lowest_scores(store, d);
        } else {
            evicted = selected(store, d);
        }
        evict(store, evicted, decisions);
    }
    if (acts && store.reserved_bytes() > 2 * store.bytes() + 4 * store.page_bytes()) store.shrink_to_fit();
    seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<int64_t> Policy::layer_budgets(const KvStore& store, int64_t n_prompt, bool acts) const {
    const int64_t n_layer = store.n_layer(), n_kv = store.n_head_kv();
    const int64_t budget = budget_.tokens(store.n_past());
    std::vector<int64_t> out(size_t(n_layer), budget);
    if (!acts || !layer_allocator_) return out;
    kvs_budget_view bv{sizeof(kvs_budget_view), int32_t(n_layer), int32_t(n_kv), n_prompt, store.n_past(), budget,
                       scorer_->info.recent + int64_t(std::floor(scorer_->info.recent_fraction * double(budget)))};
    const kvs_method& am = *layer_allocator_->ref.method;
    layer_allocator_->call("layer_budgets", -1, hook_limit_, [&](char* err, size_t n) {
        return am.layer_budgets(layer_allocator_->self, &bv, out.data(), err, n);
    });
    int64_t sum = 0;
    for (int64_t l = 0; l < n_layer; ++l) {
        if (out[l] < 0) layer_allocator_->fault("layer_budgets", l, "gave a negative budget");
        sum += out[l];
    }
    if (sum > n_layer * budget)
        layer_allocator_->fault("layer_budgets", -1, "gave " + std::to_string(sum) + " slots in all, over the total budget of " +
                                                         std::to_string(n_layer * budget));
    return out;
}

// (sinks, recent) a head with this budget protects: what the scorer asks for, within it.
std::pair<int64_t, int64_t> Policy::protected_slots(int64_t budget, int64_t n_slots) const {
    const int64_t b = std::min(budget, n_slots);
    const int64_t sinks = std::min(scorer_->info.sinks, b);
    const int64_t recent = scorer_->info.recent + int64_t(std::floor(scorer_->info.recent_fraction * double(budget)));
    return {sinks, std::min(recent, b - sinks)};
}

// Per (layer, KV head), the positions it protects with these budgets: below first[i] (the
// sinks) and from last[i] on (the recent window). Layer-major, [2 * n_layer * n_kv].
std::vector<int64_t> Policy::protected_positions(const KvStore& store, const std::vector<int64_t>& budget) const {
    const int64_t heads = store.n_layer() * store.n_head_kv();
    std::vector<int64_t> bounds(size_t(2 * heads));
    for (int64_t i = 0; i < heads; ++i) {
        const std::vector<int32_t>& pos = store.positions(i / store.n_head_kv(), i % store.n_head_kv());
        const int64_t n = int64_t(pos.size());
        auto [sinks, recent] = protected_slots(budget[i], n);
        bounds[i] = sinks > 0 ? pos[sinks - 1] + 1 : 0;
        bounds[heads + i] = recent > 0 ? pos[n - recent] : std::numeric_limits<int32_t>::max();
    }
    return bounds;
}

// bool [n_layer, n_kv, R]: rows whose token the budgets protect.
at::Tensor Policy::protected_rows(const KvStore& store, const StepData& d, const std::vector<int64_t>& budget) const {
    const int64_t n_layer = store.n_layer(), n_kv = store.n_head_kv();
    at::Tensor bounds = upload(protected_positions(store, budget), {2, n_layer, n_kv, 1}, store.device());
    return d.positions.lt(bounds[0]).logical_and(d.positions.ge(0)).logical_or(d.positions.ge(bounds[1]));
}

// The shared selector, on the scores' device: each (layer, KV head) evicts its n - B lowest
// unprotected slots (eviction_key's order), found by one top-k over all heads; only their
// indices come back to the host.
std::vector<std::vector<int64_t>> Policy::lowest_scores(const KvStore& store, const StepData& d) {
    const int64_t heads = store.n_layer() * store.n_head_kv(), R = d.view.n_max;
    std::vector<int64_t> budget(d.budget);
    if (head_allocator_) split_head_budgets(store, d, budget);
    std::vector<int64_t> n_evict(static_cast<size_t>(heads));
    int64_t k = 0;
    for (int64_t i = 0; i < heads; ++i) k = std::max(k, n_evict[i] = std::max<int64_t>(0, d.n_slots[i] - budget[i]));
    at::Tensor key = eviction_key(d.scores, d.positions)
                         .masked_fill_(d.positions.lt(0).logical_or(protected_rows(store, d, budget)),
                                       std::numeric_limits<int64_t>::max());
    at::Tensor nan = d.scores.isnan().logical_and(d.positions.ge(0)).any().to(at::kLong).view(1);
    at::Tensor lowest = std::get<1>(key.view({heads, R}).topk(k, -1, /*largest=*/false, /*sorted=*/true));
    at::Tensor host = at::cat({nan, lowest.flatten()}).to(at::kCPU); // on a GPU, the step's one wait
    const int64_t* h = host.data_ptr<int64_t>();
    if (h[0]) report_nan(store, d);
    std::vector<std::vector<int64_t>> evicted(static_cast<size_t>(heads));
    for (int64_t i = 0; i < heads; ++i) evicted[i].assign(h + 1 + i * k, h + 1 + i * k + n_evict[i]);
    return evicted;
}

void Policy::report_nan(const KvStore& store, const StepData& d) const {
    const int64_t n_kv = store.n_head_kv(), R = d.view.n_max;
    at::Tensor scores = d.scores.to(at::kCPU), positions = d.positions.to(at::kCPU);
    for (int64_t i = 0; i < scores.numel(); ++i)
        if (positions.data_ptr<int32_t>()[i] >= 0 && std::isnan(scores.data_ptr<float>()[i]))
            scorer_->fault("score", i / R / n_kv, "returned NaN for head " + std::to_string(i / R % n_kv) + " slot " +
                                                      std::to_string(i % R));
}

// The plugin's own selection, checked: distinct slots holding tokens, within the budget,
// every protected one kept. Returns the complement.
std::vector<std::vector<int64_t>> Policy::selected(const KvStore& store, const StepData& d) {
    const kvs_method& sm = *scorer_->ref.method;
    const int64_t n_layer = store.n_layer(), n_kv = store.n_head_kv(), R = d.view.n_max, heads = n_layer * n_kv;
    std::vector<int64_t> slots(size_t(heads * R)), counts(size_t(heads), 0);
    scorer_->call("select", -1, hook_limit_, [&](char* err, size_t n) {
        return sm.select(scorer_->self, &d.view, slots.data(), counts.data(), err, n);
    });
    const std::vector<int64_t> bounds = protected_positions(store, d.budget);
    std::vector<std::vector<int64_t>> evicted(static_cast<size_t>(heads));
    for (int64_t i = 0; i < heads; ++i) {
        const int64_t l = i / n_kv, n = d.n_slots[i], count = counts[i], budget = std::min(n, d.budget[i]);
        const std::vector<int32_t>& row_pos = store.row_positions(l, i % n_kv);
        const std::string head = "head " + std::to_string(i % n_kv);
        if (count < 0 || count > budget)
            scorer_->fault("select", l, head + " keeps " + std::to_string(count) + " slots, over its budget of " + std::to_string(budget));
        std::vector<bool> kept(row_pos.size(), false);
        for (int64_t j = 0; j < count; ++j) {
            const int64_t s = slots[i * R + j];
            if (s < 0 || s >= int64_t(row_pos.size()) || row_pos[s] < 0)
                scorer_->fault("select", l, head + ": slot " + std::to_string(s) + " holds no token");
            if (kept[s]) scorer_->fault("select", l, head + ": slot " + std::to_string(s) + " returned twice");
            kept[s] = true;
        }
        for (int64_t s = 0; s < int64_t(row_pos.size()); ++s) {
            if (row_pos[s] < 0 || kept[s]) continue;
            if (row_pos[s] < bounds[i] || row_pos[s] >= bounds[heads + i])
                scorer_->fault("select", l, head + ": evicted protected slot " + std::to_string(s));
            evicted[i].push_back(s);
        }
    }
    return evicted;
}

// Applies the evictions, layer by layer with the row moves batched, and records them.
void Policy::evict(KvStore& store, const std::vector<std::vector<int64_t>>& evicted, std::vector<Decision>* decisions) {
    const int64_t n_layer = store.n_layer(), n_kv = store.n_head_kv();
    for (int64_t l = 0; l < n_layer; ++l) {
        auto first = evicted.begin() + l * n_kv;
        if (std::all_of(first, first + n_kv, [](const auto& e) { return e.empty(); })) continue;
        if (decisions)
            for (int64_t g = 0; g < n_kv; ++g)
                if (!first[g].empty()) decisions->push_back(decision(store, l, g, first[g]));
        store.evict(l, std::vector<std::vector<int64_t>>(first, first + n_kv), /*defer=*/true);
    }
    store.apply_pending();
}

Decision Policy::decision(const KvStore& store, int64_t layer, int64_t head, const std::vector<int64_t>& rows) {
    Decision dec{layer, head, {}, {}};
    const std::vector<int32_t>& row_pos = store.row_positions(layer, head);
    for (int64_t r : rows) dec.evicted.push_back(row_pos[r]);
    std::sort(dec.evicted.begin(), dec.evicted.end());
    for (int32_t p : store.positions(layer, head))
        if (!std::binary_search(dec.evicted.begin(), dec.evicted.end(), p)) dec.kept.push_back(p);
    return dec;
}

// The head allocator splits each layer's budget over its KV heads, seeing the scores with
// every protected slot at +inf.
void Policy::split_head_budgets(const KvStore& store, const StepData& d, std::vector<int64_t>& head_budget) const {
    const int64_t n_layer = store.n_layer(), n_kv = store.n_head_kv();
    at::Tensor marked = d.scores.masked_fill(protected_rows(store, d, head_budget), INFINITY);
    DLTensor marked_dl = dl(marked);
    const kvs_method& hm = *head_allocator_->ref.method;
    head_allocator_->call("head_budgets", -1, hook_limit_, [&](char* err, size_t n) {
        return hm.head_budgets(head_allocator_->self, &d.view, &marked_dl, head_budget.data(), err, n);
    });
    // The total is what binds, not each layer's share: HeadKV and CAKE move slots between layers.
    int64_t sum = 0, total = 0;
    for (int64_t i = 0; i < n_layer * n_kv; ++i) {
        if (head_budget[i] < 0)
            head_allocator_->fault("head_budgets", i / n_kv, "gave head " + std::to_string(i % n_kv) + " a negative budget");
        sum += head_budget[i];
        total += d.budget[i];
    }
    if (sum > total)
        head_allocator_->fault("head_budgets", -1, "gave " + std::to_string(sum) + " slots in all, over the total budget of " +
                                                       std::to_string(total));
}

} // namespace kvscope
