// The build stored with every run: "<project version> (<git describe --always --dirty>)",
// refreshed at every build by build_version.cmake (a value taken at configure time would
// go stale with the next commit).
#pragma once

namespace kvscope {

const char* kvscope_build_version();

} // namespace kvscope
