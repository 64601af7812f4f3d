// pyramid: PyramidKV's layer budgets (METHODS.md §2.1 PyramidKV, formula of the public
// code), linear in depth: with B̄ = B - w, kmin = floor(B̄/beta), kmax = 2B̄ - kmin (at most
// n - w, then kmin = 2B̄ - kmax), step = floor((kmax - kmin)/(L - 1)), B_l = kmax - l*step + w.
// Pair it with a scorer that protects w (snapkv+pyramid).
#include "plugins/sdk/kvscope_plugin_aten.h"

#include <algorithm>
#include <cmath>

namespace {

struct Pyramid {
    static constexpr const char* name = "pyramid";
    static constexpr const char* help =
        "PyramidKV: layer budgets linear in depth; [assume] the excess of floor(step) is taken back one slot at a "
        "time from the shallowest layers (sum = L*B exactly), B_l >= w, B <= w gives uniform budgets";
    static constexpr kvs_param_def params[] = {
        {"beta", KVS_PARAM_FLOAT, 20, 1, 1e6, "steepness: the deepest layer gets about (B - w)/beta + w"},
    };

    double beta;

    Pyramid(const double* p, kvs_instance_info&) : beta(p[0]) {}

    void layer_budgets(const kvs_budget_view& v, int64_t* out) const {
        const int64_t L = v.n_layer, B = v.budget, w = v.protected_recent, n = v.n_past, avg = B - w;
        std::fill(out, out + L, B);
        // One layer, a budget no larger than the protected window, or nothing to cut:
        // there is no pyramid to build.
        if (L < 2 || avg <= 0 || n <= B) return;
        int64_t kmin = int64_t(std::floor(double(avg) / beta)), kmax = 2 * avg - kmin;
        if (kmax >= n - w) {
            kmax = n - w;
            kmin = 2 * avg - kmax;
        }
        const int64_t step = (kmax - kmin) / (L - 1);
        int64_t excess = -L * B;
        for (int64_t l = 0; l < L; ++l) {
            out[l] = kmax - l * step + w;
            excess += out[l];
        }
        // Flooring step leaves the sum above L*B (by less than L*step). Take one slot at a
        // time from the shallowest layers, keeping B_l non-increasing and >= w; the last
        // layer of the widest plateau can always give one, so this ends.
        while (excess > 0)
            for (int64_t l = 0; l < L && excess > 0; ++l)
                if (out[l] > w && (l == L - 1 || out[l] > out[l + 1])) {
                    --out[l];
                    --excess;
                }
    }
};

} // namespace

const kvs_method* kvs_method_pyramid() { return kvs::method<Pyramid>(); }
