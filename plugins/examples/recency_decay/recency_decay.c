/* recency_decay: an out-of-tree KVScope plugin in plain C, against the C ABI only.
 *
 * decayed_attention keeps the tokens that got attention recently and are not too old:
 *
 *   score(l, g, s) = mean over the query heads h of KV head g of mass[l, h, s]  x  exp(-lambda * age)
 *   age            = n_past - 1 - position(l, g, s)
 *
 * where mass is the attention each cached token received from the step's last `window`
 * queries. The host keeps the `budget` best slots per KV head, never evicting the first
 * `sinks` and the last `recent` tokens. CPU runs only: it reads the views' memory directly.
 */
#include "plugins/sdk/kvscope_plugin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Parameters, in schema order: name, type, default, min, max, help. */
enum { P_LAMBDA, P_WINDOW, P_SINKS, P_RECENT, P_EVERY, N_PARAMS };
static const kvs_param_def params[N_PARAMS] = {
    {"lambda", KVS_PARAM_FLOAT, 0.01, 0, 10, "decay per token of age"},
    {"window", KVS_PARAM_INT, 32, 1, 1 << 20, "queries whose attention is measured (the step's last)"},
    {"sinks", KVS_PARAM_INT, 4, 0, 1 << 20, "first tokens never evicted"},
    {"recent", KVS_PARAM_INT, 8, 0, 1 << 20, "newest tokens never evicted"},
    {"every", KVS_PARAM_INT, 0, 0, 1 << 20, "act every N decode steps (0 = after the prefill only)"},
};

/* An instance holds its parameters only: the ABI keeps no mutable state in it. */
typedef struct decay {
    double lambda;
} decay;

static int create(const double* p, kvs_instance_info* info, void** self, char* err, size_t err_size) {
    decay* d = malloc(sizeof *d);
    if (!d) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    d->lambda = p[P_LAMBDA];
    info->mass_window = (int64_t)p[P_WINDOW];
    info->sinks = (int64_t)p[P_SINKS];
    info->recent = (int64_t)p[P_RECENT];
    info->every = (int64_t)p[P_EVERY];
    *self = d;
    return 0;
}

static void destroy(void* self) { free(self); }

/* Address of element [i, j, k] of a 3-D view (strides are in elements; NULL = row-major). */
static void* at3(const DLTensor* t, int64_t i, int64_t j, int64_t k) {
    const int64_t s0 = t->strides ? t->strides[0] : t->shape[1] * t->shape[2];
    const int64_t s1 = t->strides ? t->strides[1] : t->shape[2], s2 = t->strides ? t->strides[2] : 1;
    return (char*)t->data + t->byte_offset + (i * s0 + j * s1 + k * s2) * (t->dtype.bits / 8);
}

static int check(const DLTensor* t, const char* what, uint8_t code, uint8_t bits, char* err, size_t err_size) {
    if (t->data == NULL || t->ndim != 3) {
        snprintf(err, err_size, "%s: expected a 3-D tensor", what);
        return -1;
    }
    if (t->device.device_type != kDLCPU) {
        snprintf(err, err_size, "%s is on %s: decayed_attention reads CPU memory only (run with --device cpu)", what,
                 t->device.device_type == kDLCUDA ? "CUDA" : "a device other than the CPU");
        return -1;
    }
    if (t->dtype.code != code || t->dtype.bits != bits || t->dtype.lanes != 1) {
        snprintf(err, err_size, "%s has an unexpected dtype", what);
        return -1;
    }
    return 0;
}

static int score(void* self, const kvs_step_view* v, DLTensor* out, char* err, size_t err_size) {
    const decay* d = self;
    if (check(&v->positions, "positions", kDLInt, 32, err, err_size) ||
        check(&v->mass, "mass", kDLFloat, 32, err, err_size) || check(out, "out", kDLFloat, 32, err, err_size))
        return -1;
    const int group = v->n_head / v->n_head_kv;
    for (int l = 0; l < v->n_layer; ++l)
        for (int g = 0; g < v->n_head_kv; ++g)
            for (int64_t s = 0; s < v->n_max; ++s) {
                const int32_t position = *(const int32_t*)at3(&v->positions, l, g, s);
                if (position < 0) continue; /* no token in this slot */
                double mass = 0;
                for (int h = g * group; h < (g + 1) * group; ++h) mass += *(const float*)at3(&v->mass, l, h, s);
                const int64_t age = v->n_past - 1 - position;
                *(float*)at3(out, l, g, s) = (float)(mass / group * exp(-d->lambda * (double)age));
            }
    return 0;
}

static const kvs_method decayed_attention = {
    .struct_size = sizeof(kvs_method),
    .name = "decayed_attention",
    .family = "scorer",
    .help = "recent attention x exp(-lambda * age): attended and not too old",
    .params = params,
    .n_params = N_PARAMS,
    .create = create,
    .destroy = destroy,
    .score = score,
};

/* The one exported symbol: the descriptor the host checks before using anything else. */
KVS_EXPORT const kvs_plugin* kvscope_plugin(void) {
    static const kvs_method* const methods[] = {&decayed_attention};
    static const kvs_plugin plugin = {
        .abi_version = KVS_ABI_VERSION,
        .sizes = KVS_STRUCT_SIZES,
        .name = "recency_decay",
        .build_tag = NULL, /* no libtorch inside */
        .methods = methods,
        .n_methods = 1,
    };
    return &plugin;
}
