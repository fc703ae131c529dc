// The rows and stats documents shared by the agent and the CLI fallback.

#include "trustfence/api/conn_json.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <map>

namespace trustfence::testing {
namespace {

using json = nlohmann::json;

tf_conn sample_conn() {
  tf_conn c{};
  c.tuple.family = AF_INET;
  c.tuple.local_addr[0] = htonl(0x0a000001);   // 10.0.0.1
  c.tuple.remote_addr[0] = htonl(0x0a000002);  // 10.0.0.2
  c.tuple.local_port = 40000;
  c.tuple.remote_port = 443;
  c.cgroup_id = 77;
  c.created_ns = 1'000'000'000;
  c.decided_ns = 1'500'000'000;
  c.peer_id = 17;
  c.peer_trust_domain = 4;
  c.generation = 3;
  c.verdict = TF_VERDICT_ALLOW;
  c.reason = TF_REASON_ALIAS_DOMAIN;
  c.direction = TF_DIRECTION_OUTBOUND;
  return c;
}

const std::map<std::uint32_t, std::string> kNames = {
    {17, "spiffe://team-b.eks.local/ns/auth/sa/auth"}, {4, "team-b.eks.local"}};

std::optional<std::string> lookup(std::uint32_t id) {
  auto it = kNames.find(id);
  if (it == kNames.end()) return std::nullopt;
  return it->second;
}

TEST(ConnJson, HasTheContractFieldsWithNames) {
  json row = api::conn_json(99, sample_conn(), 3'250'000'000, lookup);
  EXPECT_EQ(row, (json{{"cookie", 99},
                       {"direction", "outbound"},
                       {"local", "10.0.0.1:40000"},
                       {"remote", "10.0.0.2:443"},
                       {"peer_id", "spiffe://team-b.eks.local/ns/auth/sa/auth"},
                       {"peer_trust_domain", "team-b.eks.local"},
                       {"verdict", "allow"},
                       {"reason", "alias-domain"},
                       {"age_ms", 2250},
                       {"cgroup_id", 77},
                       {"generation", 3}}));
}

TEST(ConnJson, PeersAreNullWithoutNamesOrWhenUnknown) {
  tf_conn c = sample_conn();
  json without = api::conn_json(1, c, c.created_ns, {});
  EXPECT_TRUE(without["peer_id"].is_null());
  EXPECT_TRUE(without["peer_trust_domain"].is_null());
  EXPECT_EQ(without["age_ms"], 0);

  c.peer_id = 1234;  // interned by an agent that has since restarted
  json unknown = api::conn_json(1, c, c.created_ns, lookup);
  EXPECT_TRUE(unknown["peer_id"].is_null());
  EXPECT_EQ(unknown["peer_trust_domain"], "team-b.eks.local");

  c = tf_conn{};  // pending: id 0 is never looked up
  bool asked = false;
  json pending = api::conn_json(1, c, 0, [&asked](std::uint32_t) {
    asked = true;
    return std::optional<std::string>("wrong");
  });
  EXPECT_FALSE(asked);
  EXPECT_TRUE(pending["peer_id"].is_null());
  EXPECT_EQ(pending["verdict"], "pending");
}

TEST(ConnJson, BytesOutsideTheClosedSetsAreInvalid) {
  tf_conn c = sample_conn();
  c.verdict = 200;
  c.reason = 200;
  c.direction = 9;
  json row = api::conn_json(1, c, 0, {});
  EXPECT_EQ(row["verdict"], "invalid");
  EXPECT_EQ(row["reason"], "invalid");
  EXPECT_EQ(row["direction"], "invalid");
  EXPECT_EQ(row["age_ms"], 0) << "a clock behind creation is no negative age";
}

TEST(DatapathStatsJson, CountsVerdictsAndKeepsNonZeroPackets) {
  tf_stats total{};
  total.packets[TF_PACKET_INGRESS][TF_ACTION_DROP][TF_REASON_DOMAIN_NOT_ALLOWED] = 5;
  total.counters[0] = 9;
  tf_conn allowed = sample_conn();
  tf_conn pending{};
  std::vector<std::pair<datapath::Cookie, tf_conn>> entries = {
      {1, allowed}, {2, allowed}, {3, pending}};
  json out = api::datapath_stats_json(total, entries, 1024);
  EXPECT_EQ(
      out["connections"],
      (json{{"tracked", 3}, {"capacity", 1024}, {"by_verdict", {{"allow", 2}, {"pending", 1}}}}));
  ASSERT_EQ(out["packets"].size(), 1u) << out.dump();
  EXPECT_EQ(out["packets"].begin().value().begin().value().begin().value(), 5);
  EXPECT_EQ(out["counters"].size(), static_cast<std::size_t>(TF_COUNTER_COUNT));
}

}  // namespace
}  // namespace trustfence::testing
