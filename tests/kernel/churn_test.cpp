// Churn: ten thousand short connections, IPv4 and IPv6 alternating, closed
// every way a connection closes, leave no entry behind in tf_conns, and
// every tracked connection is counted closed.

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdio>

#include "support/kernel/assert_ok.hpp"
#include "support/kernel/socket.hpp"
#include "support/kernel/test_datapath.hpp"
#include "support/privileges.hpp"
#include "trustfence/datapath/exemption.hpp"

namespace trustfence::testing::kernel {
namespace {

using namespace std::chrono_literals;

constexpr int kConnections = 10'000;

// How a connection becomes ALLOW: a verdict written per connection, as the
// agent does, or an exemption of the server port, decided in the kernel.
enum class Decision { kVerdict, kExemptPort };

class ChurnTest : public TestDatapath, public ::testing::WithParamInterface<Decision> {};

TEST_P(ChurnTest, TenThousandShortConnectionsLeaveNoEntryBehind) {
  TF_REQUIRE_ROOT();
  const Decision decision = GetParam();
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener4, listen_loopback(AF_INET));
  TF_ASSERT_OK_AND_ASSIGN(auto listener6, listen_loopback(AF_INET6));
  TF_ASSERT_OK_AND_ASSIGN(auto end4, local_endpoint(listener4.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto end6, local_endpoint(listener6.get()));

  auto opts = options();
  if (decision == Decision::kExemptPort) {
    for (auto rule :
         {"127.0.0.1:" + std::to_string(end4.port), "[::1]:" + std::to_string(end6.port)}) {
      TF_ASSERT_OK_AND_ASSIGN(auto ex, datapath::Exemption::parse(rule));
      opts.exemptions.push_back(ex);
    }
  }
  TF_ASSERT_OK(open(opts));
  TF_ASSERT_OK_AND_ASSIGN(auto events, EventLog::open(dp()));

  auto started = Clock::now();
  for (int i = 0; i < kConnections; ++i) {
    const bool v4 = i % 2 == 0;
    const int family = v4 ? AF_INET : AF_INET6;
    SCOPED_TRACE("connection " + std::to_string(i) + " (" + family_name(family) + ")");
    TF_ASSERT_OK_AND_ASSIGN(auto pair, connect_pair(family, v4 ? listener4.get() : listener6.get(),
                                                    v4 ? end4.port : end6.port));
    if (decision == Decision::kVerdict) {
      TF_ASSERT_OK_AND_ASSIGN(bool a, allow(pair.client_cookie));
      TF_ASSERT_OK_AND_ASSIGN(bool b, allow(pair.server_cookie));
      ASSERT_TRUE(a && b);
    }
    TF_ASSERT_OK(send_all(pair.client.get(), "?"));
    TF_ASSERT_OK_AND_ASSIGN(auto request, recv_text(pair.server.get(), 1));
    TF_ASSERT_OK(send_all(pair.server.get(), "!"));
    TF_ASSERT_OK_AND_ASSIGN(auto response, recv_text(pair.client.get(), 1));
    ASSERT_EQ(request + response, "?!");
    switch (i % 3) {
      case 0:  // the client takes TIME_WAIT
        pair.client.reset();
        pair.server.reset();
        break;
      case 1:  // the server takes TIME_WAIT
        pair.server.reset();
        pair.client.reset();
        break;
      case 2:  // abortive: RST, no TIME_WAIT
        TF_ASSERT_OK(set_linger_zero(pair.client.get()));
        pair.client.reset();
        pair.server.reset();
        break;
    }
    // Keep the ring buffer from filling: four records per connection.
    if (i % 256 == 0) TF_ASSERT_OK(events.drain());
  }
  TF_ASSERT_OK(inside.leave());
  auto churned = Clock::now();

  const std::size_t sockets = 2 * kConnections;
  TF_ASSERT_OK_AND_ASSIGN(
      bool all_closed,
      events.wait_until([&](const EventLog& log) { return log.count(TF_EVENT_CLOSE) >= sockets; },
                        std::chrono::seconds(60)));
  EXPECT_TRUE(all_closed) << events.count(TF_EVENT_CLOSE) << " close events of " << sockets;
  EXPECT_EQ(events.count(TF_EVENT_NEW), sockets);
  EXPECT_EQ(events.count(TF_EVENT_CLOSE), sockets);

  TF_ASSERT_OK_AND_ASSIGN(auto left, conns().snapshot());
  EXPECT_TRUE(left.empty()) << left.size() << " entries outlived their sockets, e.g. cookie "
                            << left.front().first;
  TF_ASSERT_OK_AND_ASSIGN(auto s, stats());
  EXPECT_EQ(s.counters[TF_COUNTER_CONN_TRACKED], sockets);
  EXPECT_EQ(s.counters[TF_COUNTER_CONN_CLOSED], s.counters[TF_COUNTER_CONN_TRACKED]);
  EXPECT_EQ(s.counters[TF_COUNTER_CONN_EXEMPT], decision == Decision::kExemptPort ? sockets : 0u);
  EXPECT_EQ(s.counters[TF_COUNTER_TABLE_FULL], 0u);
  EXPECT_EQ(s.counters[TF_COUNTER_EVENTS_LOST], 0u);
  for (auto dir : {TF_PACKET_EGRESS, TF_PACKET_INGRESS})
    for (auto reason : {TF_REASON_PENDING, TF_REASON_UNTRACKED})
      EXPECT_EQ(s.packets[dir][TF_ACTION_DROP][reason], 0u)
          << "drops with reason " << reason << " in a run where every connection was allowed";

  std::printf("[ churn    ] %d connections in %.0f ms, all closed %.0f ms later\n", kConnections,
              std::chrono::duration<double, std::milli>(churned - started).count(),
              std::chrono::duration<double, std::milli>(Clock::now() - churned).count());
}

INSTANTIATE_TEST_SUITE_P(Loopback, ChurnTest,
                         ::testing::Values(Decision::kVerdict, Decision::kExemptPort),
                         [](const auto& info) {
                           return info.param == Decision::kVerdict ? "AllowVerdict" : "ExemptPort";
                         });

}  // namespace
}  // namespace trustfence::testing::kernel
