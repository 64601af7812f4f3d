// Where the default model lives: set-up (setup.sh) fetches it into the model cache.
#pragma once

#include <string>

namespace kvscope {

// $KVSCOPE_MODEL when set; otherwise the default model's file in the model cache,
// $XDG_CACHE_HOME/kvscope/models (or ~/.cache/kvscope/models).
std::string default_model_path();

// The model cache folder described above.
std::string model_cache_dir();

} // namespace kvscope
