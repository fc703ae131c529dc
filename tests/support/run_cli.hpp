#pragma once

// Runs the built trustfence binary (TF_CLI_PATH, defined by the test tier)
// through run_command, with stdout and stderr collected in order in `out`.

#include <string>
#include <vector>

#include "support/process.hpp"

namespace trustfence::testing {

using CliRun = CommandResult;

// A binary that cannot be run, or outlives the deadline, comes back as exit
// code -1 with the reason as its output, for the test to show.
inline CliRun run_cli(std::vector<std::string> args) {
  args.insert(args.begin(), TF_CLI_PATH);
  auto run = run_command(args, kCommandTimeout, Output::kMerged);
  if (!run) return CliRun{.exit_code = -1, .out = run.error().message, .err = {}};
  return std::move(*run);
}

}  // namespace trustfence::testing
