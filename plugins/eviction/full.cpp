// full: the reference lane (METHODS.md §2.1 Full cache). No score or select hook, so the
// host never acts and every token stays.
#include "plugins/sdk/kvscope_plugin_aten.h"

namespace {

struct Full {
    static constexpr const char* name = "full";
    static constexpr const char* help = "keep every token (the reference lane; nothing is ever evicted)";
    static constexpr const kvs_param_def* params = nullptr;

    Full(const double*, kvs_instance_info&) {}
};

} // namespace

const kvs_method* kvs_method_full() { return kvs::method<Full>(); }
