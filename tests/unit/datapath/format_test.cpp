#include "trustfence/datapath/format.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <time.h>

#include <cstring>
#include <string>

namespace {

using trustfence::datapath::local_endpoint;
using trustfence::datapath::remote_endpoint;

// A tuple as tf_sockops fills it: IPv4 in word 0, ports in host order.
tf_tuple tuple(int family, const char* local, __u16 local_port, const char* remote,
               __u16 remote_port) {
  tf_tuple t{};
  t.family = static_cast<__u8>(family);
  EXPECT_EQ(inet_pton(family, local, t.local_addr), 1) << local;
  EXPECT_EQ(inet_pton(family, remote, t.remote_addr), 1) << remote;
  t.local_port = local_port;
  t.remote_port = remote_port;
  return t;
}

struct FormatCase {
  const char* name;
  tf_tuple tuple;
  std::string local;
  std::string remote;
};

void PrintTo(const FormatCase& c, std::ostream* os) { *os << c.name; }

class Endpoints : public ::testing::TestWithParam<FormatCase> {};

TEST_P(Endpoints, AreWrittenAsAddressColonPort) {
  EXPECT_EQ(local_endpoint(GetParam().tuple), GetParam().local);
  EXPECT_EQ(remote_endpoint(GetParam().tuple), GetParam().remote);
}

INSTANTIATE_TEST_SUITE_P(
    Table, Endpoints,
    ::testing::Values(
        FormatCase{"ipv4", tuple(AF_INET, "10.0.0.1", 80, "192.168.1.2", 54321), "10.0.0.1:80",
                   "192.168.1.2:54321"},
        FormatCase{"ipv4_port_extremes", tuple(AF_INET, "127.0.0.1", 0, "255.255.255.255", 65535),
                   "127.0.0.1:0", "255.255.255.255:65535"},
        FormatCase{"ipv6_in_brackets", tuple(AF_INET6, "fd00::1", 443, "2001:db8::2", 5555),
                   "[fd00::1]:443", "[2001:db8::2]:5555"},
        FormatCase{"ipv6_loopback", tuple(AF_INET6, "::1", 22, "::1", 40000), "[::1]:22",
                   "[::1]:40000"},
        FormatCase{"ipv4_mapped_shown_as_ipv4",
                   tuple(AF_INET6, "::ffff:127.0.0.1", 8080, "::ffff:10.1.2.3", 33000),
                   "127.0.0.1:8080", "10.1.2.3:33000"},
        // Only ::ffff:0:0/96 is IPv4-mapped; NAT64 addresses stay IPv6.
        FormatCase{"nat64_stays_ipv6", tuple(AF_INET6, "64:ff9b::a00:1", 1, "fd00::ffff:a00:1", 2),
                   "[64:ff9b::a00:1]:1", "[fd00::ffff:a00:1]:2"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Endpoints, LocalAndRemoteAreNotSwapped) {
  tf_tuple t = tuple(AF_INET, "10.0.0.1", 1111, "10.0.0.2", 2222);
  EXPECT_EQ(local_endpoint(t), "10.0.0.1:1111");
  EXPECT_EQ(remote_endpoint(t), "10.0.0.2:2222");
}

TEST(MonotonicNs, ReadsTheClockOfBpfKtimeGetNs) {
  auto read = [] {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + ts.tv_nsec;
  };
  std::uint64_t before = read();
  std::uint64_t now = trustfence::datapath::monotonic_ns();
  std::uint64_t after = read();
  EXPECT_LE(before, now);
  EXPECT_LE(now, after);
}

}  // namespace
