#include <spdlog/spdlog.h>

#include <algorithm>
#include <iostream>

#include "cli_commands.hpp"
#include "trustfence/common/logging.hpp"
#include "trustfence/config/config.hpp"
#include "trustfence/datapath/datapath.hpp"
#include "trustfence/runtime/agent.hpp"

namespace trustfence::cli {

int agent_command(const std::vector<std::string>& args) {
  if (std::find(args.begin(), args.end(), "--help") != args.end()) {
    std::cout << "usage: trustfence agent --config FILE [--key value ...]\n"
                 "       trustfence agent --uninstall [--config FILE | --pin-dir DIR]\n\n"
              << config::describe_keys();
    return 0;
  }
  std::vector<std::string> rest;
  bool uninstall = false;
  for (const auto& arg : args) {
    if (arg == "--uninstall")
      uninstall = true;
    else
      rest.push_back(arg);
  }
  if (uninstall) {
    auto paths = config::load_client_paths(rest);
    if (!paths) {
      std::cerr << "trustfence agent: " << paths.error().message << "\n";
      return 2;
    }
    if (auto ok = datapath::Datapath::uninstall(paths->pin_dir); !ok) {
      std::cerr << "trustfence agent --uninstall: " << ok.error().message << "\n";
      return 1;
    }
    std::cout << "detached and unpinned " << paths->pin_dir << "\n";
    return 0;
  }
  auto config = config::load(rest);
  if (!config) {
    std::cerr << "trustfence agent: " << config.error().message << "\n";
    return 2;
  }
  configure_logging(config->log_format, config->log_level);
  if (auto ok = runtime::run_agent(*config, rest); !ok) {
    spdlog::error("{}", ok.error().message);
    return 1;
  }
  return 0;
}

}  // namespace trustfence::cli
