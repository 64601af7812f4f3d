// streaming_llm: s attention sinks + the newest B - s tokens (METHODS.md §2.1 StreamingLLM),
// position mode (a): kept keys keep their original positions. score = position; the host
// protects the sinks.
#include "plugins/sdk/kvscope_plugin_aten.h"

namespace {

struct StreamingLLM {
    static constexpr const char* name = "streaming_llm";
    static constexpr const char* help =
        "StreamingLLM: s sinks + the newest tokens at their original positions (paper mode (b), "
        "re-rotating keys by slot index, is not implemented)";
    static constexpr kvs_param_def params[] = {
        {"sinks", KVS_PARAM_INT, 4, 0, 1 << 20, "first tokens never evicted (attention sinks)"},
        {"every", KVS_PARAM_INT, 1, 0, 1 << 20, "act every N decode steps (0 = after the prefill only)"},
    };

    StreamingLLM(const double* p, kvs_instance_info& info) {
        info.sinks = int64_t(p[0]);
        info.every = int64_t(p[1]);
    }

    at::Tensor score(const kvs::Step& s) const { return s.positions.to(at::kFloat); }
};

} // namespace

const kvs_method* kvs_method_streaming_llm() { return kvs::method<StreamingLLM>(); }
