// Host vectors to a device without stalling the host.
//
// To a GPU the data goes through pinned memory, asynchronously: an ordinary copy from
// pageable memory would make the host wait until the device drains its queue, once per
// copy. (The caching host allocator keeps the pinned block until the copy has run.) On the
// CPU it is a plain copy.
#pragma once

#include <ATen/ATen.h>

#include <type_traits>
#include <vector>

namespace kvscope {

template <class T> at::Tensor upload(const std::vector<T>& v, at::IntArrayRef shape, c10::Device device) {
    static_assert(std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t> || std::is_same_v<T, float>);
    const at::ScalarType type = std::is_same_v<T, int32_t> ? at::kInt : std::is_same_v<T, float> ? at::kFloat : at::kLong;
    at::Tensor host = at::from_blob(const_cast<T*>(v.data()), shape, type);
    if (device.is_cpu()) return host.clone();
    at::Tensor pinned = at::empty(shape, at::TensorOptions(type).pinned_memory(true));
    pinned.copy_(host);
    return pinned.to(device, /*non_blocking=*/true);
}

template <class T> at::Tensor upload(const std::vector<T>& v, c10::Device device) {
    return upload(v, {int64_t(v.size())}, device);
}

} // namespace kvscope
