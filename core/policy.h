// The policy host: a run's methods instantiated from a spec, driven after every step.
//
// After a step it builds one view of every layer for the methods, calls their hooks once
// (not once per layer: on a GPU each of a hook's tensor operations is a launch), applies the shared
// selector (sinks and a recent window protected, then the top of the score), checks
// every answer a plugin gives before the store acts on it, and applies the decisions.
// A plugin that throws, returns NaN, a slot outside the head, a slot twice, more slots
// than its budget or evicts a protected slot stops the run with an Error naming the
// plugin, the method, the hook and the layer.
#pragma once

#include "core/method_spec.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kvscope {

class KvStore;
struct HeadRoles;
struct StepData;

// Which slots one KV head of one layer kept and lost when a method acted.
struct Decision {
    int64_t layer = 0, head = 0;
    std::vector<int32_t> kept, evicted; // original positions, increasing
};

class Policy {
public:
    // At most one scorer, one layer allocator and one head allocator. Throws Error for
    // any other combination, or when a method's create() fails.
    Policy(const std::vector<ResolvedMethod>& methods, Budget budget, uint64_t seed);
    ~Policy();
    Policy(const Policy&) = delete;
    Policy& operator=(const Policy&) = delete;

    // What the store must provide for the methods.
    int64_t mass_window() const;
    int64_t state_channels() const;
    bool needs_future() const;
    bool needs_head_roles() const;
    // The model's role scores (core/head_roles.h), for methods that read them; throws Error
    // when a role of the SDK's list is missing.
    void set_head_roles(const HeadRoles& roles);
    // Prepares an empty store for this policy (statistics, state channels, compensation).
    void configure(KvStore& store) const;

    const std::string& text() const { return text_; } // canonical spec
    const Budget& budget() const { return budget_; }
    bool compresses() const;                          // false for the full cache

    // After step `step` of a lane (0 = the prefill). `future` (float [n_layer, n_head,
    // n_positions]) is the reference run's later attention for methods that need it.
    // Appends one Decision per (layer, KV head) that lost slots.
    void after_step(KvStore& store, int64_t step, int64_t n_prompt, const at::Tensor* future,
                    std::vector<Decision>* decisions);

    double seconds() const { return seconds_; }       // hooks + selection so far
    // A hook running longer than this fails the run (checked when it returns).
    void set_hook_time_limit(double seconds) { hook_limit_ = seconds; }

private:
    struct Instance;
    std::vector<int64_t> layer_budgets(const KvStore& store, int64_t n_prompt, bool acts) const;
    std::pair<int64_t, int64_t> protected_slots(int64_t budget, int64_t n_slots) const;
    std::vector<int64_t> protected_positions(const KvStore& store, const std::vector<int64_t>& budget) const;
    at::Tensor protected_rows(const KvStore& store, const StepData& data, const std::vector<int64_t>& budget) const;
    void split_head_budgets(const KvStore& store, const StepData& data, std::vector<int64_t>& head_budget) const;
    std::vector<std::vector<int64_t>> lowest_scores(const KvStore& store, const StepData& data);
    std::vector<std::vector<int64_t>> selected(const KvStore& store, const StepData& data);
    uint32_t needs() const; // every instance's KVS_NEEDS_* bits
    void report_nan(const KvStore& store, const StepData& data) const;
    static void evict(KvStore& store, const std::vector<std::vector<int64_t>>& evicted, std::vector<Decision>* decisions);
    static Decision decision(const KvStore& store, int64_t layer, int64_t head, const std::vector<int64_t>& rows);

    std::vector<std::unique_ptr<Instance>> instances_;
    Instance* scorer_ = nullptr;
    Instance* layer_allocator_ = nullptr;
    Instance* head_allocator_ = nullptr;
    Budget budget_;
    uint64_t seed_;
    std::string text_;
    at::Tensor head_roles_; // float [n_layer, n_head, KVS_N_ROLES] on the host, when set
    double seconds_ = 0;
    double hook_limit_ = 60;
};

} // namespace kvscope
