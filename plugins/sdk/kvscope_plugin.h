/* KVScope plugin SDK: the one header a KV-cache method needs.
 *
 * A plugin is a shared library exporting one C function, kvscope_plugin(), that returns a
 * descriptor: the ABI version, the sizes of the structs below as the plugin saw them, a
 * build tag (only for plugins that link libtorch), and its methods. Each method has a name,
 * a parameter schema and a small table of hooks. Built-in methods are written against this
 * same header (plugins/eviction/, plugins/allocation/).
 *
 * The engine owns the loop; a method never calls the model. After a step it hands the
 * method one view of every layer at once (positions, attention mass, keys, ... as DLPack
 * tensors with a leading layer dimension) and takes back decisions in buffers the host
 * owns. One call per step, not per layer: on a GPU each tensor operation a hook runs is a
 * kernel launch, and thirty layers' worth of small launches would cost more than the
 * model's own step.
 *
 *   scorer     observe()  every step, to update per-slot state (H2O's accumulated mass)
 *              score()    when it acts: one float per slot, higher = keep; the host keeps
 *                         the top B per KV head, protecting sinks and a recent window
 *              select()   instead of score(): the plugin returns the kept slots itself
 *   allocator  layer_budgets()  split the average budget across layers (PyramidKV)
 *              head_budgets()   split the budget across KV heads (AdaKV within a layer,
 *                               HeadKV or CAKE across the whole model)
 *
 * Head-aware methods read the model's head profile (kvs_step_view.head_roles): role scores
 * per layer x query head from the probe suite (DESIGN.md §6), which the host computes once
 * per model and stores.
 *
 * Codec, merger, retriever and recompute hooks take the reserved slots at the end of
 * kvs_method in later ABI versions.
 *
 * Rules:
 * - Every hook returns 0 on success, < 0 on error with a message in err (NUL-terminated,
 *   at most err_size bytes). State is unchanged on error. Exceptions must not cross the
 *   boundary; the host treats one that does as an error too.
 * - An instance keeps no mutable state of its own between calls: what must survive a step
 *   lives in the per-slot state the host keeps for it (kvs_instance_info.n_state floats per
 *   slot, moved with the slot when the cache is compacted). So a run can fork a lane by
 *   copying the cache, and decisions are reproducible.
 * - Tensors are on the run's device (CPU or CUDA); a hook works on them in place or copies
 *   what it needs. Randomness comes from kvs_step_view.seed only.
 */
#ifndef KVSCOPE_PLUGIN_H
#define KVSCOPE_PLUGIN_H

#include <dlpack/dlpack.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVS_ABI_VERSION 3

#if defined(_WIN32)
#define KVS_EXPORT __declspec(dllexport)
#else
#define KVS_EXPORT __attribute__((visibility("default")))
#endif

/* ---- parameters ----------------------------------------------------------------------- */

typedef enum kvs_param_type { KVS_PARAM_INT = 0, KVS_PARAM_FLOAT = 1, KVS_PARAM_BOOL = 2 } kvs_param_type;

typedef struct kvs_param_def {
    const char* name;      /* [a-z_][a-z0-9_]* */
    kvs_param_type type;
    double default_value;
    double min_value;      /* inclusive range; the host refuses values outside it */
    double max_value;
    const char* help;      /* one line */
} kvs_param_def;

/* ---- what an instance tells the host ---------------------------------------------------- */

/* needs */
#define KVS_NEEDS_KEYS 1u         /* kvs_step_view.keys is filled */
#define KVS_NEEDS_VALUES 2u       /* kvs_step_view.values is filled */
#define KVS_NEEDS_FUTURE 4u       /* kvs_step_view.future_mass is filled (oracle methods) */
#define KVS_NEEDS_HEAD_ROLES 8u   /* kvs_step_view.head_roles is filled */
#define KVS_NEEDS_MOMENTS 16u     /* kvs_step_view.mass_sq and mass_entropy are filled */
/* Not a view but a service: every token this run evicts from a head is folded into that
 * head's compensation slot (RazorAttention): the mean of the evicted keys and values, which
 * every later query attends to with logit q.k/sqrt(d) + ln(count), so it stands for all of
 * them. It costs one slot per head that has evicted anything. */
#define KVS_COMPENSATE 32u

/* Role scores in kvs_step_view.head_roles (METHODS.md §3; core/head_roles.h defines each). */
enum {
    KVS_ROLE_SINK = 0,           /* mass on position 0, natural text */
    KVS_ROLE_LOCALITY = 1,       /* mass on the last 64 keys */
    KVS_ROLE_PREVIOUS_TOKEN = 2, /* mass on t - 1 */
    KVS_ROLE_ENTROPY = 3,        /* attention entropy / ln(t + 1); 1 = uniform */
    KVS_ROLE_INDUCTION = 4,      /* repeated random tokens: mass on the token after the earlier copy */
    KVS_ROLE_ECHO = 5,           /* repeated random tokens: mass on the earlier copy itself */
    KVS_ROLE_RETRIEVAL = 6,      /* needles: share of copied answer tokens whose top key is their source */
    KVS_N_ROLES = 7
};

/* mass_window */
#define KVS_MASS_NONE 0           /* no attention statistics */
#define KVS_MASS_ALL (-1)         /* mass from every query of the step */

typedef struct kvs_instance_info {
    size_t struct_size;
    int64_t mass_window;      /* KVS_MASS_NONE, KVS_MASS_ALL, or w > 0: the step's last w queries */
    int64_t every;            /* act after prefill and every `every` decode steps; 0 = prefill only */
    int64_t sinks;            /* oldest tokens the host never evicts */
    int64_t recent;           /* newest tokens the host never evicts ... */
    double recent_fraction;   /* ... plus floor(recent_fraction * budget) more */
    uint32_t needs;           /* KVS_NEEDS_* */
    int32_t n_state;          /* floats of per-slot state the host keeps (zero on entry) */
} kvs_instance_info;

/* ---- the views a hook reads ------------------------------------------------------------- */

/* Every layer after a step. The slots of (layer l, KV head g) are its cache rows in storage
 * order, padded to n_max: a slot holds a token when its position is >= 0 (n_slots[l *
 * n_head_kv + g] of them do). Evicted tokens leave holes that later tokens fill, so the
 * order is not the position order: sort by position where order matters. A slot without a
 * token has zero mass and is ignored in what a hook returns. Per-(layer, head) arrays are
 * layer-major. */
typedef struct kvs_step_view {
    size_t struct_size;
    int32_t n_layer;
    int32_t n_head, n_head_kv, head_dim;  /* query heads, KV heads (group = n_head / n_head_kv) */
    int64_t n_prompt;                     /* prompt tokens */
    int64_t n_past;                       /* tokens processed, this step's included */
    int64_t step;                         /* 0 = end of prefill, k = k-th decode step */
    int64_t n_max;                        /* padded slots per (layer, KV head): S */
    const int64_t* n_slots;               /* [n_layer * n_head_kv] tokens held, host memory */
    const int64_t* budget;                /* [n_layer * n_head_kv] slots to keep (score/select) */
    uint64_t seed;                        /* the run's seed mixed with the step */
    DLTensor positions;                   /* int32 [n_layer, n_head_kv, S]: each slot's original position, -1 none */
    DLTensor mass;                        /* float32 [n_layer, n_head, S]: attention each key received
                                             from the mass_window queries of this step, per query head */
    DLTensor keys;                        /* [n_layer, n_head_kv, S, head_dim], model dtype, post-RoPE
                                             (KVS_NEEDS_KEYS) */
    DLTensor values;                      /* [n_layer, n_head_kv, S, head_dim] (KVS_NEEDS_VALUES) */
    DLTensor future_mass;                 /* float32 [n_layer, n_head, S]: attention each key receives
                                             from all later queries of the reference run (KVS_NEEDS_FUTURE) */
    DLTensor state;                       /* float32 [n_layer, n_head_kv, S, n_state], writable */
    DLTensor mass_sq;                     /* float32 [n_layer, n_head, S]: sum over the mass_window queries
                                             of A^2 (KVS_NEEDS_MOMENTS): with mass, the variance over them */
    DLTensor mass_entropy;                /* float32 [n_layer, n_head, S]: the same of -A ln A */
    DLTensor head_roles;                  /* float32 [n_layer, n_head, KVS_N_ROLES], host memory: the model's
                                             role scores (KVS_NEEDS_HEAD_ROLES) */
} kvs_step_view;
/* A tensor a method did not ask for has ndim 0 and data NULL. */

/* Before a compression step, to split the budget across layers. */
typedef struct kvs_budget_view {
    size_t struct_size;
    int32_t n_layer, n_head_kv;
    int64_t n_prompt, n_past;
    int64_t budget;           /* average slots per (layer, KV head), protected ones included */
    int64_t protected_recent; /* the scorer's protected recent window (SnapKV's w) */
} kvs_budget_view;

/* ---- a method ------------------------------------------------------------------------- */

typedef int (*kvs_step_hook)(void* self, const kvs_step_view* view, char* err, size_t err_size);

typedef struct kvs_method {
    size_t struct_size;
    const char* name;           /* used in run specs: [a-z_][a-z0-9_]* */
    const char* family;         /* "scorer" or "allocator" */
    const char* help;           /* one line */
    const kvs_param_def* params;
    int32_t n_params;

    /* params: n_params values in schema order, already checked against the ranges. */
    int (*create)(const double* params, kvs_instance_info* info, void** self, char* err, size_t err_size);
    void (*destroy)(void* self);

    /* scorer: observe is optional; exactly one of score and select. */
    kvs_step_hook observe;
    /* out: float32 [n_layer, n_head_kv, S] on the view's device; padding is ignored. */
    int (*score)(void* self, const kvs_step_view* view, DLTensor* out, char* err, size_t err_size);
    /* out_slots: host int64 [n_layer, n_head_kv, S]; write the slots (l, g) keeps (any order;
       slots holding tokens) to row l * n_head_kv + g and their count to out_counts[l * n_head_kv + g]
       (<= budget there). */
    int (*select)(void* self, const kvs_step_view* view, int64_t* out_slots, int64_t* out_counts,
                  char* err, size_t err_size);

    /* allocator: either or both. */
    /* out: host int64 [n_layer]; should sum to n_layer * budget. */
    int (*layer_budgets)(void* self, const kvs_budget_view* view, int64_t* out, char* err, size_t err_size);
    /* view.budget holds each layer's budget B_l for every head; scores: float32 [n_layer,
       n_head_kv, S] from the scorer with protected slots at +inf. out: host int64
       [n_layer * n_head_kv], all heads together at most n_head_kv * sum_l B_l: an allocator
       may move slots between layers here (a head may get more than it holds; it keeps what
       it holds). */
    int (*head_budgets)(void* self, const kvs_step_view* view, const DLTensor* scores, int64_t* out, char* err,
                        size_t err_size);

    void* reserved[8];          /* codec, merger, retriever, recompute: NULL for now */
} kvs_method;

/* ---- the plugin ------------------------------------------------------------------------ */

typedef struct kvs_plugin {
    uint32_t abi_version;       /* KVS_ABI_VERSION */
    uint32_t sizes[4];          /* KVS_STRUCT_SIZES: what the plugin was compiled with */
    const char* name;
    const char* build_tag;      /* KVS_BUILD_TAG for plugins that link libtorch, else NULL */
    const kvs_method* const* methods;
    int32_t n_methods;
} kvs_plugin;

#define KVS_STRUCT_SIZES                                                                        \
    { (uint32_t)sizeof(kvs_method), (uint32_t)sizeof(kvs_step_view), (uint32_t)sizeof(kvs_budget_view), \
      (uint32_t)sizeof(kvs_instance_info) }

/* The one symbol a plugin exports. */
#define KVS_ENTRY_SYMBOL "kvscope_plugin"
typedef const kvs_plugin* (*kvs_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* KVSCOPE_PLUGIN_H */
