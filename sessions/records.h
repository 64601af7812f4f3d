// What the sessions database holds about a run, as C++ values: the writer stores them,
// the queries read them back.
#pragma once

#include "core/engine.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvscope {

// What is known when a run starts.
struct RunRecord {
    std::string model_path, model_hash; // model_hash(): sessions/model_hash.h
    std::string method, budget;         // as given; the method becomes canonical when the run ends
    std::string prompt_text;
    std::vector<int32_t> prompt_tokens;
    uint64_t seed = 0;
    std::string device, dtype;          // "cpu", "cuda:0"; "f32", "bf16", "f16"
    std::string uuid;                   // the run's identity in every database it reaches (32
                                        // hex digits); empty: the writer gives it a new one
    std::string task, answer;           // the task ("passkey", "text", a file) and what a correct
                                        // output contains; empty: a plain prompt, nothing to check
    std::string sweep, cell;            // a `kvscope sweep` run: the sweep's name and its cell
};

struct StoredRun {
    int64_t id = 0;
    RunRecord record;
    std::string build_version, started_at, ended_at; // ended_at empty while unfinished
    std::string status, error;                        // 'unfinished', 'ok' or 'failed'
    std::optional<RunSummary> summary;                // once the run ended (the summary's
                                                      // per-token and per-head fields stay empty)
    int64_t stored_steps = 0;
};

struct StoredStep {
    StepEvent event;  // reference_token -1, kl 0, top1 true without a reference, as the engine sends it;
                      // reference_kv_bytes -1 also for a step stored before schema version 4
    std::string text; // the token's bytes
};

// One decode step's attention as the GUI records it (attention_samples, one query per row):
// for each layer and query head, the step's query's attention over key positions summed
// into n_keys columns of key_stride positions each (column c: positions c * key_stride ..
// (c+1) * key_stride - 1).
struct AttentionStep {
    int64_t step = 0;
    int32_t n_layer = 0, n_head = 0, n_keys = 0, key_stride = 1;
    std::vector<float> mass; // [n_layer][n_head][n_keys]
};

} // namespace kvscope
