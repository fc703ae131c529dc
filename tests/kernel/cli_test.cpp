// The operator's view: the built `trustfence` binary reads the pinned maps
// and lists tracked connections with the fields DESIGN.md promises.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "support/kernel/assert_ok.hpp"
#include "support/kernel/socket.hpp"
#include "support/kernel/test_datapath.hpp"
#include "support/privileges.hpp"
#include "support/process.hpp"
#include "trustfence/datapath/format.hpp"

namespace trustfence::testing::kernel {
namespace {

// No agent listens here: the CLI falls back to the pinned maps under test.
constexpr const char* kNoAgentSocket = "/run/trustfence-test-no-agent/api.sock";

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::HasSubstr;

std::string text_of(const Endpoint& end) {
  std::string port = ":" + std::to_string(end.port);
  return end.family == AF_INET ? "127.0.0.1" + port : "[::1]" + port;
}

class CliTest : public TestDatapath, public ::testing::WithParamInterface<int> {
 protected:
  // Runs the CLI; fails the test unless it exits 0 with JSON on stdout.
  void run_json(std::vector<std::string> args, json& out) {
    args.insert(args.begin(), TF_CLI_PATH);
    TF_ASSERT_OK_AND_ASSIGN(auto run, run_command(args));
    ASSERT_EQ(run.exit_code, 0) << join_argv(args) << "\nstderr: " << run.err;
    try {
      out = json::parse(run.out);
    } catch (const json::exception& e) {
      FAIL() << join_argv(args) << " printed no JSON (" << e.what() << "):\n" << run.out;
    }
  }
};

TEST_P(CliTest, ConnsJsonListsTrackedConnectionsWithTheDesignFields) {
  TF_REQUIRE_ROOT();
  const int family = GetParam();
  TF_ASSERT_OK(open());
  auto started = Clock::now();
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(family));
  TF_ASSERT_OK_AND_ASSIGN(auto port, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto pair, connect_pair(family, listener.get(), port.port));
  TF_ASSERT_OK(inside.leave());
  datapath::VerdictUpdate decided;
  decided.verdict = TF_VERDICT_ALLOW;
  decided.reason = TF_REASON_ALIAS_DOMAIN;
  decided.peer_id = 17;
  decided.peer_trust_domain = 4;
  decided.generation = 2;
  decided.decided_ns = datapath::monotonic_ns();
  TF_ASSERT_OK_AND_ASSIGN(bool written, conns().set_verdict(pair.client_cookie, decided));
  ASSERT_TRUE(written);

  json rows;
  ASSERT_NO_FATAL_FAILURE(
      run_json({"conns", "--json", "--pin-dir", pin_dir(), "--api-socket", kNoAgentSocket}, rows));
  auto elapsed_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - started).count();
  ASSERT_TRUE(rows.is_array()) << rows.dump(2);
  ASSERT_EQ(rows.size(), 2u) << rows.dump(2);
  auto row_of = [&](std::uint64_t cookie) -> json {
    for (const auto& row : rows)
      if (row.contains("cookie") && row["cookie"] == cookie) return row;
    return nullptr;
  };
  for (const auto& row : rows)
    for (const char* field : {"cookie", "direction", "local", "remote", "peer_id",
                              "peer_trust_domain", "verdict", "reason", "age_ms"})
      EXPECT_TRUE(row.contains(field)) << "missing " << field << " in " << row.dump();

  json client = row_of(pair.client_cookie);
  ASSERT_FALSE(client.is_null()) << "client cookie " << pair.client_cookie << " not listed";
  EXPECT_EQ(client["direction"], "outbound");
  EXPECT_EQ(client["local"], text_of(pair.client_end));
  EXPECT_EQ(client["remote"], text_of(pair.server_end));
  EXPECT_EQ(client["verdict"], "allow");
  EXPECT_EQ(client["reason"], "alias-domain");
  // Without the agent the names are unknown: interned ids are not identities.
  EXPECT_TRUE(client["peer_id"].is_null());
  EXPECT_TRUE(client["peer_trust_domain"].is_null());

  json server = row_of(pair.server_cookie);
  ASSERT_FALSE(server.is_null()) << "server cookie " << pair.server_cookie << " not listed";
  EXPECT_EQ(server["direction"], "inbound");
  EXPECT_EQ(server["local"], text_of(pair.server_end));
  EXPECT_EQ(server["remote"], text_of(pair.client_end));
  EXPECT_EQ(server["verdict"], "pending");
  EXPECT_TRUE(server["peer_id"].is_null()) << "an undecided peer has no identity";
  EXPECT_TRUE(server["peer_trust_domain"].is_null());

  for (const json& row : {client, server}) {
    ASSERT_TRUE(row["age_ms"].is_number_unsigned()) << row.dump();
    EXPECT_LE(row["age_ms"].get<long long>(), elapsed_ms) << row.dump();
  }

  json one;
  ASSERT_NO_FATAL_FAILURE(run_json({"conn", std::to_string(pair.server_cookie), "--json",
                                    "--pin-dir", pin_dir(), "--api-socket", kNoAgentSocket},
                                   one));
  EXPECT_EQ(one["cookie"], pair.server_cookie);
  EXPECT_EQ(one["direction"], "inbound");
  EXPECT_EQ(one["verdict"], "pending");

  json stats;
  ASSERT_NO_FATAL_FAILURE(
      run_json({"stats", "--json", "--pin-dir", pin_dir(), "--api-socket", kNoAgentSocket}, stats));
  EXPECT_EQ(stats["connections"]["tracked"], 2) << stats.dump(2);
}

TEST_P(CliTest, ConnsTableNamesEveryConnection) {
  TF_REQUIRE_ROOT();
  const int family = GetParam();
  TF_ASSERT_OK(open());
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(family));
  TF_ASSERT_OK_AND_ASSIGN(auto port, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto pair, connect_pair(family, listener.get(), port.port));
  TF_ASSERT_OK(inside.leave());

  std::vector<std::string> argv = {TF_CLI_PATH, "conns",        "--pin-dir",
                                   pin_dir(),   "--api-socket", kNoAgentSocket};
  TF_ASSERT_OK_AND_ASSIGN(auto run, run_command(argv));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr(std::to_string(pair.client_cookie)));
  EXPECT_THAT(run.out, HasSubstr(std::to_string(pair.server_cookie)));
  EXPECT_THAT(run.out, HasSubstr(text_of(pair.client_end)));
  EXPECT_THAT(run.out, HasSubstr(text_of(pair.server_end)));
}

class CliWithoutPinsTest : public TestDatapath {};

TEST_F(CliWithoutPinsTest, ReadCommandsOnAnEmptyPinDirSaySoAndCreateNothing) {
  TF_REQUIRE_ROOT();
  const std::string missing = pin_dir() + "-absent";
  for (const char* command : {"conns", "stats"}) {
    std::vector<std::string> argv = {TF_CLI_PATH, command,        "--json",      "--pin-dir",
                                     missing,     "--api-socket", kNoAgentSocket};
    TF_ASSERT_OK_AND_ASSIGN(auto run, run_command(argv));
    EXPECT_NE(run.exit_code, 0) << join_argv(argv);
    EXPECT_THAT(run.err, HasSubstr(missing)) << join_argv(argv);
  }
  EXPECT_FALSE(fs::exists(missing)) << "a read-only command created " << missing;
}

INSTANTIATE_TEST_SUITE_P(Loopback, CliTest, ::testing::Values(AF_INET, AF_INET6),
                         [](const auto& info) { return std::string(family_name(info.param)); });

}  // namespace
}  // namespace trustfence::testing::kernel
