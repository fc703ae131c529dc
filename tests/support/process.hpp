#pragma once

// Runs a program (the built trustfence CLI) without a shell, so arguments
// reach it byte for byte, with a deadline; collects its exit code and output.
// Shared by the unit and kernel tiers: nothing here needs privileges.

#include <chrono>
#include <string>
#include <vector>

#include "trustfence/common/result.hpp"

namespace trustfence::testing {

// Where the child's stderr goes: its own string, or into `out` in the order
// it was written.
enum class Output { kSeparate, kMerged };

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string out;
  std::string err;  // empty with Output::kMerged
};

inline constexpr std::chrono::milliseconds kCommandTimeout{30'000};

// argv[0] is the program's path. A child still running at the deadline is
// killed (it was started here) and reported as an error.
Result<CommandResult> run_command(const std::vector<std::string>& argv,
                                  std::chrono::milliseconds timeout = kCommandTimeout,
                                  Output output = Output::kSeparate);

// "a b c", for failure messages.
std::string join_argv(const std::vector<std::string>& argv);

}  // namespace trustfence::testing
