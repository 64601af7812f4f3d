// The engine: runs a prompt through a cache method next to a full-cache reference and
// measures how far the method strays, what it keeps and what it costs.
//
// A run has up to three lanes over one model, all greedy:
//   reference        full cache; runs first, records its tokens and per-step
//                    distributions (and, for oracle methods, the attention each key
//                    receives from later queries)
//   teacher-forced   the method fed the reference tokens: per-step KL(reference || method),
//                    top-1 agreement, log-likelihoods, KV bytes and decisions
//   free-running     the method fed its own tokens: token match and first divergence.
//                    It is the teacher-forced lane until the first step where the two
//                    disagree; there it forks off a copy of that lane's cache. Only when
//                    the reference generated its tokens: against a forced text there is
//                    no greedy continuation to match (top-1 agreement measures that).
// Without a reference only the free-running lane runs.
#pragma once

#include "core/method_spec.h"
#include "core/policy.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kvscope {

class Model;
struct HeadRoles;

// The full-cache run every method is measured against.
struct ReferenceRun {
    std::vector<int32_t> prompt;
    std::vector<int32_t> tokens;            // what it generated (or the forced continuation)
    bool forced = false;                    // tokens were given, not generated
    at::Tensor logprobs;                    // float [n_steps, n_vocab]: log p at each step
    at::Tensor future;                      // float [n_layer, n_head, n_positions] (when asked)
    std::vector<int64_t> kv_bytes;          // after each step
    double prefill_seconds = 0, decode_seconds = 0;
};

struct ReferenceOptions {
    int64_t n_predict = 64;                 // steps (tokens predicted) at most
    std::vector<int32_t> forced;            // teacher-force this continuation instead of greedy
    bool stop_at_end_of_generation = true;  // greedy only
    bool record_future = false;             // for methods that need KVS_NEEDS_FUTURE
    int64_t page_size = 16;
    std::function<bool()> stop;             // asked before each decode step: true ends the run
                                            // there, with the steps taken so far (the workbench's Stop)
};

ReferenceRun run_reference(const Model& model, const std::vector<int32_t>& prompt, const ReferenceOptions& options);

struct RunOptions {
    std::string method = "full";            // a run spec (method_spec.h)
    Budget budget{1, true};                 // 100% unless set
    uint64_t seed = 0;
    int64_t n_predict = 64;                 // without a reference
    bool stop_at_end_of_generation = true;  // without a reference
    int64_t page_size = 16;
    const HeadRoles* head_roles = nullptr;  // the model's head profile, for head-aware methods
};

// One step of the method, as the event stream carries it.
struct StepEvent {
    int64_t step = 0;                 // 0: the token the prefill predicts
    int32_t token = -1;               // free-running lane's token
    int32_t reference_token = -1;     // -1 without a reference
    double logprob = 0;               // teacher-forced log p(reference token); own token without a reference
    double reference_logprob = 0;
    double kl = 0;                    // KL(reference || method), teacher-forced
    bool top1 = true;                 // method's argmax = reference's argmax
    int64_t kv_bytes = 0;             // pages held after the step's decisions
    int64_t reference_kv_bytes = -1;  // the reference's (full cache) after the same step; -1 without
    int64_t kv_slots = 0;             // token slots over all layers and KV heads
    double step_seconds = 0;          // forward pass
    double policy_seconds = 0;        // hooks, selection and compaction
};

class RunObserver {
public:
    virtual ~RunObserver() = default;
    virtual void on_step(const StepEvent&) {}
    // When the method evicted: what each (layer, KV head) kept and lost at this step.
    virtual void on_decisions(int64_t step, const std::vector<Decision>&) {}
    // Whether on_attention should hear every decode step's attention: it costs the kernel's
    // mass output and a call per step, so only a viewer that draws it asks.
    virtual bool wants_attention() const { return false; }
    // After decode step `step`'s forward (step >= 1: one query), before the policy acts: the
    // attention each query head gave each row, float [n_layer, n_head, R], and each row's
    // position, int32 [n_layer, n_head_kv, R] (-1: no token), on the model's device.
    virtual void on_attention(int64_t step, const at::Tensor& mass, const at::Tensor& positions) {}
};

struct RunSummary {
    std::string method, budget;
    std::string status = "ok";        // "ok" or "failed"
    std::string error;                // why it failed
    int64_t n_prompt = 0, n_steps = 0;
    std::vector<int32_t> tokens;      // free-running
    std::vector<int32_t> reference_tokens;
    bool has_reference = false;
    double token_match = 1;           // fraction of steps where the free-running token equals the reference's
                                      // (-1: not measured, the reference was forced)
    int64_t first_divergence = -1;    // first such step that differs, -1 if none
    double mean_kl = 0, max_kl = 0, top1 = 1;
    double ppl_reference = 0, ppl_method = 0; // on the reference tokens, teacher-forced
    int64_t kv_bytes = 0, peak_kv_bytes = 0, reference_kv_bytes = 0;
    int64_t final_context = 0;        // tokens seen when the run ended
    std::vector<int64_t> layer_bytes; // per layer, at the end
    std::vector<int64_t> head_bytes;  // per (layer, KV head), at the end
    double prefill_seconds = 0, decode_seconds = 0, policy_seconds = 0;

    double decode_tokens_per_second() const { return decode_seconds > 0 ? double(n_steps - 1) / decode_seconds : 0; }
    double bytes_per_token() const { return final_context > 0 ? double(kv_bytes) / double(final_context) : 0; }
};

// Runs the method of `options` on `prompt`, against `reference` when given. Never throws
// for a fault in a method or plugin: the summary says "failed" and why.
RunSummary run_method(const Model& model, const PluginRegistry& registry, const std::vector<int32_t>& prompt,
                      const RunOptions& options, const ReferenceRun* reference, RunObserver* observer = nullptr);

} // namespace kvscope
