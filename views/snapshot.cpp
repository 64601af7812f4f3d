#include "views/snapshot.h"

#include <algorithm>

namespace kvscope {

namespace {

template <typename T>
void extend(std::vector<T>& to, const std::vector<T>& from) {
    if (to.size() > from.size()) to.clear(); // not a prefix any more: start over
    to.insert(to.end(), from.begin() + std::ptrdiff_t(to.size()), from.end());
}

void sync_attention(AttentionTrace& ui, const AttentionTrace& shared) {
    if (ui.generation != shared.generation || ui.row_size() != shared.row_size()) {
        ui = shared; // thinned or new: start over
        return;
    }
    ui.n_positions = shared.n_positions;
    ui.stride = shared.stride;
    extend(ui.steps, shared.steps);
    extend(ui.mass, shared.mass);
}

void sync_run(RunView& ui, const RunView& shared) {
    ui.status = shared.status;
    ui.method = shared.method;
    ui.budget = shared.budget;
    ui.error = shared.error;
    ui.n_prompt = shared.n_prompt;
    ui.has_reference = shared.has_reference;
    ui.stored_id = shared.stored_id;
    ui.opened = shared.opened;
    ui.reference_steps = shared.reference_steps;
    ui.reference_step_ms = shared.reference_step_ms;
    extend(ui.prompt_text, shared.prompt_text);
    extend(ui.steps, shared.steps);
    extend(ui.token_text, shared.token_text);
    extend(ui.reference_text, shared.reference_text);
    extend(ui.reference_kv_bytes, shared.reference_kv_bytes);
    extend(ui.evictions, shared.evictions);
    sync_attention(ui.attention, shared.attention);
}

} // namespace

void SyncSnapshot(Snapshot& ui, const Snapshot& shared) {
    if (ui.version == shared.version) return;
    ui.model = shared.model;
    if (ui.catalog.version != shared.catalog.version || ui.methods.size() != shared.methods.size()) {
        ui.methods = shared.methods;
        ui.catalog = shared.catalog;
    }
    ui.paused = shared.paused;
    ui.errors = shared.errors;
    if (ui.heads.revision != shared.heads.revision) ui.heads = shared.heads; // rarely: it holds a 512 x 512 map
    ui.runs.resize(shared.runs.size());
    for (size_t i = 0; i < shared.runs.size(); ++i) sync_run(ui.runs[i], shared.runs[i]);
    ui.version = shared.version;
}

const float* AttentionTrace::Row(size_t i, int layer, int head) const {
    if (i >= steps.size() || layer < 0 || layer >= n_layer || head < 0 || head >= n_head) return nullptr;
    const size_t at = i * row_size() + (size_t(layer) * size_t(n_head) + size_t(head)) * size_t(bins);
    return at + size_t(bins) <= mass.size() ? mass.data() + at : nullptr;
}

AttentionTrace AttentionTrace::Shaped(int32_t n_layer, int32_t n_head, int64_t n_positions, int64_t max_bins) {
    AttentionTrace t;
    const int64_t stride = (n_positions + max_bins - 1) / max_bins;
    t.n_layer = n_layer, t.n_head = n_head;
    t.bins = int32_t((n_positions + stride - 1) / stride);
    t.n_positions = t.bins * stride;
    return t;
}

void AttentionTrace::Append(int32_t step, const float* rows, size_t max_bytes) {
    while (!steps.empty() && (steps.size() + 1) * row_size() * sizeof(float) > max_bytes) Thin();
    if (step % stride != 0 || (!steps.empty() && step <= steps.back())) return;
    steps.push_back(step);
    mass.insert(mass.end(), rows, rows + row_size());
}

void AttentionTrace::Thin() {
    const size_t row = row_size();
    size_t kept = 0;
    for (size_t i = 0; i < steps.size(); ++i) {
        if (steps[i] % (2 * stride) != 0) continue;
        steps[kept] = steps[i];
        std::copy_n(mass.begin() + std::ptrdiff_t(i * row), row, mass.begin() + std::ptrdiff_t(kept * row));
        ++kept;
    }
    steps.resize(kept);
    mass.resize(kept * row);
    stride *= 2;
    ++generation;
}

int SelectedRun(const Selection& selection, const Snapshot& snapshot) {
    const int n = int(snapshot.runs.size());
    return selection.run >= 0 && selection.run < n ? selection.run : n - 1;
}

int SelectedQueryHead(const Selection& selection, int group) {
    group = std::max(1, group);
    return selection.query_head >= 0 && selection.query_head / group == selection.head ? selection.query_head
                                                                                       : selection.head * group;
}

std::vector<float> PoolMatrix(const float* values, int64_t rows, int64_t cols, int64_t out_rows, int64_t out_cols,
                              Pool pool) {
    out_rows = std::clamp<int64_t>(out_rows, rows > 0 ? 1 : 0, rows);
    out_cols = std::clamp<int64_t>(out_cols, cols > 0 ? 1 : 0, cols);
    std::vector<float> out(size_t(out_rows * out_cols), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
        float* cell_row = out.data() + FoldCell(r, rows, out_rows) * out_cols;
        for (int64_t c = 0; c < cols; ++c) {
            float& cell = cell_row[FoldCell(c, cols, out_cols)];
            const float v = values[r * cols + c];
            cell = pool == Pool::Max ? std::max(cell, v) : cell + v;
        }
    }
    return out;
}

const std::string& TokenAt(const RunView& run, int64_t pos) {
    static const std::string none;
    if (pos < 0) return none;
    if (pos < run.n_prompt) return size_t(pos) < run.prompt_text.size() ? run.prompt_text[size_t(pos)] : none;
    return size_t(pos - run.n_prompt) < run.token_text.size() ? run.token_text[size_t(pos - run.n_prompt)] : none;
}

void EvictionIndex::Update(int r, const RunView& rv, int l, int h) {
    if (r != run || l != layer || h != head || consumed > rv.evictions.size()) {
        *this = EvictionIndex{};
        run = r, layer = l, head = h;
    }
    for (; consumed < rv.evictions.size(); ++consumed) {
        const Eviction& e = rv.evictions[consumed];
        if (e.layer != l || e.head != h || e.position < 0) continue;
        if (size_t(e.position) >= evicted_at.size()) evicted_at.resize(size_t(e.position) + 1, INT32_MAX);
        evicted_at[size_t(e.position)] = std::min(evicted_at[size_t(e.position)], e.step);
    }
}

int32_t EvictionIndex::At(int64_t pos) const {
    return pos >= 0 && size_t(pos) < evicted_at.size() ? evicted_at[size_t(pos)] : INT32_MAX;
}

KeptDiff DiffKept(const RunView& a, const EvictionIndex& ia, const RunView& b, const EvictionIndex& ib, int64_t step) {
    KeptDiff d;
    const int64_t n = std::max(a.n_prompt, b.n_prompt) + std::max<int64_t>(0, step);
    d.where.resize(size_t(n));
    for (int64_t p = 0; p < n; ++p) {
        const bool in_a = ia.Kept(a, p, step) && p < a.n_prompt + int64_t(a.steps.size());
        const bool in_b = ib.Kept(b, p, step) && p < b.n_prompt + int64_t(b.steps.size());
        d.where[size_t(p)] = uint8_t(in_a && in_b ? KeptDiff::Both : in_a ? KeptDiff::AOnly : in_b ? KeptDiff::BOnly
                                                                                                : KeptDiff::Neither);
        d.a_only += in_a && !in_b;
        d.b_only += in_b && !in_a;
        d.both += in_a && in_b;
    }
    return d;
}

const char* StatusName(RunView::Status status) {
    switch (status) {
    case RunView::Status::Queued: return "queued";
    case RunView::Status::Reference: return "reference";
    case RunView::Status::Running: return "running";
    case RunView::Status::Done: return "done";
    case RunView::Status::Failed: return "failed";
    case RunView::Status::Stopped: return "stopped";
    }
    return "?";
}

} // namespace kvscope
