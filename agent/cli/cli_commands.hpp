#pragma once

#include <string>
#include <vector>

namespace trustfence::cli {

// Each returns the process exit code: 0 success, 1 failure, 2 bad usage.
int agent_command(const std::vector<std::string>& args);
int conns_command(const std::vector<std::string>& args);
int conn_command(const std::vector<std::string>& args);
int stats_command(const std::vector<std::string>& args);
int watch_command(const std::vector<std::string>& args);
int cert_command(const std::vector<std::string>& args);
int id_command(const std::vector<std::string>& args);

}  // namespace trustfence::cli
