// libFuzzer target: one safetensors file as SafetensorsFile::open parses it (header
// length, header JSON with duplicate keys refused, dtypes, shapes, data_offsets), then
// every tensor's first and last byte, which must lie inside the input.
#include "fuzz_util.h"

#include "core/safetensors.h"

using namespace kvscope;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const fuzz::ExactCopy input(data, size);
    fuzz::expect_clean_errors([&] {
        const SafetensorsFile file = SafetensorsFile::parse(input.data(), input.size(), "fuzz.safetensors");
        unsigned sum = 0;
        for (const StTensor& t : file.tensors()) {
            uint64_t elements = 1;
            for (int64_t d : t.shape) elements *= uint64_t(d);
            if (elements * st_dtype_size(t.dtype) != t.n_bytes) fuzz::fail("n_bytes disagrees with the shape");
            if (t.data < input.data() || t.data + t.n_bytes > input.data() + input.size())
                fuzz::fail("tensor '" + t.name + "' lies outside the file");
            if (t.n_bytes) sum += t.data[0] + t.data[t.n_bytes - 1];
        }
        for (const auto& [key, value] : file.metadata()) sum += unsigned(key.size() + value.size());
        (void)sum;
    });
    return 0;
}
