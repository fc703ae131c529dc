// Tracking: every TCP connection established in the enforced cgroup is in
// tf_conns under its socket cookie, with its tuple, direction and cgroup,
// PENDING, announced on tf_events; closing it removes the entry and
// announces the close, on every path a socket can take to TCP_CLOSE.

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>
#include <filesystem>

#include "support/kernel/assert_ok.hpp"
#include "support/kernel/socket.hpp"
#include "support/kernel/test_datapath.hpp"
#include "support/privileges.hpp"
#include "trustfence/datapath/format.hpp"

namespace trustfence::testing::kernel {
namespace {

using namespace std::chrono_literals;

std::string describe(const Endpoint& end) {
  tf_tuple t{};
  t.family = static_cast<__u8>(end.family);
  std::memcpy(t.local_addr, end.addr.data(), 16);
  t.local_port = end.port;
  return datapath::local_endpoint(t);
}

// The entry's tuple, seen from the socket whose local end is `local`.
void expect_tuple(const tf_tuple& t, const Endpoint& local, const Endpoint& remote) {
  EXPECT_EQ(t.family, local.family);
  EXPECT_EQ(t.local_port, local.port);
  EXPECT_EQ(t.remote_port, remote.port);
  EXPECT_EQ(0, std::memcmp(t.local_addr, local.addr.data(), 16))
      << "local address " << datapath::local_endpoint(t) << ", expected " << describe(local);
  EXPECT_EQ(0, std::memcmp(t.remote_addr, remote.addr.data(), 16))
      << "remote address " << datapath::remote_endpoint(t) << ", expected " << describe(remote);
}

class TrackingTest : public TestDatapath, public ::testing::WithParamInterface<int> {};

TEST_P(TrackingTest, BothEndsTrackedWithTupleDirectionCgroupAndPending) {
  TF_REQUIRE_ROOT();
  const int family = GetParam();
  TF_ASSERT_OK(open());
  EXPECT_EQ(dp().cgroup_id(), cgroup().id());
  TF_ASSERT_OK_AND_ASSIGN(unsigned attached, cgroup().attached_programs());
  EXPECT_EQ(attached, 3u) << "tf_sockops, tf_egress and tf_ingress on the test cgroup";
  TF_ASSERT_OK_AND_ASSIGN(auto events, EventLog::open(dp()));

  std::uint64_t before_ns = datapath::monotonic_ns();
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(family));
  TF_ASSERT_OK_AND_ASSIGN(auto server_addr, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto pair, connect_pair(family, listener.get(), server_addr.port));
  TF_ASSERT_OK(inside.leave());
  std::uint64_t after_ns = datapath::monotonic_ns();

  EXPECT_EQ(pair.client_end.addr, loopback(family).addr);
  EXPECT_EQ(pair.server_end.port, server_addr.port);

  TF_ASSERT_OK_AND_ASSIGN(auto client, conns().lookup(pair.client_cookie));
  TF_ASSERT_OK_AND_ASSIGN(auto server, conns().lookup(pair.server_cookie));
  ASSERT_TRUE(client.has_value()) << "client cookie " << pair.client_cookie << " not in tf_conns";
  ASSERT_TRUE(server.has_value()) << "server cookie " << pair.server_cookie << " not in tf_conns";

  {
    SCOPED_TRACE("client (connect) entry");
    expect_tuple(client->tuple, pair.client_end, pair.server_end);
    EXPECT_EQ(client->direction, TF_DIRECTION_OUTBOUND);
  }
  {
    SCOPED_TRACE("server (accept) entry");
    expect_tuple(server->tuple, pair.server_end, pair.client_end);
    EXPECT_EQ(server->direction, TF_DIRECTION_INBOUND);
  }
  for (const tf_conn* c : {&*client, &*server}) {
    EXPECT_EQ(c->cgroup_id, cgroup().id());
    EXPECT_EQ(c->verdict, TF_VERDICT_PENDING);
    EXPECT_EQ(c->reason, TF_REASON_NONE);
    EXPECT_EQ(c->decided_ns, 0u);
    EXPECT_EQ(c->peer_id, 0u);
    EXPECT_EQ(c->peer_trust_domain, 0u);
    EXPECT_GE(c->created_ns, before_ns);
    EXPECT_LE(c->created_ns, after_ns);
  }

  // The listening socket is no connection.
  TF_ASSERT_OK_AND_ASSIGN(auto listener_cookie, socket_cookie(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto listener_entry, conns().lookup(listener_cookie));
  EXPECT_FALSE(listener_entry.has_value());
  TF_ASSERT_OK_AND_ASSIGN(auto all, conns().snapshot());
  EXPECT_EQ(all.size(), 2u);

  for (auto [cookie, entry] :
       {std::pair{pair.client_cookie, *client}, std::pair{pair.server_cookie, *server}}) {
    TF_ASSERT_OK_AND_ASSIGN(bool seen, events.wait_for(TF_EVENT_NEW, cookie, kIoTimeout));
    ASSERT_TRUE(seen) << "no new event for cookie " << cookie;
    auto ev = events.find(TF_EVENT_NEW, cookie);
    EXPECT_EQ(0, std::memcmp(&ev->conn, &entry, sizeof(entry)))
        << "the new event carries the entry as created";
    EXPECT_GE(ev->timestamp_ns, entry.created_ns);
  }
  EXPECT_EQ(events.count(TF_EVENT_NEW), 2u);
  EXPECT_EQ(events.count(TF_EVENT_CLOSE), 0u);

  TF_ASSERT_OK_AND_ASSIGN(auto stats, stats());
  EXPECT_EQ(stats.counters[TF_COUNTER_CONN_TRACKED], 2u);
  EXPECT_EQ(stats.counters[TF_COUNTER_CONN_EXEMPT], 0u);
  EXPECT_EQ(stats.counters[TF_COUNTER_TABLE_FULL], 0u);
  EXPECT_EQ(stats.counters[TF_COUNTER_EVENTS_LOST], 0u);
}

TEST_P(TrackingTest, OnlySocketsOfTheCgroupAreTracked) {
  TF_REQUIRE_ROOT();
  const int family = GetParam();
  TF_ASSERT_OK(open());

  // Server inside the cgroup, client outside it.
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(family));
  TF_ASSERT_OK(inside.leave());
  TF_ASSERT_OK_AND_ASSIGN(auto port, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto pair, connect_pair(family, listener.get(), port.port));

  TF_ASSERT_OK_AND_ASSIGN(auto client, conns().lookup(pair.client_cookie));
  TF_ASSERT_OK_AND_ASSIGN(auto server, conns().lookup(pair.server_cookie));
  EXPECT_FALSE(client.has_value()) << "a socket outside the enforced cgroup was tracked";
  ASSERT_TRUE(server.has_value()) << "accepted sockets inherit the listener's cgroup";
  EXPECT_EQ(server->direction, TF_DIRECTION_INBOUND);
  EXPECT_EQ(server->cgroup_id, cgroup().id());

  // Connections entirely outside the cgroup are invisible.
  TF_ASSERT_OK_AND_ASSIGN(auto outside_listener, listen_loopback(family));
  TF_ASSERT_OK_AND_ASSIGN(auto outside_port, local_endpoint(outside_listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto outside,
                          connect_pair(family, outside_listener.get(), outside_port.port));
  TF_ASSERT_OK_AND_ASSIGN(auto all, conns().snapshot());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].first, pair.server_cookie);
}

INSTANTIATE_TEST_SUITE_P(Loopback, TrackingTest, ::testing::Values(AF_INET, AF_INET6),
                         [](const auto& info) { return std::string(family_name(info.param)); });

// How a connection ends: who closes first (and so takes TIME_WAIT), or an
// abortive close that sends RST.
enum class Ending { kClientFirst, kServerFirst, kClientReset, kShutdownKeepsFd };

const char* ending_name(Ending e) {
  switch (e) {
    case Ending::kClientFirst:
      return "ClientClosesFirst";
    case Ending::kServerFirst:
      return "ServerClosesFirst";
    case Ending::kClientReset:
      return "ClientResets";
    case Ending::kShutdownKeepsFd:
      return "ShutdownWithFdsOpen";
  }
  return "?";
}

struct CloseCase {
  int family;
  Ending ending;
};

class CloseTest : public TestDatapath, public ::testing::WithParamInterface<CloseCase> {};

TEST_P(CloseTest, CloseRemovesBothEntriesAndEmitsCloseEvents) {
  TF_REQUIRE_ROOT();
  const auto [family, ending] = GetParam();
  TF_ASSERT_OK(open());
  TF_ASSERT_OK_AND_ASSIGN(auto events, EventLog::open(dp()));

  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(family));
  TF_ASSERT_OK_AND_ASSIGN(auto port, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto pair, connect_pair(family, listener.get(), port.port));
  TF_ASSERT_OK(inside.leave());
  TF_ASSERT_OK_AND_ASSIGN(auto client_entry, conns().lookup(pair.client_cookie));
  TF_ASSERT_OK_AND_ASSIGN(auto server_entry, conns().lookup(pair.server_cookie));
  ASSERT_TRUE(client_entry && server_entry);

  // Still PENDING: FIN, ACK and RST are control segments and must pass.
  std::uint16_t time_wait_port = 0, time_wait_peer = 0;
  switch (ending) {
    case Ending::kClientFirst:
      pair.client.reset();
      pair.server.reset();
      time_wait_port = pair.client_end.port;
      time_wait_peer = pair.server_end.port;
      break;
    case Ending::kServerFirst:
      pair.server.reset();
      pair.client.reset();
      time_wait_port = pair.server_end.port;
      time_wait_peer = pair.client_end.port;
      break;
    case Ending::kClientReset: {
      TF_ASSERT_OK(set_linger_zero(pair.client.get()));
      pair.client.reset();
      TF_ASSERT_OK_AND_ASSIGN(bool reset, reset_arrives_within(pair.server.get(), kIoTimeout));
      EXPECT_TRUE(reset) << "the server never saw the client's RST";
      break;
    }
    case Ending::kShutdownKeepsFd: {
      // Both descriptors stay open: the entries must go when the sockets
      // reach TCP_CLOSE, not when the descriptors are closed.
      ASSERT_EQ(::shutdown(pair.client.get(), SHUT_WR), 0);
      TF_ASSERT_OK_AND_ASSIGN(std::size_t n, recv_until_eof(pair.server.get(), [](auto) {}));
      EXPECT_EQ(n, 0u);
      ASSERT_EQ(::shutdown(pair.server.get(), SHUT_WR), 0);
      TF_ASSERT_OK_AND_ASSIGN(std::size_t m, recv_until_eof(pair.client.get(), [](auto) {}));
      EXPECT_EQ(m, 0u);
      time_wait_port = pair.client_end.port;
      time_wait_peer = pair.server_end.port;
      break;
    }
  }

  for (auto [cookie, entry] : {std::pair{pair.client_cookie, *client_entry},
                               std::pair{pair.server_cookie, *server_entry}}) {
    TF_ASSERT_OK_AND_ASSIGN(bool closed, events.wait_for(TF_EVENT_CLOSE, cookie, kIoTimeout));
    ASSERT_TRUE(closed) << "no close event for cookie " << cookie;
    auto ev = events.find(TF_EVENT_CLOSE, cookie);
    EXPECT_EQ(0, std::memcmp(&ev->conn.tuple, &entry.tuple, sizeof(entry.tuple)));
    EXPECT_EQ(ev->conn.direction, entry.direction);
    EXPECT_EQ(ev->conn.created_ns, entry.created_ns);
    EXPECT_GE(ev->timestamp_ns, entry.created_ns);
    TF_ASSERT_OK_AND_ASSIGN(auto after, conns().lookup(cookie));
    EXPECT_FALSE(after.has_value()) << "entry of cookie " << cookie << " outlived its socket";
  }
  if (time_wait_port != 0) {
    TF_ASSERT_OK_AND_ASSIGN(bool in_time_wait,
                            time_wait_listed(family, time_wait_port, time_wait_peer));
    EXPECT_TRUE(in_time_wait) << "the closing side should sit in TIME_WAIT (port " << time_wait_port
                              << ")";
  }
  TF_ASSERT_OK_AND_ASSIGN(auto all, conns().snapshot());
  EXPECT_TRUE(all.empty());
  EXPECT_EQ(events.count(TF_EVENT_CLOSE), 2u);
  TF_ASSERT_OK_AND_ASSIGN(auto stats, stats());
  EXPECT_EQ(stats.counters[TF_COUNTER_CONN_TRACKED], 2u);
  EXPECT_EQ(stats.counters[TF_COUNTER_CONN_CLOSED], 2u);
}

std::vector<CloseCase> close_cases() {
  std::vector<CloseCase> cases;
  for (int family : {AF_INET, AF_INET6})
    for (Ending e : {Ending::kClientFirst, Ending::kServerFirst, Ending::kClientReset,
                     Ending::kShutdownKeepsFd})
      cases.push_back({family, e});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Loopback, CloseTest, ::testing::ValuesIn(close_cases()),
                         [](const auto& info) {
                           return std::string(family_name(info.param.family)) + "_" +
                                  ending_name(info.param.ending);
                         });

}  // namespace
}  // namespace trustfence::testing::kernel
