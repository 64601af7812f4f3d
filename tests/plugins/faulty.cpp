// Test plugin: one method per run-time fault the policy host must stop (tests/test_plugins.cpp),
// crashes included.
// Each select_* method keeps the newest slots of each head, then breaks the rule its name
// says. kvs_test_live_instances() counts instances created and not yet destroyed.
#include "plugins/sdk/kvscope_plugin.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <stdexcept>

namespace {

int live = 0;

int create(const double*, kvs_instance_info*, void** self, char*, size_t) {
    *self = &live;
    ++live;
    return 0;
}
int create_with_sinks(const double* p, kvs_instance_info* info, void** self, char* err, size_t n) {
    info->sinks = 4;
    return create(p, info, self, err, n);
}
int create_fails(const double*, kvs_instance_info*, void**, char* err, size_t n) {
    std::snprintf(err, n, "no calibration file given");
    return -1;
}
void destroy(void*) { --live; }

int score_throws(void*, const kvs_step_view*, DLTensor*, char*, size_t) {
    throw std::runtime_error("score exploded on purpose");
}
int score_nan(void*, const kvs_step_view*, DLTensor* out, char*, size_t) {
    std::fill_n(static_cast<float*>(out->data), out->shape[0] * out->shape[1] * out->shape[2], NAN); // contiguous
    return 0;
}
int score_zero(void*, const kvs_step_view*, DLTensor* out, char*, size_t) {
    std::fill_n(static_cast<float*>(out->data), out->shape[0] * out->shape[1] * out->shape[2], 0.f);
    return 0;
}

// Crashes, each on the thread that calls the hook (core/crash_guard.h catches them).
volatile int g_zero = 0;
int* volatile g_nowhere = nullptr;
int score_segfaults(void*, const kvs_step_view*, DLTensor*, char*, size_t) {
    *g_nowhere = 1;
    return 0;
}
int score_divides_by_zero(void*, const kvs_step_view* v, DLTensor*, char*, size_t) {
    return v->n_layer / g_zero; // integer division: SIGFPE on x86 and most others
}
int recurse(int depth) {
    volatile char frame[4096];
    frame[0] = char(depth);
    return g_zero == 0 ? recurse(depth + 1) + frame[0] : 0; // not a tail call
}
int score_overflows_stack(void*, const kvs_step_view*, DLTensor*, char*, size_t) { return recurse(0); }

enum Fault { OUT_OF_RANGE, DUPLICATE, OVER_BUDGET, EVICTS_SINK };
template <Fault F> int select(void*, const kvs_step_view* v, int64_t* slots, int64_t* counts, char*, size_t) {
    for (int32_t i = 0; i < v->n_layer * v->n_head_kv; ++i) {
        const int64_t n = v->n_slots[i], keep = F == OVER_BUDGET ? n : std::min(n, v->budget[i]);
        int64_t* row = slots + i * v->n_max;
        for (int64_t i = 0; i < keep; ++i) row[i] = n - keep + i;
        if (F == OUT_OF_RANGE) row[0] = n;
        if (F == DUPLICATE) row[0] = row[1];
        counts[i] = keep;
    }
    return 0;
}

int layer_budgets_over(void*, const kvs_budget_view* v, int64_t* out, char*, size_t) {
    for (int32_t l = 0; l < v->n_layer; ++l) out[l] = 2 * v->budget;
    return 0;
}
// Head budgets: the whole model's budget to every head, or -1 to one of them.
int head_budgets_over(void*, const kvs_step_view* v, const DLTensor*, int64_t* out, char*, size_t) {
    const int64_t heads = int64_t(v->n_layer) * v->n_head_kv;
    for (int64_t i = 0; i < heads; ++i) out[i] = heads * v->budget[i];
    return 0;
}
int head_budgets_negative(void*, const kvs_step_view* v, const DLTensor*, int64_t* out, char*, size_t) {
    std::copy_n(v->budget, int64_t(v->n_layer) * v->n_head_kv, out);
    out[v->n_head_kv + 1] = -1; // layer 1, KV head 1
    return 0;
}
int layer_budgets_even(void*, const kvs_budget_view* v, int64_t* out, char*, size_t) {
    std::fill_n(out, v->n_layer, v->budget);
    return 0;
}

using Create = decltype(kvs_method::create);
kvs_method method(const char* name, Create make, decltype(kvs_method::score) score,
                  decltype(kvs_method::select) select = nullptr) {
    kvs_method m{};
    m.struct_size = sizeof m;
    m.name = name;
    m.family = "scorer";
    m.help = "misbehaves on purpose (test plugin)";
    m.create = make;
    m.destroy = destroy;
    m.score = score;
    m.select = select;
    return m;
}

kvs_method allocator(const char* name, Create make, decltype(kvs_method::layer_budgets) layer_budgets) {
    kvs_method m = method(name, make, nullptr);
    m.family = "allocator";
    m.layer_budgets = layer_budgets;
    return m;
}

kvs_method head_allocator(const char* name, decltype(kvs_method::head_budgets) head_budgets) {
    kvs_method m = method(name, create, nullptr);
    m.family = "allocator";
    m.head_budgets = head_budgets;
    return m;
}

} // namespace

extern "C" KVS_EXPORT int kvs_test_live_instances(void) { return live; }

extern "C" KVS_EXPORT const kvs_plugin* kvscope_plugin(void) {
    static const kvs_method all[] = {
        method("score_throws", create, score_throws),
        method("score_nan", create, score_nan),
        method("score_zero", create, score_zero), // well behaved
        method("score_segfaults", create, score_segfaults),
        method("score_divides_by_zero", create, score_divides_by_zero),
        method("score_overflows_stack", create, score_overflows_stack),
        method("select_out_of_range", create, nullptr, select<OUT_OF_RANGE>),
        method("select_duplicate", create, nullptr, select<DUPLICATE>),
        method("select_over_budget", create, nullptr, select<OVER_BUDGET>),
        method("select_evicts_sink", create_with_sinks, nullptr, select<EVICTS_SINK>),
        allocator("alloc_over_total", create, layer_budgets_over),
        head_allocator("heads_over_total", head_budgets_over),
        head_allocator("heads_negative", head_budgets_negative),
        allocator("create_fails", create_fails, layer_budgets_even),
    };
    static const kvs_method* methods[std::size(all)];
    for (size_t i = 0; i < std::size(all); ++i) methods[i] = &all[i];
    static const kvs_plugin plugin = {KVS_ABI_VERSION, KVS_STRUCT_SIZES, "faulty", nullptr, methods, int32_t(std::size(all))};
    return &plugin;
}
