#pragma once

#include <string>
#include <vector>

#include "trustfence/common/result.hpp"
#include "trustfence/config/config.hpp"

namespace trustfence::runtime {

// Loads and attaches the datapath, attests connections, serves the API,
// until SIGINT or SIGTERM; SIGHUP (or a change of a configuration file)
// loads args again and applies it. Leaves the pins in place on exit:
// enforcement continues.
Result<void> run_agent(const config::Config& config, const std::vector<std::string>& args);

}  // namespace trustfence::runtime
