// `trustfence id check`: the built binary, its output and exit codes.

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "support/run_cli.hpp"

namespace {

using trustfence::testing::CliRun;
using trustfence::testing::run_cli;

struct Row {
  std::string name;
  std::vector<std::string> args;
  int exit_code;
  std::vector<std::string> lines;  // each must appear in the output
  friend void PrintTo(const Row& row, std::ostream* os) { *os << row.name; }
};

class IdCheck : public testing::TestWithParam<Row> {};

TEST_P(IdCheck, PrintsPartsOrReason) {
  const Row& row = GetParam();
  CliRun run = run_cli(row.args);
  EXPECT_EQ(run.exit_code, row.exit_code) << run.out;
  for (const auto& line : row.lines)
    EXPECT_NE(run.out.find(line), std::string::npos) << "missing \"" << line << "\" in:\n"
                                                     << run.out;
}

INSTANTIATE_TEST_SUITE_P(
    Cli, IdCheck,
    testing::ValuesIn(std::vector<Row>{
        {"valid",
         {"id", "check", "spiffe://team-a.gke.local/ns/web/sa/web"},
         0,
         {"trust domain: team-a.gke.local\n", "path: /ns/web/sa/web\n"}},
        {"valid_domain_only",
         {"id", "check", "spiffe://example.org"},
         0,
         {"trust domain: example.org\n", "path: (none"}},
        {"invalid_uppercase",
         {"id", "check", "spiffe://Example.org/a"},
         1,
         {"invalid SPIFFE ID: ", "lowercase"}},
        {"invalid_trailing_slash",
         {"id", "check", "spiffe://example.org/a/"},
         1,
         {"must not end with '/'"}},
        {"invalid_port", {"id", "check", "spiffe://example.org:8443/a"}, 1, {"port"}},
        {"invalid_empty", {"id", "check", ""}, 1, {"must not be empty"}},
        {"missing_id", {"id", "check"}, 2, {"usage: trustfence id check SPIFFE_ID"}},
        {"extra_arg", {"id", "check", "spiffe://a/b", "x"}, 2, {"usage:"}},
        {"unknown_subcommand", {"id", "show", "spiffe://a/b"}, 2, {"usage:"}},
        {"no_subcommand", {"id"}, 2, {"usage:"}},
        {"help", {"id", "--help"}, 0, {"usage: trustfence id check"}},
        {"top_usage_lists_id", {"--help"}, 0, {"id check SPIFFE_ID"}},
    }),
    [](const auto& info) { return info.param.name; });

}  // namespace
