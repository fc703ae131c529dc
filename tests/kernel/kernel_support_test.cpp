// Kernel support: what the datapath requires is there (the tier would not
// run otherwise), and each optional feature behaves as its probe says —
// present, the feature works; missing, the datapath does without it in the
// way the README's "Kernel support" table says. The VM run
// (scripts/vm-test.sh) checks this on Debian's kernel as well as the host's.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/utsname.h>

#include <cstdio>
#include <cstring>

#include "support/kernel/assert_ok.hpp"
#include "support/kernel/socket.hpp"
#include "support/kernel/test_datapath.hpp"
#include "support/privileges.hpp"
#include "trustfence/datapath/host.hpp"
#include "trustfence/datapath/sock_destroy.hpp"

namespace trustfence::testing::kernel {
namespace {

using namespace std::chrono_literals;

// The kernel's default floor is 200 ms; the lowered one 10 ms (a few
// jiffies: 12 ms at HZ=250). RTO = SRTT + max(RTTVAR, floor), and loopback
// SRTT is microseconds, so the two never overlap.
constexpr std::uint32_t kLoweredRtoBelowUs = 100'000;
constexpr std::uint32_t kDefaultRtoAtLeastUs = 200'000;

constexpr datapath::KernelFeatures kEverything{
    .rto_min_sockopt = true, .kernel_config = true, .sock_destroy = true};

Result<tcp_info> tcp_info_of(int fd) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
    return fail_errno("getsockopt TCP_INFO", errno);
  return info;
}

Result<bool> linear_timeouts(int fd) {
  int on = 0;
  socklen_t len = sizeof(on);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, &on, &len) != 0)
    return fail_errno("getsockopt TCP_THIN_LINEAR_TIMEOUTS", errno);
  return on != 0;
}

std::string release() {
  utsname uts{};
  ::uname(&uts);
  return uts.release;
}

TEST(KernelSupport, RequiredFeaturesArePresent) {
  TF_REQUIRE_ROOT();
  TF_EXPECT_OK(datapath::check_kernel_features());
  const auto& f = datapath::kernel_features();
  std::printf("[ kernel   ] Linux %s: TCP_BPF_RTO_MIN %s, kernel config %s, SOCK_DESTROY %s\n",
              release().c_str(), f.rto_min_sockopt ? "yes" : "no", f.kernel_config ? "yes" : "no",
              f.sock_destroy ? "yes" : "no");
}

TEST(KernelSupport, MissingFeaturesAreNamedWithTheirVersionAndCost) {
  EXPECT_EQ(datapath::describe_missing(kEverything, true), "");
  auto none = datapath::describe_missing({}, false);
  for (auto part : {"TCP_BPF_RTO_MIN", "Linux 5.10", "200 ms", "TCP socket iterators", "Linux 5.15",
                    "SOCK_DESTROY", "CONFIG_INET_DIAG_DESTROY", "tcp_diag", "timeout"})
    EXPECT_NE(none.find(part), std::string::npos) << part << " missing from: " << none;
  EXPECT_EQ(none.find('\n'), std::string::npos) << "one line: " << none;
  auto no_config = datapath::describe_missing(
      {.rto_min_sockopt = true, .kernel_config = false, .sock_destroy = true}, true);
  EXPECT_NE(no_config.find("CONFIG_HZ"), std::string::npos) << no_config;
  EXPECT_NE(no_config.find("/proc/config.gz"), std::string::npos) << no_config;
}

TEST(KernelSupport, CheckNamesEveryMissingPieceInOneMessage) {
  // An ELF without BTF stands in for a kernel built without it.
  auto checked = datapath::check_kernel_features("/proc/self/exe");
  ASSERT_FALSE(checked.has_value());
  EXPECT_EQ(checked.error().code, Errc::kUnsupported);
  EXPECT_NE(checked.error().message.find("/proc/self/exe"), std::string::npos)
      << checked.error().message;
  EXPECT_NE(checked.error().message.find(std::string("Linux ") + datapath::kMinimumLinux),
            std::string::npos)
      << checked.error().message;
}

class KernelSupportTest : public TestDatapath {};

// With TCP_BPF_RTO_MIN and CONFIG_HZ, both ends of a pending connection
// retransmit on the lowered floor (with linear timeouts where the kernel
// takes them from BPF) and get the default floor back once allowed;
// without, they keep the default and nothing is counted as refused.
TEST_F(KernelSupportTest, PendingSocketsGetTheLoweredRtoFloorIfTheKernelCanSetIt) {
  TF_REQUIRE_ROOT();
  const auto& f = datapath::kernel_features();
  const bool lowers = f.rto_min_sockopt && f.kernel_config;
  TF_ASSERT_OK(open());
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(AF_INET));
  TF_ASSERT_OK_AND_ASSIGN(auto end, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto pair, connect_pair(AF_INET, listener.get(), end.port));
  TF_ASSERT_OK(inside.leave());

  for (auto [fd, cookie] : {std::pair{pair.client.get(), pair.client_cookie},
                            std::pair{pair.server.get(), pair.server_cookie}}) {
    SCOPED_TRACE(fd == pair.client.get() ? "client" : "server");
    TF_ASSERT_OK_AND_ASSIGN(auto conn, conns().lookup(cookie));
    ASSERT_TRUE(conn.has_value());
    TF_ASSERT_OK_AND_ASSIGN(auto info, tcp_info_of(fd));
    TF_ASSERT_OK_AND_ASSIGN(bool linear, linear_timeouts(fd));
    EXPECT_EQ((conn->flags & TF_CONN_F_RTO_LOWERED) != 0, lowers);
    EXPECT_EQ((conn->flags & TF_CONN_F_LINEAR_RTO) != 0, linear);
    if (lowers)
      EXPECT_LT(info.tcpi_rto, kLoweredRtoBelowUs);
    else
      EXPECT_GE(info.tcpi_rto, kDefaultRtoAtLeastUs);
    std::printf("[ rto      ] pending: rto %u us, linear timeouts %s\n", info.tcpi_rto,
                linear ? "on" : "off");
  }

  TF_ASSERT_OK_AND_ASSIGN(bool a, allow(pair.client_cookie));
  TF_ASSERT_OK_AND_ASSIGN(bool b, allow(pair.server_cookie));
  ASSERT_TRUE(a && b);
  // The floor and linear timeouts go back on the first RTT sample after the
  // verdict (one per round trip). RTO itself then only rises with the RTT
  // variance, so it is the counters and the socket option that tell.
  const std::uint64_t want_restored = lowers ? 2 : 0;
  auto restored = [&]() -> Result<bool> {
    for (int i = 0; i < 20; ++i) {
      if (auto ok = send_all(pair.client.get(), "?"); !ok) return std::unexpected(ok.error());
      if (auto got = recv_text(pair.server.get(), 1); !got) return std::unexpected(got.error());
      if (auto ok = send_all(pair.server.get(), "!"); !ok) return std::unexpected(ok.error());
      if (auto got = recv_text(pair.client.get(), 1); !got) return std::unexpected(got.error());
      auto s = stats();
      auto client = linear_timeouts(pair.client.get());
      auto server = linear_timeouts(pair.server.get());
      if (!s || !client || !server) return fail(Errc::kIo, "reading stats or TCP options");
      if (s->counters[TF_COUNTER_RTO_RESTORED] >= want_restored && !*client && !*server)
        return true;
    }
    return false;
  };
  TF_ASSERT_OK_AND_ASSIGN(bool back, restored());
  EXPECT_TRUE(back) << "the RTO floor or linear timeouts were not restored after ALLOW";
  TF_ASSERT_OK_AND_ASSIGN(auto s, stats());
  EXPECT_EQ(s.counters[TF_COUNTER_RTO_UNSUPPORTED], 0u);
  if (lowers) {
    EXPECT_GE(s.counters[TF_COUNTER_RTO_LOWERED], 2u);
    EXPECT_GE(s.counters[TF_COUNTER_RTO_RESTORED], 2u);
  } else {
    EXPECT_EQ(s.counters[TF_COUNTER_RTO_LOWERED], 0u);
    EXPECT_EQ(s.counters[TF_COUNTER_RTO_RESTORED], 0u);
  }
}

// Every kernel the datapath loads on (Linux 5.15+) takes setsockopt from
// TCP socket iterators: the push of held payload is there.
TEST_F(KernelSupportTest, TheResendIteratorLoads) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK(open());
  EXPECT_TRUE(dp().resend_supported())
      << "the kernel refused tf_resend_held: " << datapath::describe_missing(kEverything, false);
}

// With SOCK_DESTROY a denied socket is reset; without, the request fails
// with kUnsupported (no CONFIG_INET_DIAG_DESTROY) or finds nothing (no
// tcp_diag), and the socket stays as it was.
TEST_F(KernelSupportTest, SockDestroyWorksIfTheProbeSaysSo) {
  TF_REQUIRE_ROOT();
  const bool supported = datapath::kernel_features().sock_destroy;
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(AF_INET));
  TF_ASSERT_OK_AND_ASSIGN(auto end, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto pair, connect_pair(AF_INET, listener.get(), end.port));
  tf_tuple tuple{};
  tuple.family = AF_INET;
  tuple.local_port = pair.server_end.port;
  tuple.remote_port = pair.client_end.port;
  const std::uint32_t loopback = htonl(INADDR_LOOPBACK);
  std::memcpy(tuple.local_addr, &loopback, sizeof(loopback));
  std::memcpy(tuple.remote_addr, &loopback, sizeof(loopback));

  auto destroyed = datapath::destroy_socket(tuple, pair.server_cookie);
  if (supported) {
    ASSERT_TRUE(destroyed.has_value()) << destroyed.error().message;
    EXPECT_TRUE(*destroyed);
    TF_ASSERT_OK_AND_ASSIGN(bool reset, reset_arrives_within(pair.client.get(), 2s));
    EXPECT_TRUE(reset);
  } else {
    if (destroyed) {
      EXPECT_FALSE(*destroyed);
    } else {
      EXPECT_EQ(destroyed.error().code, Errc::kUnsupported) << destroyed.error().message;
    }
    TF_EXPECT_OK(send_all(pair.client.get(), "?"));
    TF_ASSERT_OK_AND_ASSIGN(auto got, recv_text(pair.server.get(), 1));
    EXPECT_EQ(got, "?");
  }
}

}  // namespace
}  // namespace trustfence::testing::kernel
