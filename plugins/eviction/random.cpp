// random: a uniform random score per slot, the floor any scorer should beat. Deterministic:
// a counter-based hash of (view.seed, layer, KV head, slot), so the same run seed and step
// give the same scores on any device.
#include "plugins/sdk/kvscope_plugin_aten.h"

namespace {

uint64_t mix(uint64_t x) { // splitmix64's finaliser
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

struct Random {
    static constexpr const char* name = "random";
    static constexpr const char* help = "keep random tokens (a seeded hash of seed, layer, step, head and slot)";
    static constexpr kvs_param_def params[] = {
        {"sinks", KVS_PARAM_INT, 0, 0, 1 << 20, "first tokens never evicted"},
        {"recent", KVS_PARAM_INT, 0, 0, 1 << 20, "newest tokens never evicted"},
        {"every", KVS_PARAM_INT, 0, 0, 1 << 20, "act every N decode steps (0 = after the prefill only)"},
    };

    Random(const double* p, kvs_instance_info& info) {
        info.sinks = int64_t(p[0]);
        info.recent = int64_t(p[1]);
        info.every = int64_t(p[2]);
    }

    at::Tensor score(const kvs::Step& step) const {
        const int64_t L = step.v.n_layer, n_kv = step.v.n_head_kv, S = step.v.n_max;
        at::Tensor out = at::empty({L, n_kv, S}, at::kFloat);
        float* o = out.data_ptr<float>();
        for (int64_t l = 0; l < L; ++l)
            for (int64_t g = 0; g < n_kv; ++g)
                for (int64_t s = 0; s < S; ++s)
                    o[(l * n_kv + g) * S + s] =
                        float(mix(step.v.seed ^ mix(uint64_t(l) << 52 ^ uint64_t(g) << 40 ^ uint64_t(s))) >> 40) * 0x1p-24f;
        return out;
    }
};

} // namespace

const kvs_method* kvs_method_random() { return kvs::method<Random>(); }
