#include "core/default_model.h"

#include <cstdlib>

namespace kvscope {

std::string model_cache_dir() {
    if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
        return std::string(xdg) + "/kvscope/models";
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : ".") + "/.cache/kvscope/models";
}

std::string default_model_path() {
    if (const char* env = std::getenv("KVSCOPE_MODEL"); env && *env) return env;
    return model_cache_dir() + "/" KVSCOPE_MODEL_FILE;
}

} // namespace kvscope
