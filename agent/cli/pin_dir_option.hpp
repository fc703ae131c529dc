#pragma once

#include <string>
#include <vector>

#include "trustfence/common/result.hpp"

namespace trustfence::cli {

// The pin directory named by --pin-dir DIR, or by the pin-dir key of
// --config FILE, or the default. Other arguments are left for the caller.
Result<std::string> pin_dir_from(const std::vector<std::string>& args);

}  // namespace trustfence::cli
