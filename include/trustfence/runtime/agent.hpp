#pragma once

#include "trustfence/common/result.hpp"
#include "trustfence/config/config.hpp"

namespace trustfence::runtime {

// Loads and attaches the datapath, then logs its events until SIGINT or
// SIGTERM. Leaves the pins in place on exit: enforcement continues.
Result<void> run_agent(const config::Config& config);

}  // namespace trustfence::runtime
