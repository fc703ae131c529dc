#pragma once

// The agent's configuration: an INI file (Boost.Program_options syntax)
// whose every key is also a --flag; flags win over the file. Validated once
// here; the rest of the code sees plain values. Errors name the key and,
// for the file, the line.

#include <string>
#include <vector>

#include "trustfence/common/result.hpp"
#include "trustfence/datapath/datapath.hpp"

namespace trustfence::config {

struct Config {
  std::string file;  // where it came from, empty for flags only
  datapath::DatapathOptions datapath;
  std::string log_level = "info";
};

// args: the command line after the subcommand, e.g. {"--config", "f.conf"}.
Result<Config> load(const std::vector<std::string>& args);

// Only the pin directory: --pin-dir, else the pin-dir key of --config FILE,
// else the default. For commands that read the pinned maps.
Result<std::string> load_pin_dir(const std::vector<std::string>& args);

// Help text of every key, for `trustfence agent --help`.
std::string describe_keys();

}  // namespace trustfence::config
