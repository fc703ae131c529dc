// The datapath's other behaviours over real TCP: audit mode never drops;
// connections established before the datapath follow the configured
// fallback; sockets tf_conns has no room for are denied; an IPv6 socket
// talking IPv4 (v4-mapped) is tracked and matched like IPv4.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>

#include "support/kernel/assert_ok.hpp"
#include "support/kernel/socket.hpp"
#include "support/kernel/test_datapath.hpp"
#include "support/privileges.hpp"
#include "trustfence/datapath/exemption.hpp"
#include "trustfence/datapath/format.hpp"

namespace trustfence::testing::kernel {
namespace {

using namespace std::chrono_literals;

constexpr milliseconds kDropWindow = 500ms;

class ModesTest : public TestDatapath, public ::testing::WithParamInterface<int> {
 protected:
  // A connection made inside the test cgroup.
  void connect_inside(ConnectedPair& pair) {
    TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
    if (!listener_) {
      TF_ASSERT_OK_AND_ASSIGN(listener_, listen_loopback(GetParam()));
      TF_ASSERT_OK_AND_ASSIGN(auto end, local_endpoint(listener_.get()));
      port_ = end.port;
    }
    TF_ASSERT_OK_AND_ASSIGN(pair, connect_pair(GetParam(), listener_.get(), port_));
  }
  void expect_delivered(ConnectedPair& pair, std::string_view text) {
    TF_ASSERT_OK(send_all(pair.client.get(), text));
    TF_ASSERT_OK_AND_ASSIGN(auto got, recv_text(pair.server.get(), text.size()));
    EXPECT_EQ(got, text);
  }
  void expect_dropped(ConnectedPair& pair) {
    TF_ASSERT_OK(send_all(pair.client.get(), "must not arrive"));
    TF_ASSERT_OK_AND_ASSIGN(bool arrived, data_arrives_within(pair.server.get(), kDropWindow));
    EXPECT_FALSE(arrived);
  }
  std::uint64_t packets(tf_packet_dir dir, tf_action action, tf_reason reason) {
    auto s = stats();
    EXPECT_TRUE(s.has_value()) << s.error().message;
    return s ? s->packets[dir][action][reason] : 0;
  }

  UniqueFd listener_;
  std::uint16_t port_ = 0;
};

TEST_P(ModesTest, AuditModePassesWhatEnforceWouldDropAndCountsIt) {
  TF_REQUIRE_ROOT();
  auto opts = options();
  opts.mode = TF_MODE_AUDIT;
  TF_ASSERT_OK(open(opts));
  ConnectedPair pending, denied;
  ASSERT_NO_FATAL_FAILURE(connect_inside(pending));
  ASSERT_NO_FATAL_FAILURE(connect_inside(denied));
  TF_ASSERT_OK_AND_ASSIGN(bool a, allow(denied.client_cookie));
  TF_ASSERT_OK_AND_ASSIGN(bool d, deny(denied.server_cookie, TF_REASON_BAD_CHAIN));
  ASSERT_TRUE(a && d);

  expect_delivered(pending, "pending, audited");
  expect_delivered(denied, "denied, audited");
  EXPECT_GT(packets(TF_PACKET_EGRESS, TF_ACTION_AUDIT, TF_REASON_PENDING), 0u);
  EXPECT_GT(packets(TF_PACKET_INGRESS, TF_ACTION_AUDIT, TF_REASON_BAD_CHAIN), 0u);
  for (int r = 0; r < TF_REASON_COUNT; ++r)
    for (auto dir : {TF_PACKET_EGRESS, TF_PACKET_INGRESS})
      EXPECT_EQ(packets(dir, TF_ACTION_DROP, static_cast<tf_reason>(r)), 0u)
          << "audit mode dropped with reason " << r;
}

TEST_P(ModesTest, ConnectionsOlderThanTheDatapathFollowAnAllowFallback) {
  TF_REQUIRE_ROOT();
  ConnectedPair older;
  ASSERT_NO_FATAL_FAILURE(connect_inside(older));
  auto opts = options();
  opts.untracked_verdict = TF_VERDICT_ALLOW;
  TF_ASSERT_OK(open(opts));
  TF_ASSERT_OK_AND_ASSIGN(auto entry, conns().lookup(older.client_cookie));
  EXPECT_FALSE(entry.has_value()) << "a connection older than the datapath was tracked";
  expect_delivered(older, "older, allowed");
  EXPECT_GT(packets(TF_PACKET_EGRESS, TF_ACTION_PASS, TF_REASON_UNTRACKED), 0u);
  EXPECT_GT(packets(TF_PACKET_INGRESS, TF_ACTION_PASS, TF_REASON_UNTRACKED), 0u);
}

TEST_P(ModesTest, ConnectionsOlderThanTheDatapathFollowADenyFallback) {
  TF_REQUIRE_ROOT();
  ConnectedPair older;
  ASSERT_NO_FATAL_FAILURE(connect_inside(older));
  auto opts = options();
  opts.untracked_verdict = TF_VERDICT_DENY;
  TF_ASSERT_OK(open(opts));
  expect_dropped(older);
  EXPECT_GT(packets(TF_PACKET_EGRESS, TF_ACTION_DROP, TF_REASON_UNTRACKED), 0u);

  // New connections are tracked as usual and close cleanly despite the
  // fallback: their FIN, ACK and TIME_WAIT segments are no untracked payload.
  TF_ASSERT_OK_AND_ASSIGN(auto events, EventLog::open(dp()));
  ConnectedPair fresh;
  ASSERT_NO_FATAL_FAILURE(connect_inside(fresh));
  TF_ASSERT_OK_AND_ASSIGN(bool a, allow(fresh.client_cookie));
  TF_ASSERT_OK_AND_ASSIGN(bool b, allow(fresh.server_cookie));
  ASSERT_TRUE(a && b);
  expect_delivered(fresh, "fresh, allowed");
  fresh.client.reset();
  fresh.server.reset();
  for (auto cookie : {fresh.client_cookie, fresh.server_cookie}) {
    TF_ASSERT_OK_AND_ASSIGN(bool closed, events.wait_for(TF_EVENT_CLOSE, cookie, kIoTimeout));
    EXPECT_TRUE(closed) << "cookie " << cookie << " never closed";
  }
  TF_ASSERT_OK_AND_ASSIGN(
      bool tw, time_wait_listed(GetParam(), fresh.client_end.port, fresh.server_end.port));
  EXPECT_TRUE(tw) << "the client should have reached TIME_WAIT";
}

TEST_P(ModesTest, SocketsTheTableHasNoRoomForAreDenied) {
  TF_REQUIRE_ROOT();
  const int family = GetParam();
  auto opts = options();
  opts.max_connections = 2;  // one connection, both ends
  opts.untracked_verdict = TF_VERDICT_ALLOW;
  TF_ASSERT_OK(open(opts));
  TF_ASSERT_OK_AND_ASSIGN(auto events, EventLog::open(dp()));
  ConnectedPair first;
  ASSERT_NO_FATAL_FAILURE(connect_inside(first));

  // The client end of the next connection finds no room: it is denied, not
  // left to the untracked fallback (allow here), so that flooding the table
  // opens no way around verification. Its handshake's last ACK is dropped
  // with the rest: the server never accepts it.
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto overflow, connect_loopback(family, port_));
  TF_ASSERT_OK(inside.leave());
  TF_ASSERT_OK_AND_ASSIGN(auto overflow_cookie, socket_cookie(overflow.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto entry, conns().lookup(overflow_cookie));
  EXPECT_FALSE(entry.has_value());
  TF_ASSERT_OK_AND_ASSIGN(auto s, stats());
  EXPECT_GE(s.counters[TF_COUNTER_TABLE_FULL], 1u);
  EXPECT_EQ(s.counters[TF_COUNTER_CONN_TRACKED], 2u);
  TF_ASSERT_OK(send_all(overflow.get(), "must not arrive"));
  auto accepted = accept_one(listener_.get(), kDropWindow);
  EXPECT_FALSE(accepted.has_value()) << "a connection the table had no room for was accepted";
  EXPECT_GT(packets(TF_PACKET_EGRESS, TF_ACTION_DROP, TF_REASON_TABLE_FULL), 0u);
  EXPECT_EQ(packets(TF_PACKET_EGRESS, TF_ACTION_PASS, TF_REASON_UNTRACKED), 0u);
  TF_ASSERT_OK(set_linger_zero(overflow.get()));  // the RST passes and clears it
  overflow.reset();

  // Room again once the first connection is gone.
  first.client.reset();
  first.server.reset();
  for (auto cookie : {first.client_cookie, first.server_cookie}) {
    TF_ASSERT_OK_AND_ASSIGN(bool closed, events.wait_for(TF_EVENT_CLOSE, cookie, kIoTimeout));
    ASSERT_TRUE(closed);
  }
  ConnectedPair next;
  ASSERT_NO_FATAL_FAILURE(connect_inside(next));
  for (auto cookie : {next.client_cookie, next.server_cookie}) {
    TF_ASSERT_OK_AND_ASSIGN(auto next_entry, conns().lookup(cookie));
    EXPECT_TRUE(next_entry.has_value()) << "a freed slot was not reused";
  }
}

INSTANTIATE_TEST_SUITE_P(Loopback, ModesTest, ::testing::Values(AF_INET, AF_INET6),
                         [](const auto& info) { return std::string(family_name(info.param)); });

// An AF_INET6 socket connected to ::ffff:127.0.0.1 sends IPv4 packets.
class MappedTest : public TestDatapath {
 protected:
  static Result<UniqueFd> mapped_socket() {
    UniqueFd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_errno("socket", errno);
    int off = 0;
    if (::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) != 0)
      return fail_errno("IPV6_V6ONLY", errno);
    return fd;
  }
  static sockaddr_in6 mapped_loopback(std::uint16_t port) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port);
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6.sin6_addr);
    return sin6;
  }
};

TEST_F(MappedTest, V4MappedConnectionOfAnIpv6SocketIsTrackedAndMatchedAsIpv4) {
  TF_REQUIRE_ROOT();
  // The IPv4 listener's port is exempt by an IPv4 rule; the datapath must
  // see the mapped connection's remote as that IPv4 address.
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(AF_INET));
  TF_ASSERT_OK_AND_ASSIGN(auto end, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto client, mapped_socket());
  auto opts = options();
  TF_ASSERT_OK_AND_ASSIGN(auto rule,
                          datapath::Exemption::parse("127.0.0.1:" + std::to_string(end.port)));
  opts.exemptions.push_back(rule);
  TF_ASSERT_OK(open(opts));
  auto addr = mapped_loopback(end.port);
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << std::strerror(errno);
  TF_ASSERT_OK_AND_ASSIGN(auto server, accept_one(listener.get()));
  TF_ASSERT_OK(inside.leave());
  TF_ASSERT_OK_AND_ASSIGN(auto cookie, socket_cookie(client.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto client_end, local_endpoint(client.get()));

  TF_ASSERT_OK_AND_ASSIGN(auto entry, conns().lookup(cookie));
  ASSERT_TRUE(entry.has_value()) << "the mapped connection was not tracked";
  EXPECT_EQ(entry->direction, TF_DIRECTION_OUTBOUND);
  EXPECT_EQ(datapath::local_endpoint(entry->tuple), "127.0.0.1:" + std::to_string(client_end.port));
  EXPECT_EQ(datapath::remote_endpoint(entry->tuple), "127.0.0.1:" + std::to_string(end.port));
  EXPECT_EQ(entry->verdict, TF_VERDICT_ALLOW) << "the IPv4 exemption did not apply";
  EXPECT_EQ(entry->reason, TF_REASON_EXEMPT);

  TF_ASSERT_OK(send_all(client.get(), "mapped"));
  TF_ASSERT_OK_AND_ASSIGN(auto got, recv_text(server.get(), 6));
  EXPECT_EQ(got, "mapped");
}

}  // namespace
}  // namespace trustfence::testing::kernel
