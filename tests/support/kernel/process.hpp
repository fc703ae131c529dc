#pragma once

// Runs a program (the built trustfence CLI) with a deadline and collects its
// exit code and output.

#include <chrono>
#include <string>
#include <vector>

#include "trustfence/common/result.hpp"

namespace trustfence::testing::kernel {

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string out;
  std::string err;
};

// argv[0] is the program's path. A child still running at the deadline is
// killed (it was started here) and reported as an error.
Result<CommandResult> run_command(const std::vector<std::string>& argv,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(30));

// "a b c", for failure messages.
std::string join_argv(const std::vector<std::string>& argv);

}  // namespace trustfence::testing::kernel
