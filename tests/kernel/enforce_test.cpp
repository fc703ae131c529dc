// Enforcement over real TCP: DENY drops payload both ways (a reset still
// passes), ALLOW passes it, and a verdict changed mid-connection takes
// effect on the next segment.

#include <gtest/gtest.h>
#include <sys/socket.h>

#include "support/kernel/assert_ok.hpp"
#include "support/kernel/socket.hpp"
#include "support/kernel/test_datapath.hpp"
#include "support/privileges.hpp"

namespace trustfence::testing::kernel {
namespace {

using namespace std::chrono_literals;

// How long a denied byte is given to show up before we call it dropped.
constexpr milliseconds kDropWindow = 500ms;

class EnforceTest : public TestDatapath, public ::testing::WithParamInterface<int> {
 protected:
  void SetUp() override {
    TestDatapath::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    TF_ASSERT_OK(open());
    TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
    TF_ASSERT_OK_AND_ASSIGN(listener_, listen_loopback(GetParam()));
    TF_ASSERT_OK_AND_ASSIGN(auto port, local_endpoint(listener_.get()));
    TF_ASSERT_OK_AND_ASSIGN(pair_, connect_pair(GetParam(), listener_.get(), port.port));
  }

  std::uint64_t packets(tf_packet_dir dir, tf_action action, tf_reason reason) {
    auto s = stats();
    EXPECT_TRUE(s.has_value()) << s.error().message;
    return s ? s->packets[dir][action][reason] : 0;
  }

  UniqueFd listener_;
  ConnectedPair pair_;
};

TEST_P(EnforceTest, DenyOnTheServerDropsWhatTheClientSendsAndWhatItAnswers) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK_AND_ASSIGN(bool a, allow(pair_.client_cookie));
  TF_ASSERT_OK_AND_ASSIGN(bool d, deny(pair_.server_cookie, TF_REASON_DOMAIN_NOT_ALLOWED));
  ASSERT_TRUE(a && d);

  // Leaves the client (allowed), dropped at the server's ingress.
  TF_ASSERT_OK(send_all(pair_.client.get(), "denied bytes"));
  TF_ASSERT_OK_AND_ASSIGN(bool arrived, data_arrives_within(pair_.server.get(), kDropWindow));
  EXPECT_FALSE(arrived) << "bytes reached a server whose verdict is DENY";
  EXPECT_GT(packets(TF_PACKET_INGRESS, TF_ACTION_DROP, TF_REASON_DOMAIN_NOT_ALLOWED), 0u);

  // The server's own answer is dropped at its egress.
  TF_ASSERT_OK(send_all(pair_.server.get(), "answer"));
  TF_ASSERT_OK_AND_ASSIGN(bool answered, data_arrives_within(pair_.client.get(), kDropWindow));
  EXPECT_FALSE(answered) << "a DENY server's bytes reached the client";
  EXPECT_GT(packets(TF_PACKET_EGRESS, TF_ACTION_DROP, TF_REASON_DOMAIN_NOT_ALLOWED), 0u);
}

TEST_P(EnforceTest, DenyOnTheClientDropsAtItsEgress) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK_AND_ASSIGN(bool d, deny(pair_.client_cookie, TF_REASON_ID_DENIED));
  TF_ASSERT_OK_AND_ASSIGN(bool a, allow(pair_.server_cookie));
  ASSERT_TRUE(a && d);

  TF_ASSERT_OK(send_all(pair_.client.get(), "denied bytes"));
  TF_ASSERT_OK_AND_ASSIGN(bool arrived, data_arrives_within(pair_.server.get(), kDropWindow));
  EXPECT_FALSE(arrived) << "bytes left a client whose verdict is DENY";
  EXPECT_GT(packets(TF_PACKET_EGRESS, TF_ACTION_DROP, TF_REASON_ID_DENIED), 0u);
  EXPECT_EQ(packets(TF_PACKET_INGRESS, TF_ACTION_DROP, TF_REASON_ID_DENIED), 0u)
      << "nothing should have left the client to be dropped at the server";
}

TEST_P(EnforceTest, AllowOnBothEndsPassesDataBothWaysByteExact) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK_AND_ASSIGN(bool a, allow(pair_.client_cookie, TF_REASON_LOCAL_DOMAIN));
  TF_ASSERT_OK_AND_ASSIGN(bool b, allow(pair_.server_cookie, TF_REASON_ALIAS_DOMAIN));
  ASSERT_TRUE(a && b);

  auto request = random_bytes(256 * 1024, 1);
  auto response = random_bytes(64 * 1024, 2);
  TF_ASSERT_OK(send_all(pair_.client.get(), request));
  TF_ASSERT_OK_AND_ASSIGN(auto got_request, recv_exact(pair_.server.get(), request.size()));
  EXPECT_TRUE(got_request == request);
  TF_ASSERT_OK(send_all(pair_.server.get(), response));
  TF_ASSERT_OK_AND_ASSIGN(auto got_response, recv_exact(pair_.client.get(), response.size()));
  EXPECT_TRUE(got_response == response);

  EXPECT_GT(packets(TF_PACKET_EGRESS, TF_ACTION_PASS, TF_REASON_LOCAL_DOMAIN), 0u);
  EXPECT_GT(packets(TF_PACKET_INGRESS, TF_ACTION_PASS, TF_REASON_ALIAS_DOMAIN), 0u);
  for (int r = 0; r < TF_REASON_COUNT; ++r)
    for (auto dir : {TF_PACKET_EGRESS, TF_PACKET_INGRESS})
      EXPECT_EQ(packets(dir, TF_ACTION_DROP, static_cast<tf_reason>(r)), 0u)
          << "drop with reason " << r;
}

TEST_P(EnforceTest, DenyAfterAllowStopsAFlowingConnection) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK_AND_ASSIGN(bool a, allow(pair_.client_cookie));
  TF_ASSERT_OK_AND_ASSIGN(bool b, allow(pair_.server_cookie));
  ASSERT_TRUE(a && b);
  TF_ASSERT_OK(send_all(pair_.client.get(), "before"));
  TF_ASSERT_OK_AND_ASSIGN(auto before, recv_text(pair_.server.get(), 6));
  EXPECT_EQ(before, "before");

  TF_ASSERT_OK_AND_ASSIGN(bool d, deny(pair_.server_cookie, TF_REASON_REVOKED));
  ASSERT_TRUE(d);
  TF_ASSERT_OK(send_all(pair_.client.get(), "after"));
  TF_ASSERT_OK_AND_ASSIGN(bool arrived, data_arrives_within(pair_.server.get(), kDropWindow));
  EXPECT_FALSE(arrived) << "a revoked connection still delivers";
  EXPECT_GT(packets(TF_PACKET_INGRESS, TF_ACTION_DROP, TF_REASON_REVOKED), 0u);
}

TEST_P(EnforceTest, DenyLetsTheResetThroughAndTheEntryGoes) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK_AND_ASSIGN(auto events, EventLog::open(dp()));
  TF_ASSERT_OK_AND_ASSIGN(bool a, allow(pair_.client_cookie));
  TF_ASSERT_OK_AND_ASSIGN(bool d, deny(pair_.server_cookie));
  ASSERT_TRUE(a && d);

  TF_ASSERT_OK(set_linger_zero(pair_.client.get()));
  pair_.client.reset();
  TF_ASSERT_OK_AND_ASSIGN(bool reset, reset_arrives_within(pair_.server.get(), kIoTimeout));
  EXPECT_TRUE(reset) << "the client's RST did not reach a DENY server";
  TF_ASSERT_OK_AND_ASSIGN(bool closed,
                          events.wait_for(TF_EVENT_CLOSE, pair_.server_cookie, kIoTimeout));
  EXPECT_TRUE(closed);
  auto ev = events.find(TF_EVENT_CLOSE, pair_.server_cookie);
  ASSERT_TRUE(ev.has_value());
  EXPECT_EQ(ev->conn.verdict, TF_VERDICT_DENY) << "the close event carries the last verdict";
  TF_ASSERT_OK_AND_ASSIGN(auto entry, conns().lookup(pair_.server_cookie));
  EXPECT_FALSE(entry.has_value());
}

TEST_P(EnforceTest, VerdictForAClosedSocketIsDroppedNotResurrected) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK_AND_ASSIGN(auto events, EventLog::open(dp()));
  TF_ASSERT_OK(set_linger_zero(pair_.client.get()));
  pair_.client.reset();
  TF_ASSERT_OK_AND_ASSIGN(bool closed,
                          events.wait_for(TF_EVENT_CLOSE, pair_.client_cookie, kIoTimeout));
  ASSERT_TRUE(closed);
  TF_ASSERT_OK_AND_ASSIGN(bool written, allow(pair_.client_cookie));
  EXPECT_FALSE(written) << "set_verdict reported success for a socket that is gone";
  TF_ASSERT_OK_AND_ASSIGN(auto entry, conns().lookup(pair_.client_cookie));
  EXPECT_FALSE(entry.has_value()) << "a verdict recreated the entry of a closed socket";
}

INSTANTIATE_TEST_SUITE_P(Loopback, EnforceTest, ::testing::Values(AF_INET, AF_INET6),
                         [](const auto& info) { return std::string(family_name(info.param)); });

}  // namespace
}  // namespace trustfence::testing::kernel
