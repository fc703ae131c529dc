// `trustfence conns|conn|stats` against a fake agent on a real api-socket,
// and without any agent: the built binary, its output and exit codes.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <mutex>

#include "support/process.hpp"
#include "unit/api/serving_loop.hpp"

namespace trustfence::testing {
namespace {

using json = nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

json row(std::uint64_t cookie, const char* verdict, json peer_id, json peer_td, const char* state,
         std::uint64_t age_ms) {
  return json{
      {"cookie", cookie},         {"direction", "outbound"},  {"local", "10.0.0.1:40000"},
      {"remote", "10.0.0.2:443"}, {"peer_id", peer_id},       {"peer_trust_domain", peer_td},
      {"verdict", verdict},       {"reason", "alias-domain"}, {"age_ms", age_ms},
      {"cgroup_id", 7},           {"generation", 1},          {"state", state}};
}

const json kAllowed =
    row(11, "allow", "spiffe://team-b.eks.local/ns/auth/sa/auth", "team-b.eks.local", "open", 50);
const json kDenied =
    row(22, "deny", "spiffe://team-c.local/ns/x/sa/y", "team-c.local", "closed", 900);
const json kPending = row(33, "pending", nullptr, nullptr, "open", 10);

class FakeAgent {
 public:
  json handle(const json& request) {
    {
      std::lock_guard lock(mutex_);
      requests_.push_back(request);
    }
    const auto& command = request["command"];
    if (command == "conns") {
      json rows = {kAllowed, kPending};
      if (request.value("include_closed", false)) rows.push_back(kDenied);
      return {{"connections", rows}};
    }
    if (command == "conn") {
      if (request["cookie"] == 11) return {{"connection", kAllowed}};
      return {{"error", "no tracked connection " + request["cookie"].dump()}};
    }
    if (command == "stats")
      return {{"connections", {{"tracked", 2}, {"capacity", 100}, {"by_verdict", {{"allow", 1}}}}},
              {"packets", {{"ingress", {{"drop", {{"domain-not-allowed", 4}}}}}}},
              {"counters", {{"events-lost", 0}}},
              {"api", {{"requests", 3}, {"denied", 1}}},
              {"interned_names", 5}};
    return {{"error", "unknown command"}};
  }
  json last_request() {
    std::lock_guard lock(mutex_);
    return requests_.empty() ? json() : requests_.back();
  }

 private:
  std::mutex mutex_;
  std::vector<json> requests_;
};

class ConnsCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config::ApiConfig config;
    config.socket = dir_ / "api.sock";
    auto serving = ServingLoop::start(config, [this](const json& r) { return agent_.handle(r); });
    ASSERT_TRUE(serving) << serving.error().message;
    serving_ = std::move(*serving);
  }

  CommandResult run(std::vector<std::string> args) {
    args.insert(args.begin(), TF_CLI_PATH);
    args.insert(args.end(), {"--api-socket", dir_ / "api.sock", "--pin-dir", dir_ / "no-pins"});
    auto result = run_command(args);
    if (!result) return CommandResult{-1, result.error().message, {}};
    return *result;
  }

  TempDir dir_;
  FakeAgent agent_;
  std::unique_ptr<ServingLoop> serving_;
};

TEST_F(ConnsCliTest, ConnsJsonPrintsTheAgentsRowsOldestFirst) {
  auto r = run({"conns", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out), json::array({kAllowed, kPending}));
  EXPECT_EQ(agent_.last_request(), (json{{"command", "conns"}, {"include_closed", false}}));
  EXPECT_EQ(r.err, "");
}

TEST_F(ConnsCliTest, ConnsFiltersByVerdictAndPeerTrustDomain) {
  auto allow = run({"conns", "--json", "--verdict", "allow"});
  ASSERT_EQ(allow.exit_code, 0) << allow.err;
  EXPECT_EQ(json::parse(allow.out), json::array({kAllowed}));

  auto pending = run({"conns", "--json", "--verdict=pending"});
  ASSERT_EQ(pending.exit_code, 0) << pending.err;
  EXPECT_EQ(json::parse(pending.out), json::array({kPending}));

  auto domain = run({"conns", "--json", "--closed", "--peer-trust-domain", "team-c.local"});
  ASSERT_EQ(domain.exit_code, 0) << domain.err;
  EXPECT_EQ(json::parse(domain.out), json::array({kDenied}));

  // A name that merely starts like an accepted one is another domain.
  auto prefix = run({"conns", "--json", "--peer-trust-domain", "team-b.eks"});
  ASSERT_EQ(prefix.exit_code, 0) << prefix.err;
  EXPECT_EQ(json::parse(prefix.out), json::array());
}

TEST_F(ConnsCliTest, ConnsTableShowsPeerIdsAndStateOnlyWithClosed) {
  auto open = run({"conns"});
  ASSERT_EQ(open.exit_code, 0) << open.err;
  EXPECT_THAT(open.out, AllOf(HasSubstr("PEER_ID"), Not(HasSubstr("STATE")),
                              HasSubstr("spiffe://team-b.eks.local/ns/auth/sa/auth"),
                              HasSubstr("alias-domain")));

  auto closed = run({"conns", "--closed"});
  ASSERT_EQ(closed.exit_code, 0) << closed.err;
  EXPECT_THAT(closed.out, AllOf(HasSubstr("STATE"), HasSubstr("closed"), HasSubstr("22")));
  EXPECT_EQ(agent_.last_request()["include_closed"], true);
}

TEST_F(ConnsCliTest, ConnAsksForOneCookie) {
  auto found = run({"conn", "11", "--json"});
  ASSERT_EQ(found.exit_code, 0) << found.err;
  EXPECT_EQ(json::parse(found.out), kAllowed);
  EXPECT_EQ(agent_.last_request(), (json{{"command", "conn"}, {"cookie", 11}}));

  auto missing = run({"conn", "12"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("no tracked connection 12"));
}

TEST_F(ConnsCliTest, StatsPrintsTheAgentsSections) {
  auto as_json = run({"stats", "--json"});
  ASSERT_EQ(as_json.exit_code, 0) << as_json.err;
  EXPECT_EQ(json::parse(as_json.out)["api"]["requests"], 3);

  auto text = run({"stats"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out, AllOf(HasSubstr("connections: 2 tracked of 100"),
                              HasSubstr("domain-not-allowed"), HasSubstr("api.requests 3\n"),
                              HasSubstr("api.denied 1\n"), HasSubstr("interned_names 5\n")));
}

struct UsageCase {
  std::string name;
  std::vector<std::string> args;
};

class ConnsCliUsage : public ConnsCliTest, public ::testing::WithParamInterface<UsageCase> {};

TEST_P(ConnsCliUsage, IsBadUsage) {
  auto r = run(GetParam().args);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
}

INSTANTIATE_TEST_SUITE_P(
    Cli, ConnsCliUsage,
    ::testing::Values(UsageCase{"bad_verdict", {"conns", "--verdict", "maybe"}},
                      UsageCase{"verdict_without_value", {"conns", "--verdict"}},
                      UsageCase{"bad_trust_domain", {"conns", "--peer-trust-domain", "Bad.Org"}},
                      UsageCase{"closed_on_conn", {"conn", "11", "--closed"}},
                      UsageCase{"filter_on_stats", {"stats", "--verdict", "allow"}},
                      UsageCase{"conn_without_cookie", {"conn"}},
                      UsageCase{"cookie_not_a_number", {"conn", "abc"}},
                      UsageCase{"stray_argument", {"conns", "extra"}},
                      UsageCase{"unknown_option", {"stats", "--frobnicate"}}),
    [](const auto& info) { return info.param.name; });

class NoAgentCliTest : public ::testing::Test {
 protected:
  CommandResult run(std::vector<std::string> args) {
    args.insert(args.begin(), TF_CLI_PATH);
    args.insert(args.end(), {"--api-socket", dir_ / "api.sock", "--pin-dir", dir_ / "no-pins"});
    auto result = run_command(args);
    if (!result) return CommandResult{-1, result.error().message, {}};
    return *result;
  }
  TempDir dir_;
};

TEST_F(NoAgentCliTest, FallsBackToThePinnedMapsAndSaysSo) {
  for (const char* command : {"conns", "stats"}) {
    auto r = run({command});
    EXPECT_EQ(r.exit_code, 1) << command << ": no maps pinned there either";
    EXPECT_THAT(r.err, HasSubstr("no agent answers on " + (dir_ / "api.sock"))) << command;
    EXPECT_THAT(r.err, HasSubstr(dir_ / "no-pins")) << command;
  }
}

TEST_F(NoAgentCliTest, ClosedConnectionsNeedTheAgent) {
  auto r = run({"conns", "--closed"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("closed connections need the running agent"));
}

}  // namespace
}  // namespace trustfence::testing
