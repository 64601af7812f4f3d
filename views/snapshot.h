// What the views draw: a plain copy of the workbench's state (no tensors, no locks).
//
// The worker thread (app/gui_worker.cpp) fills a shared Snapshot as the engine's events
// arrive; the UI thread copies what is new into its own Snapshot once per frame and the
// views read only that copy. Every per-run list is append-only while the run is live, so
// the copy can take just the tail (SyncSnapshot).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvscope {

// One method parameter's schema (plugins/sdk/kvscope_plugin.h kvs_param_def).
struct ParamSchema {
    enum Type { Int, Float, Bool } type = Float;
    std::string name, help;
    double default_value = 0, min_value = 0, max_value = 0;
};

struct MethodSchema {
    std::string name, family, help, plugin; // family: "scorer" or "allocator"
    std::vector<ParamSchema> params;
};

// One decode step of a run (core/engine.h StepEvent, without its tensors' home).
struct StepRow {
    int32_t token = -1, reference_token = -1;
    double kl = 0;
    bool top1 = true;
    int64_t kv_bytes = 0;
    double step_ms = 0, policy_ms = 0;
};

// A position leaving the cache of one (layer, KV head) at a decode step.
struct Eviction {
    int32_t step = 0, layer = 0, head = 0, position = 0;
};

// The attention each query head paid its keys at the run's decode steps, summed into bins
// of key_stride() positions each (bin b holds positions b * key_stride() .. (b+1) *
// key_stride() - 1), so a bin holds a share of the step's attention and the bins of a row
// sum to 1. Equal bins keep columns comparable (no stripes where a bin holds one more key)
// and are what the session database stores (attention_samples.key_stride). n_positions is
// a whole number of bins, so FoldCell / FoldStart over it give the same bins. Steps are
// recorded while they fit a memory cap; past it every other recorded step is dropped and
// the stride doubles (thinning: old steps stay, coarser).
struct AttentionTrace {
    int32_t n_layer = 0, n_head = 0, bins = 0;
    int64_t n_positions = 0;    // the key positions the bins span: the run's final context
                                // (prompt + steps), rounded up to whole bins
    int32_t stride = 1;         // steps recorded: those that are multiples of it
    uint32_t generation = 0;    // bumped when thinned: a copy must start over
    std::vector<int32_t> steps; // recorded decode steps, increasing
    std::vector<float> mass;    // [steps][n_layer][n_head][bins]
    size_t row_size() const { return size_t(n_layer) * size_t(n_head) * size_t(bins); }
    int64_t key_stride() const { return bins > 0 ? n_positions / bins : 0; }
    // An empty trace for a context of `n_positions` (> 0) keys in at most `max_bins` equal
    // bins (the last may reach past the context).
    static AttentionTrace Shaped(int32_t n_layer, int32_t n_head, int64_t n_positions, int64_t max_bins);
    // The bins of one step (index into `steps`), layer and query head; null when absent.
    const float* Row(size_t i, int layer, int head) const;
    // Adds a step's rows ([n_layer][n_head][bins]) when its step is a multiple of the
    // stride, thinning first while the trace would pass `max_bytes`.
    void Append(int32_t step, const float* rows, size_t max_bytes);
    void Thin(); // drops every other recorded step, doubles the stride
};

struct RunView {
    enum class Status { Queued, Reference, Running, Done, Failed, Stopped } status = Status::Queued;
    std::string method, budget, error;
    int64_t n_prompt = 0;
    std::vector<std::string> prompt_text;      // each prompt token's text
    std::vector<StepRow> steps;
    std::vector<std::string> token_text;       // each step's token as text
    std::vector<std::string> reference_text;   // the reference's token at each step
    std::vector<int64_t> reference_kv_bytes;   // after each reference step
    double reference_step_ms = 0;              // the reference's mean decode step
    std::vector<Eviction> evictions;           // in step order
    AttentionTrace attention;                  // when the run recorded it
    bool has_reference = false;
    int64_t reference_steps = 0;               // steps the reference will take (0: none)
    int64_t stored_id = -1;                    // its id in the session database (-1: not stored)
    bool opened = false;                       // opened from the database, not run here
    bool live() const { return status == Status::Queued || status == Status::Reference || status == Status::Running; }
};

struct ModelInfo {
    std::string path, name, device = "cpu";
    int32_t n_layer = 0, n_head = 0, n_head_kv = 0;
    double load_progress = 0; // 0..1
    std::string load_stage;
    bool ready = false;
};

// A run kept in the session database, as the session browser lists it.
struct StoredRunRow {
    int64_t id = 0;
    std::string method, budget, task, status, started_at, model, prompt;
    double token_match = -1; // fraction of steps matching the reference (-1: not measured)
    int64_t kv_bytes = -1;   // at the end (-1: unfinished)
    int64_t steps = 0;
};

// One loaded plugin, as the plugin manager lists it (its methods' schemas are in
// Snapshot::methods, under the plugin's name).
struct PluginInfo {
    std::string name, origin, build_tag; // origin: "built-in" or the .so's path
    int32_t abi_version = 0;
    std::string crash; // where and how its code crashed; it is off until reloaded (empty: it has not)
};

// An export format (app/export_formats.h): its name and what the file holds.
struct FormatInfo {
    std::string name, what;
};

// What the worker keeps besides the runs; `version` is bumped when any of it (or
// Snapshot::methods, after a plugin load) changes, so the UI copies it only then.
struct Catalog {
    std::vector<PluginInfo> plugins;
    std::vector<std::string> plugin_errors;  // loads that failed, oldest first
    int plugin_loads = 0;                    // load requests done (loaded or failed)
    std::string db_path, db_error;           // the session database; why it cannot be used
    std::vector<StoredRunRow> stored_runs;   // oldest first
    std::vector<FormatInfo> export_formats;
    std::string export_result;               // the last export: what was written, or why not
    bool export_ok = false;
    int exports = 0;                         // exports finished (written or failed)
    uint64_t version = 0;
};

// A query x key attention map folded to at most kMaxMapCells a side, e.g. one head on a
// head-analysis probe. Max pooling: a cell holds the largest probability among the
// (query, key) pairs it covers, so a single sharp peak (a retrieval or induction head's)
// survives the fold.
constexpr int64_t kMaxMapCells = 512;
struct AttentionMap {
    int32_t layer = -1, head = -1;        // query head
    std::string role, probe;              // the role asked about, the probe that defines it
    int64_t n_query = 0, n_key = 0;       // before folding
    int32_t rows = 0, cols = 0;           // after
    std::vector<float> cells;             // [rows][cols]
    std::vector<std::string> token_text;  // each probe position's token
};

// The head-role analysis (core/head_roles.h), as plain scores.
struct HeadAnalysis {
    enum class Status { None, Running, Done, Failed } status = Status::None;
    double progress = 0;                  // 0..1 while running
    std::string stage;                    // the probe running, where the scores came from, or why it failed
    int32_t n_layer = 0, n_head = 0, n_head_kv = 0;
    std::vector<std::string> roles;
    std::vector<std::vector<float>> scores; // per role, [n_layer * n_head] layer-major
    std::vector<float> layer_preference;  // CAKE's, per layer
    AttentionMap map;                     // the head last asked for
    bool map_pending = false;             // the worker is computing the next one
    uint32_t revision = 0;                // bumped on every change: the UI copies it whole then
};

struct Snapshot {
    ModelInfo model;
    HeadAnalysis heads;
    std::vector<MethodSchema> methods;
    Catalog catalog;
    std::vector<RunView> runs;
    std::vector<std::string> errors; // for the banner, oldest first
    bool paused = false;             // the run in progress waits before its next decode step
    uint64_t version = 0;            // bumped on every change
};

// Brings `ui` up to `shared`: scalars copied, per-run lists extended by their new tail.
void SyncSnapshot(Snapshot& ui, const Snapshot& shared);

// The one selection every view reads and sets (UI.md: hover shows, click selects, Esc clears).
struct Selection {
    int run = -1;       // index into Snapshot::runs
    int step = -1;      // decode step
    int layer = 0, head = 0; // layer and KV head
    int position = -1;  // token position in the context
    int query_head = -1; // a query head of KV head `head`, or -1: its first
};

// The run the views show: the selected one, or the latest; -1 when there is none.
int SelectedRun(const Selection& selection, const Snapshot& snapshot);

// The query head the selection means: its own when it belongs to the selected KV head,
// else that KV head's first. `group`: query heads per KV head.
int SelectedQueryHead(const Selection& selection, int group);

// ---- folding long axes (a texture's texels, a trace's bins): item i of n goes to cell
// i * cells / n; cell c starts at the first item that maps to it.
inline int64_t FoldCell(int64_t i, int64_t n, int64_t cells) { return i * cells / n; }
inline int64_t FoldStart(int64_t c, int64_t n, int64_t cells) { return (c * n + cells - 1) / cells; }
enum class Pool { Max, Sum };
// A rows x cols matrix folded into out_rows x out_cols cells (each at most its input).
std::vector<float> PoolMatrix(const float* values, int64_t rows, int64_t cols, int64_t out_rows, int64_t out_cols,
                              Pool pool);

// ---- a run's cache contents, from its evictions
// The step after which `pos` is in the cache: prompt positions from the prefill (step 0),
// the token generated at step k (position n_prompt + k) from step k + 1.
inline int64_t FirstStep(const RunView& run, int64_t pos) { return pos < run.n_prompt ? 0 : pos - run.n_prompt + 1; }
// The token at `pos` as text ("" when unknown).
const std::string& TokenAt(const RunView& run, int64_t pos);

// When each position left one (layer, KV head): the step, or INT32_MAX while kept.
// Rebuilt when the run or the head changes, extended as the run's evictions grow.
struct EvictionIndex {
    int run = -1, layer = -1, head = -1;
    size_t consumed = 0;
    std::vector<int32_t> evicted_at;

    void Update(int r, const RunView& rv, int l, int h);
    int32_t At(int64_t pos) const;
    // Whether `pos` is in the cache after step `step`'s decisions.
    bool Kept(const RunView& rv, int64_t pos, int64_t step) const { return FirstStep(rv, pos) <= step && At(pos) > step; }
};

// Two runs' kept sets at one step, layer and KV head, position by position.
struct KeptDiff {
    enum Where : uint8_t { Neither, AOnly, BOnly, Both };
    std::vector<uint8_t> where; // per position of the longer context
    int64_t a_only = 0, b_only = 0, both = 0;
};
KeptDiff DiffKept(const RunView& a, const EvictionIndex& ia, const RunView& b, const EvictionIndex& ib, int64_t step);

const char* StatusName(RunView::Status status);

} // namespace kvscope
