// C++ over the plugin ABI, for methods that compute with libtorch (every built-in one).
//
// A method is a struct with a constructor and the hooks it needs, as ordinary C++ on
// at::Tensor; kvs::method<M>() turns it into the C descriptor, catching exceptions at the
// boundary and wrapping the DLPack views without copying. The smallest scorer:
//
//   struct KeyNorm {
//       static constexpr const char* name = "key_norm";
//       static constexpr const char* help = "keep the keys with the smallest L2 norm";
//       static constexpr kvs_param_def params[] = {{"sinks", KVS_PARAM_INT, 0, 0, 1 << 20, "..."}};
//       KeyNorm(const double* p, kvs_instance_info& info) { info.needs = KVS_NEEDS_KEYS; ... }
//       at::Tensor score(const kvs::Step& s) const { return -s.keys.to(at::kFloat).norm(2, -1); }
//   };
//   const kvs_method* kvs_method_key_norm() { return kvs::method<KeyNorm>(); }
//
// Hooks a struct may define (all optional, see kvscope_plugin.h for when each runs); the
// tensors cover every layer at once (leading dimension n_layer):
//   void observe(const kvs::Step&)                        (writes s.state)
//   at::Tensor score(const kvs::Step&)                     -> float [n_layer, n_head_kv, S]
//   void select(const kvs::Step&, int64_t* slots, int64_t* counts)
//   void layer_budgets(const kvs_budget_view&, int64_t* out)
//   void head_budgets(const kvs::Step&, const at::Tensor& scores, int64_t* out)
#pragma once

#include "plugins/sdk/kvscope_plugin.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

// Compiler and libtorch, checked at load for plugins that link libtorch: a plugin built
// against another libtorch or C++ ABI would pass tensors the host cannot read.
#define KVS_STRINGIFY2(x) #x
#define KVS_STRINGIFY(x) KVS_STRINGIFY2(x)
#define KVS_BUILD_TAG                                                                          \
    "gcc " __VERSION__ " cxx11abi=" KVS_STRINGIFY(_GLIBCXX_USE_CXX11_ABI) " torch " TORCH_VERSION

namespace kvs {

// A DLPack view as an at::Tensor over the same memory (no copy, no ownership); an
// absent tensor (ndim 0, no data) becomes an undefined at::Tensor.
inline at::Tensor tensor(const DLTensor& t) {
    if (t.data == nullptr) return {};
    at::ScalarType type = at::ScalarType::Undefined;
    const int bits = t.dtype.bits;
    if (t.dtype.lanes == 1) {
        if (t.dtype.code == kDLFloat) type = bits == 16 ? at::kHalf : bits == 32 ? at::kFloat : bits == 64 ? at::kDouble : type;
        if (t.dtype.code == kDLBfloat && bits == 16) type = at::kBFloat16;
        if (t.dtype.code == kDLInt) type = bits == 8 ? at::kChar : bits == 16 ? at::kShort : bits == 32 ? at::kInt : bits == 64 ? at::kLong : type;
        if (t.dtype.code == kDLUInt && bits == 8) type = at::kByte;
    }
    if (type == at::ScalarType::Undefined)
        throw std::invalid_argument("a DLPack tensor of dtype code " + std::to_string(t.dtype.code) + ", " +
                                    std::to_string(bits) + " bits, " + std::to_string(t.dtype.lanes) + " lanes");
    at::Device device = t.device.device_type == kDLCUDA ? at::Device(at::kCUDA, t.device.device_id) : at::kCPU;
    at::IntArrayRef sizes(t.shape, t.ndim);
    void* data = static_cast<char*>(t.data) + t.byte_offset;
    if (t.strides == nullptr) return at::from_blob(data, sizes, at::TensorOptions(type).device(device));
    return at::from_blob(data, sizes, at::IntArrayRef(t.strides, t.ndim), at::TensorOptions(type).device(device));
}

// The step's view with its tensors wrapped.
struct Step {
    const kvs_step_view& v;
    at::Tensor positions, mass, keys, values, future_mass, state, mass_sq, mass_entropy, head_roles;

    explicit Step(const kvs_step_view& view)
        : v(view), positions(tensor(view.positions)), mass(tensor(view.mass)), keys(tensor(view.keys)),
          values(tensor(view.values)), future_mass(tensor(view.future_mass)), state(tensor(view.state)),
          mass_sq(tensor(view.mass_sq)), mass_entropy(tensor(view.mass_entropy)), head_roles(tensor(view.head_roles)) {}

    int64_t group() const { return v.n_head / v.n_head_kv; }
    // [n_layer, n_head, S] per query head -> [n_layer, n_head_kv, S] by the mean over each
    // KV head's group (METHODS.md "mean-G"; the query heads of KV head g are g*G .. g*G+G-1).
    at::Tensor group_mean(const at::Tensor& per_head) const { return by_group(per_head).mean(2); }
    at::Tensor group_sum(const at::Tensor& per_head) const { return by_group(per_head).sum(2); }
    // bool [n_layer, n_head_kv, S]: slots that hold a token.
    at::Tensor valid() const { return positions.ge(0); }
    // float [n_layer, n_head] on the host: one role's score per query head (KVS_ROLE_*).
    at::Tensor role(int r) const {
        if (!head_roles.defined()) throw std::invalid_argument("no head roles in the view: ask for KVS_NEEDS_HEAD_ROLES");
        return head_roles.select(2, r).contiguous();
    }

private:
    at::Tensor by_group(const at::Tensor& per_head) const {
        return per_head.view({v.n_layer, v.n_head_kv, group(), per_head.size(-1)});
    }
};

// Pools per-slot values [..., S] along the slots with an odd kernel, zero-padded (average
// over the kernel's width, as SnapKV's and CAKE's code do, or max). Only meaningful where
// the slots are in position order: after the prefill, before any eviction.
inline at::Tensor pool_slots(const at::Tensor& x, int64_t kernel, bool max_pool) {
    const int64_t S = x.size(-1), pad = kernel / 2;
    at::Tensor m = x.reshape({-1, 1, S});
    m = max_pool ? at::max_pool1d(m, {kernel}, {1}, {pad}) : at::avg_pool1d(m, {kernel}, {1}, {pad}, false, true);
    return m.view(x.sizes());
}

template <class F> int guarded(char* err, size_t err_size, F&& f) {
    try {
        f();
        return 0;
    } catch (const c10::Error& e) { // what() would add a C++ backtrace
        std::snprintf(err, err_size, "%s", e.what_without_backtrace());
    } catch (const std::exception& e) {
        std::snprintf(err, err_size, "%s", e.what());
    } catch (...) {
        std::snprintf(err, err_size, "unknown exception");
    }
    return -1;
}

namespace detail {

template <class M, class = void> struct has_observe : std::false_type {};
template <class M> struct has_observe<M, std::void_t<decltype(&M::observe)>> : std::true_type {};
template <class M, class = void> struct has_score : std::false_type {};
template <class M> struct has_score<M, std::void_t<decltype(&M::score)>> : std::true_type {};
template <class M, class = void> struct has_select : std::false_type {};
template <class M> struct has_select<M, std::void_t<decltype(&M::select)>> : std::true_type {};
template <class M, class = void> struct has_layer_budgets : std::false_type {};
template <class M> struct has_layer_budgets<M, std::void_t<decltype(&M::layer_budgets)>> : std::true_type {};
template <class M, class = void> struct has_head_budgets : std::false_type {};
template <class M> struct has_head_budgets<M, std::void_t<decltype(&M::head_budgets)>> : std::true_type {};

template <class M> kvs_method describe(const char* family) {
    kvs_method m{};
    m.struct_size = sizeof(kvs_method);
    m.name = M::name;
    m.family = family;
    m.help = M::help;
    m.params = M::params;
    m.n_params = int32_t(std::extent_v<decltype(M::params)>);
    m.create = [](const double* p, kvs_instance_info* info, void** self, char* err, size_t n) {
        return guarded(err, n, [&] { *self = new M(p, *info); });
    };
    m.destroy = [](void* self) { delete static_cast<M*>(self); };
    if constexpr (has_observe<M>::value)
        m.observe = [](void* self, const kvs_step_view* v, char* err, size_t n) {
            return guarded(err, n, [&] { static_cast<M*>(self)->observe(Step(*v)); });
        };
    if constexpr (has_score<M>::value)
        m.score = [](void* self, const kvs_step_view* v, DLTensor* out, char* err, size_t n) {
            return guarded(err, n, [&] { tensor(*out).copy_(static_cast<M*>(self)->score(Step(*v))); });
        };
    if constexpr (has_select<M>::value)
        m.select = [](void* self, const kvs_step_view* v, int64_t* slots, int64_t* counts, char* err, size_t n) {
            return guarded(err, n, [&] { static_cast<M*>(self)->select(Step(*v), slots, counts); });
        };
    if constexpr (has_layer_budgets<M>::value)
        m.layer_budgets = [](void* self, const kvs_budget_view* v, int64_t* out, char* err, size_t n) {
            return guarded(err, n, [&] { static_cast<M*>(self)->layer_budgets(*v, out); });
        };
    if constexpr (has_head_budgets<M>::value)
        m.head_budgets = [](void* self, const kvs_step_view* v, const DLTensor* scores, int64_t* out, char* err,
                            size_t n) {
            return guarded(err, n, [&] { static_cast<M*>(self)->head_budgets(Step(*v), tensor(*scores), out); });
        };
    return m;
}

} // namespace detail

// The C descriptor of method struct M; family "scorer" unless M only allocates.
template <class M> const kvs_method* method() {
    constexpr bool allocator = (detail::has_layer_budgets<M>::value || detail::has_head_budgets<M>::value) &&
                               !detail::has_score<M>::value && !detail::has_select<M>::value;
    static const kvs_method m = detail::describe<M>(allocator ? "allocator" : "scorer");
    return &m;
}

} // namespace kvs
