#include "core/engine.h"

#include "core/error.h"
#include "core/kv_store.h"
#include "core/model.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <optional>

namespace kvscope {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

KvStore make_store(const Model& model, int64_t page_size) {
    return KvStore(model.config(), model.device(), model.dtype(), page_size);
}

int32_t greedy_token(const at::Tensor& logits) { return int32_t(logits.argmax(-1).item<int64_t>()); }

void check_context(const Model& model, int64_t n_prompt, int64_t n_steps) {
    if (n_prompt == 0) throw Error("prompt", "text", "is empty: nothing to run");
    if (n_prompt + n_steps > model.config().n_ctx)
        throw Error("prompt", "length",
                    std::to_string(n_prompt) + " prompt tokens + " + std::to_string(n_steps) +
                        " steps exceed the model's context of " + std::to_string(model.config().n_ctx));
}

} // namespace

ReferenceRun run_reference(const Model& model, const std::vector<int32_t>& prompt, const ReferenceOptions& options) {
    const int64_t n_steps = options.forced.empty() ? options.n_predict : int64_t(options.forced.size());
    check_context(model, int64_t(prompt.size()), n_steps);
    ReferenceRun ref;
    ref.prompt = prompt;
    ref.forced = !options.forced.empty();
    KvStore store = make_store(model, options.page_size);
    const ModelConfig& c = model.config();
    if (options.record_future)
        ref.future = at::zeros({c.n_layer, c.n_head, int64_t(prompt.size()) + n_steps},
                               at::TensorOptions().dtype(at::kFloat).device(model.device()));
    std::vector<at::Tensor> rows;
    auto start = Clock::now();
    at::Tensor logits = model.forward(prompt, store);
    for (int64_t k = 0; k < n_steps; ++k) {
        if (k > 0) {
            if (options.stop && options.stop()) break;
            logits = model.forward({ref.tokens.back()}, store);
            // Full cache: slot s of every head holds position s.
            if (ref.future.defined()) ref.future.narrow(2, 0, store.n_past()).add_(store.mass());
        }
        rows.push_back(at::log_softmax(logits[0], -1));
        const int32_t token = options.forced.empty() ? greedy_token(logits) : options.forced[k];
        ref.tokens.push_back(token);
        ref.kv_bytes.push_back(store.bytes());
        if (k == 0) {
            ref.prefill_seconds = seconds_since(start);
            start = Clock::now();
            if (options.record_future) store.set_mass_window(KVS_MASS_ALL); // decode queries only
        }
        if (options.forced.empty() && options.stop_at_end_of_generation && model.tokenizer().is_end_of_generation(token))
            break;
    }
    ref.decode_seconds = seconds_since(start);
    ref.logprobs = at::stack(rows);
    return ref;
}

namespace {

struct Stepper {
    const Model& model;
    Policy& policy;
    const ReferenceRun* reference;
    int64_t n_prompt;
    RunObserver* observer;
    RunSummary& summary;

    // Runs `tokens` through the lane and lets the policy act; returns the logits and
    // their greedy token (reading it waits for the device, so the time is the forward's).
    std::pair<at::Tensor, int32_t> step(KvStore& lane, const std::vector<int32_t>& tokens, int64_t k, bool primary,
                                        double* forward_s, double* policy_s) {
        auto start = Clock::now();
        at::Tensor logits = model.forward(tokens, lane);
        const int32_t token = greedy_token(logits);
        *forward_s = seconds_since(start);
        if (primary && observer && k > 0 && observer->wants_attention()) {
            const at::Tensor mass = lane.mass(); // read before the policy moves rows
            if (mass.defined()) observer->on_attention(k, mass, lane.positions_tensor());
        }
        if (primary) summary.peak_kv_bytes = std::max(summary.peak_kv_bytes, lane.bytes());
        std::vector<Decision> decisions;
        const double before = policy.seconds();
        policy.after_step(lane, k, n_prompt, reference && reference->future.defined() ? &reference->future : nullptr,
                          primary && observer ? &decisions : nullptr);
        *policy_s = policy.seconds() - before;
        if (primary && observer && !decisions.empty()) observer->on_decisions(k, decisions);
        return {logits, token};
    }
};

} // namespace

RunSummary run_method(const Model& model, const PluginRegistry& registry, const std::vector<int32_t>& prompt,
                      const RunOptions& options, const ReferenceRun* reference, RunObserver* observer) {
    RunSummary summary;
    summary.method = options.method;
    summary.budget = options.budget.text();
    summary.n_prompt = int64_t(prompt.size());
    summary.has_reference = reference != nullptr;
    try {
        Policy policy(resolve_method_spec(registry, options.method), options.budget, options.seed);
        summary.method = policy.text();
        if (policy.needs_future() && (!reference || !reference->future.defined()))
            throw Error("method spec", policy.text(), "needs a reference run that recorded future attention");
        if (policy.needs_head_roles()) {
            if (!options.head_roles)
                throw Error("method spec", policy.text(), "needs the model's head roles (`kvscope heads`), none given");
            policy.set_head_roles(*options.head_roles);
        }
        const int64_t n_steps = reference ? int64_t(reference->tokens.size()) : options.n_predict;
        check_context(model, summary.n_prompt, n_steps);

        KvStore tf = make_store(model, options.page_size);
        policy.configure(tf);
        // A decode step has one query, so a window of 1 is its whole attention row (the
        // policy still sees mass only when its method asked for it).
        if (observer && observer->wants_attention() && tf.mass_window() == 0) tf.set_mass_window(1);
        std::optional<KvStore> fr; // the free-running lane's cache once it has forked
        Stepper stepper{model, policy, reference, summary.n_prompt, observer, summary};
        double sum_kl = 0, nll_ref = 0, nll_method = 0;
        int64_t top1 = 0, matches = 0;

        for (int64_t k = 0; k < n_steps; ++k) {
            StepEvent ev;
            ev.step = k;
            const std::vector<int32_t> input =
                k == 0 ? prompt : std::vector<int32_t>{reference ? reference->tokens[k - 1] : summary.tokens.back()};
            double forward_s = 0, policy_s = 0;
            auto [logits, own] = stepper.step(tf, input, k, true, &forward_s, &policy_s);
            (k == 0 ? summary.prefill_seconds : summary.decode_seconds) += forward_s + policy_s;
            ev.step_seconds = forward_s;
            ev.policy_seconds = policy_s;
            at::Tensor logp = at::log_softmax(logits[0], -1);

            if (reference) {
                const at::Tensor& ref_logp = reference->logprobs[k];
                ev.reference_token = reference->tokens[k];
                ev.reference_kv_bytes = reference->kv_bytes[size_t(k)];
                at::Tensor stats = at::stack({(ref_logp.exp() * (ref_logp - logp)).sum(), logp[ev.reference_token],
                                              ref_logp[ev.reference_token], ref_logp.argmax().to(at::kFloat)})
                                       .to(at::kCPU);
                const float* s = stats.data_ptr<float>();
                ev.kl = std::max(0.0, double(s[0]));
                ev.logprob = s[1];
                ev.reference_logprob = s[2];
                ev.top1 = own == int32_t(s[3]);
                // The free-running lane: the same as this one until they disagree.
                if (reference->forced) {
                    ev.token = own;
                } else if (!fr && own != ev.reference_token) {
                    fr.emplace(tf.clone());
                    summary.first_divergence = k;
                    ev.token = own;
                } else if (fr) {
                    double f = 0, p = 0;
                    ev.token = stepper.step(*fr, {summary.tokens.back()}, k, false, &f, &p).second;
                } else {
                    ev.token = own;
                }
                sum_kl += ev.kl;
                summary.max_kl = std::max(summary.max_kl, ev.kl);
                nll_method -= ev.logprob;
                nll_ref -= ev.reference_logprob;
                top1 += ev.top1;
                matches += ev.token == ev.reference_token;
                summary.reference_tokens.push_back(ev.reference_token);
            } else {
                ev.token = own;
                ev.logprob = logp[own].item<float>();
            }
            summary.tokens.push_back(ev.token);
            ev.kv_bytes = tf.bytes();
            ev.kv_slots = tf.total_slots();
            summary.n_steps = k + 1;
            if (observer) observer->on_step(ev);
            if (!reference && options.stop_at_end_of_generation && model.tokenizer().is_end_of_generation(own)) break;
        }

        const double n = double(summary.n_steps);
        if (reference && n > 0) {
            summary.token_match = reference->forced ? -1 : double(matches) / n;
            summary.mean_kl = sum_kl / n;
            summary.top1 = double(top1) / n;
            summary.ppl_method = std::exp(nll_method / n);
            summary.ppl_reference = std::exp(nll_ref / n);
            summary.reference_kv_bytes = reference->kv_bytes[size_t(summary.n_steps - 1)];
        }
        summary.policy_seconds = policy.seconds();
        summary.kv_bytes = tf.bytes();
        summary.final_context = tf.n_past();
        for (int64_t l = 0; l < tf.n_layer(); ++l) {
            summary.layer_bytes.push_back(tf.bytes(l));
            for (int64_t g = 0; g < tf.n_head_kv(); ++g) summary.head_bytes.push_back(tf.bytes(l, g));
        }
    } catch (const std::exception& e) {
        summary.status = "failed";
        summary.error = e.what();
    }
    return summary;
}

} // namespace kvscope
