// Synthetic values of the sessions store that the sessions and exports tests share.
#pragma once

#include "core/engine.h"

namespace kvscope::test {

// The summary of an ended run with a reference, every field set.
inline RunSummary sample_summary(int64_t n_steps) {
    RunSummary s;
    s.method = "h2o(recent=0.5)";
    s.budget = "32";
    s.n_prompt = 4;
    s.n_steps = n_steps;
    s.has_reference = true;
    s.token_match = 0.75;
    s.first_divergence = 3;
    s.mean_kl = 0.125;
    s.max_kl = 0.5;
    s.top1 = 0.5;
    s.ppl_method = 12;
    s.ppl_reference = 10;
    s.kv_bytes = 4096;
    s.peak_kv_bytes = 8192;
    s.reference_kv_bytes = 16384;
    s.final_context = 40;
    s.prefill_seconds = 0.01;
    s.decode_seconds = 0.1;
    s.policy_seconds = 0.02;
    return s;
}

} // namespace kvscope::test
