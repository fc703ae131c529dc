// IP addresses, CIDRs and socket addresses: strict parsing, the canonical
// text back, containment at every prefix boundary.

#include "trustfence/common/net.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>

#include "trustfence/common/unique_fd.hpp"

namespace trustfence::net {
namespace {

IpAddress ip(const char* text) { return IpAddress::parse(text).value(); }

// --- IpAddress ----------------------------------------------------------------------

struct GoodAddress {
  const char* text;
  const char* str;  // canonical form back
  bool v4;
};

void PrintTo(const GoodAddress& c, std::ostream* os) { *os << c.text; }

class IpAddressParses : public ::testing::TestWithParam<GoodAddress> {};

TEST_P(IpAddressParses, ToItsCanonicalText) {
  const GoodAddress& c = GetParam();
  auto parsed = IpAddress::parse(c.text);
  ASSERT_TRUE(parsed.has_value()) << parsed.error().message;
  EXPECT_EQ(parsed->str(), c.str);
  EXPECT_EQ(parsed->is_v4(), c.v4);
  EXPECT_EQ(parsed->family(), c.v4 ? AF_INET : AF_INET6);
  // The canonical text parses back to the same bytes.
  EXPECT_EQ(IpAddress::parse(parsed->str()).value(), *parsed);
}

INSTANTIATE_TEST_SUITE_P(
    Table, IpAddressParses,
    ::testing::Values(GoodAddress{"10.0.0.1", "10.0.0.1", true},
                      GoodAddress{"0.0.0.0", "0.0.0.0", true},
                      GoodAddress{"255.255.255.255", "255.255.255.255", true},
                      GoodAddress{"fd00::1", "fd00::1", false},
                      GoodAddress{"FD00:0:0::01", "fd00::1", false}, GoodAddress{"::", "::", false},
                      GoodAddress{"::1", "::1", false},
                      GoodAddress{"2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1", false},
                      // v4 written in its v6-mapped form is IPv4.
                      GoodAddress{"::ffff:10.0.0.1", "10.0.0.1", true},
                      GoodAddress{"::ffff:a00:1", "10.0.0.1", true},
                      // v4-compatible (deprecated) is not.
                      GoodAddress{"::10.0.0.1", "::10.0.0.1", false}));

class IpAddressRefuses : public ::testing::TestWithParam<std::string> {};

TEST_P(IpAddressRefuses, NamingTheText) {
  auto parsed = IpAddress::parse(GetParam());
  ASSERT_FALSE(parsed.has_value()) << GetParam() << " -> " << parsed->str();
  EXPECT_EQ(parsed.error().code, Errc::kInvalidArgument);
  EXPECT_NE(parsed.error().message.find("'" + GetParam() + "'"), std::string::npos)
      << parsed.error().message;
}

INSTANTIATE_TEST_SUITE_P(Table, IpAddressRefuses,
                         ::testing::Values("", "10.0.0", "10.0.0.256", "10.0.0.1.2", " 10.0.0.1",
                                           "10.0.0.1 ", "010.0.0.1", "0x0a.0.0.1", "10.0.0.-1",
                                           "[fd00::1]", "fd00::1/64", "fd00:::1", "fd00::g",
                                           "1:2:3:4:5:6:7:8:9", "localhost", "fe80::1%eth0",
                                           std::string(64, '1')));

TEST(IpAddress, FromWordsTakesTheDatapathLayout) {
  std::uint32_t v4[4] = {};
  ASSERT_EQ(inet_pton(AF_INET, "10.1.2.3", &v4[0]), 1);
  v4[1] = v4[2] = v4[3] = 0xdeadbeef;  // ignored for AF_INET
  EXPECT_EQ(IpAddress::from_words(v4, AF_INET), ip("10.1.2.3"));

  std::uint32_t v6[4] = {};
  ASSERT_EQ(inet_pton(AF_INET6, "fd00::1:2", v6), 1);
  EXPECT_EQ(IpAddress::from_words(v6, AF_INET6), ip("fd00::1:2"));

  // A v4-mapped address from an AF_INET6 socket is still IPv4.
  std::uint32_t mapped[4] = {};
  ASSERT_EQ(inet_pton(AF_INET6, "::ffff:10.1.2.3", mapped), 1);
  EXPECT_TRUE(IpAddress::from_words(mapped, AF_INET6).is_v4());
  EXPECT_EQ(IpAddress::from_words(mapped, AF_INET6), ip("10.1.2.3"));
}

TEST(IpAddress, BytesAreNetworkOrderV4Mapped) {
  const AddressBytes expected = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};
  EXPECT_EQ(ip("10.1.2.3").bytes(), expected);
  EXPECT_EQ(IpAddress::from_bytes(expected), ip("10.1.2.3"));
  EXPECT_LT(ip("10.0.0.1"), ip("10.0.0.2"));
}

// --- Cidr ---------------------------------------------------------------------------

struct GoodCidr {
  const char* text;
  const char* str;       // host bits cleared, prefix in the notation of the address
  unsigned prefix_bits;  // of the 128-bit form
};

void PrintTo(const GoodCidr& c, std::ostream* os) { *os << c.text; }

class CidrParses : public ::testing::TestWithParam<GoodCidr> {};

TEST_P(CidrParses, ClearingHostBits) {
  const GoodCidr& c = GetParam();
  auto cidr = Cidr::parse(c.text);
  ASSERT_TRUE(cidr.has_value()) << cidr.error().message;
  EXPECT_EQ(cidr->str(), c.str);
  EXPECT_EQ(cidr->prefix_bits(), c.prefix_bits);
  auto again = Cidr::parse(cidr->str());
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(again->str(), c.str);
}

INSTANTIATE_TEST_SUITE_P(
    Table, CidrParses,
    ::testing::Values(
        GoodCidr{"10.0.0.0/8", "10.0.0.0/8", 104}, GoodCidr{"10.1.2.3/8", "10.0.0.0/8", 104},
        GoodCidr{"10.1.3.255/23", "10.1.2.0/23", 119},
        GoodCidr{"10.1.2.255/31", "10.1.2.254/31", 127},
        GoodCidr{"10.1.2.3/32", "10.1.2.3/32", 128}, GoodCidr{"10.1.2.3", "10.1.2.3/32", 128},
        GoodCidr{"10.1.2.3/0", "0.0.0.0/0", 96}, GoodCidr{"fd00::1:2/64", "fd00::/64", 64},
        GoodCidr{"fd00::ffff/127", "fd00::fffe/127", 127},
        GoodCidr{"2001:db8:ffff::/33", "2001:db8:8000::/33", 33},
        GoodCidr{"fd00::1/128", "fd00::1/128", 128}, GoodCidr{"fd00::1", "fd00::1/128", 128},
        GoodCidr{"::/0", "::/0", 0}, GoodCidr{"ffff::/0", "::/0", 0},
        // v4 in v6 form: the prefix counts the 128-bit address.
        GoodCidr{"::ffff:10.1.2.3/104", "10.0.0.0/8", 104},
        GoodCidr{"::ffff:0.0.0.0/96", "0.0.0.0/0", 96},
        GoodCidr{"::ffff:10.1.2.3/128", "10.1.2.3/32", 128},
        GoodCidr{"::ffff:10.1.2.3", "10.1.2.3/32", 128}, GoodCidr{"::ffff:10.1.2.3/8", "::/8", 8}));

class CidrRefuses : public ::testing::TestWithParam<std::string> {};

TEST_P(CidrRefuses, NamingTheText) {
  auto cidr = Cidr::parse(GetParam());
  ASSERT_FALSE(cidr.has_value()) << GetParam() << " -> " << cidr->str();
  EXPECT_EQ(cidr.error().code, Errc::kInvalidArgument);
  EXPECT_NE(cidr.error().message.find("'" + GetParam() + "'"), std::string::npos)
      << cidr.error().message;
}

INSTANTIATE_TEST_SUITE_P(Table, CidrRefuses,
                         ::testing::Values("", "/8", "10.0.0/8", "10.0.0.0/", "10.0.0.0/33",
                                           "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/ 8",
                                           "10.0.0.0/8 ", "10.0.0.0/8/8", "10.0.0.0/4294967304",
                                           "fd00::/129", "fd00::/64x", "[fd00::]/64",
                                           "::ffff:10.0.0.0/129", "10.0.0.0:8"));

struct Containment {
  const char* cidr;
  const char* address;
  bool contained;
};

void PrintTo(const Containment& c, std::ostream* os) {
  *os << c.cidr << (c.contained ? " holds " : " lacks ") << c.address;
}

class CidrContains : public ::testing::TestWithParam<Containment> {};

TEST_P(CidrContains, AtThePrefixBoundary) {
  const Containment& c = GetParam();
  auto cidr = Cidr::parse(c.cidr);
  ASSERT_TRUE(cidr.has_value()) << cidr.error().message;
  EXPECT_EQ(cidr->contains(ip(c.address)), c.contained);
}

INSTANTIATE_TEST_SUITE_P(V4, CidrContains,
                         ::testing::Values(Containment{"10.0.0.0/8", "10.0.0.0", true},
                                           Containment{"10.0.0.0/8", "10.255.255.255", true},
                                           Containment{"10.0.0.0/8", "9.255.255.255", false},
                                           Containment{"10.0.0.0/8", "11.0.0.0", false},
                                           Containment{"10.1.2.0/23", "10.1.2.0", true},
                                           Containment{"10.1.2.0/23", "10.1.3.255", true},
                                           Containment{"10.1.2.0/23", "10.1.1.255", false},
                                           Containment{"10.1.2.0/23", "10.1.4.0", false},
                                           Containment{"10.1.2.128/25", "10.1.2.127", false},
                                           Containment{"10.1.2.128/25", "10.1.2.128", true},
                                           Containment{"192.168.1.7/32", "192.168.1.7", true},
                                           Containment{"192.168.1.7/32", "192.168.1.6", false},
                                           Containment{"192.168.1.7/32", "192.168.1.8", false},
                                           Containment{"0.0.0.0/0", "0.0.0.0", true},
                                           Containment{"0.0.0.0/0", "255.255.255.255", true},
                                           // An IPv4 CIDR never holds an IPv6 address.
                                           Containment{"0.0.0.0/0", "::", false},
                                           Containment{"0.0.0.0/0", "::1", false},
                                           Containment{"0.0.0.0/0", "::10.0.0.1", false},
                                           Containment{"10.0.0.0/8", "fd00::a00:1", false},
                                           // v4 written in v6 form is the same address.
                                           Containment{"10.0.0.0/8", "::ffff:10.0.0.1", true},
                                           Containment{"::ffff:10.0.0.0/104", "10.0.0.1", true},
                                           Containment{"::ffff:10.0.0.0/104", "11.0.0.1", false},
                                           // ... and its prefix counts v6 bits: all of ::/8.
                                           Containment{"::ffff:10.0.0.0/8", "11.0.0.1", true},
                                           Containment{"::ffff:10.0.0.0/8", "fd00::1", false}));

INSTANTIATE_TEST_SUITE_P(
    V6, CidrContains,
    ::testing::Values(
        Containment{"fd00::/8", "fd00::1", true},
        Containment{"fd00::/8", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
        Containment{"fd00::/8", "fcff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
        Containment{"fd00::/8", "fe00::", false}, Containment{"fe80::/10", "febf:ffff::1", true},
        Containment{"fe80::/10", "fec0::", false}, Containment{"fe80::/10", "fe7f:ffff::1", false},
        Containment{"2001:db8::/33", "2001:db8:7fff:ffff::1", true},
        Containment{"2001:db8::/33", "2001:db8:8000::", false},
        Containment{"2001:db8::/127", "2001:db8::", true},
        Containment{"2001:db8::/127", "2001:db8::1", true},
        Containment{"2001:db8::/127", "2001:db8::2", false},
        Containment{"2001:db8::1/128", "2001:db8::1", true},
        Containment{"2001:db8::1/128", "2001:db8::", false},
        Containment{"2001:db8::1/128", "2001:db8::2", false}, Containment{"::/0", "fd00::1", true},
        Containment{"::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
        // IPv4 is held v4-mapped, so all of v6 holds it too.
        Containment{"::/0", "10.0.0.1", true}, Containment{"::ffff:0:0/96", "10.0.0.1", true},
        Containment{"::ffff:0:0/96", "::1", false}, Containment{"fd00::/8", "10.0.0.1", false}));

// --- SocketAddress ------------------------------------------------------------------

struct GoodSocket {
  const char* text;
  const char* ip;
  std::uint16_t port;
  const char* str;
};

void PrintTo(const GoodSocket& c, std::ostream* os) { *os << c.text; }

class SocketAddressParses : public ::testing::TestWithParam<GoodSocket> {};

TEST_P(SocketAddressParses, ToAddressAndPort) {
  const GoodSocket& c = GetParam();
  auto parsed = SocketAddress::parse(c.text);
  ASSERT_TRUE(parsed.has_value()) << parsed.error().message;
  EXPECT_EQ(parsed->ip(), ip(c.ip));
  EXPECT_EQ(parsed->port(), c.port);
  EXPECT_EQ(parsed->str(), c.str);
  EXPECT_EQ(SocketAddress::parse(parsed->str()).value(), *parsed);
}

INSTANTIATE_TEST_SUITE_P(
    Table, SocketAddressParses,
    ::testing::Values(GoodSocket{"10.0.0.1:7400", "10.0.0.1", 7400, "10.0.0.1:7400"},
                      GoodSocket{"0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"},
                      GoodSocket{"127.0.0.1:65535", "127.0.0.1", 65535, "127.0.0.1:65535"},
                      GoodSocket{"[fd00::1]:7400", "fd00::1", 7400, "[fd00::1]:7400"},
                      GoodSocket{"[::]:7400", "::", 7400, "[::]:7400"},
                      GoodSocket{"[FD00:0::1]:443", "fd00::1", 443, "[fd00::1]:443"},
                      GoodSocket{"[::ffff:10.0.0.1]:7400", "10.0.0.1", 7400, "10.0.0.1:7400"}));

class SocketAddressRefuses : public ::testing::TestWithParam<std::string> {};

TEST_P(SocketAddressRefuses, NamingTheText) {
  auto parsed = SocketAddress::parse(GetParam());
  ASSERT_FALSE(parsed.has_value()) << GetParam() << " -> " << parsed->str();
  EXPECT_EQ(parsed.error().code, Errc::kInvalidArgument);
  EXPECT_NE(parsed.error().message.find("'" + GetParam() + "'"), std::string::npos)
      << parsed.error().message;
}

INSTANTIATE_TEST_SUITE_P(Table, SocketAddressRefuses,
                         ::testing::Values("", "10.0.0.1", "10.0.0.1:", ":7400", "10.0.0.1:0",
                                           "10.0.0.1:65536", "10.0.0.1:99999", "10.0.0.1:-1",
                                           "10.0.0.1:+80", "10.0.0.1: 80", "10.0.0.1:80 ",
                                           "10.0.0.1:http", "host.example:7400", "fd00::1:7400",
                                           "::1:7400", "fd00::1", "[fd00::1]",
                                           "[fd00::1]:", "[fd00::1]7400", "[fd00::1]:0",
                                           "[fd00::1]:65536", "[fd00::1:7400", "[]:7400",
                                           "[fd00::1]:7400:1", "10.0.0.1:7400:1"));

TEST(SocketAddress, BracketsAreRequiredForIpv6) {
  auto parsed = SocketAddress::parse("fd00::1:7400");
  ASSERT_FALSE(parsed.has_value());
  EXPECT_NE(parsed.error().message.find("brackets"), std::string::npos) << parsed.error().message;
}

TEST(SocketAddress, ToSockaddrRoundTripsV4) {
  const auto address = SocketAddress::parse("10.1.2.3:7400").value();
  sockaddr_storage storage;
  std::memset(&storage, 0xab, sizeof(storage));  // every byte it does not set is cleared
  ASSERT_EQ(address.to_sockaddr(storage), sizeof(sockaddr_in));
  const auto* sin = reinterpret_cast<const sockaddr_in*>(&storage);
  EXPECT_EQ(sin->sin_family, AF_INET);
  EXPECT_EQ(ntohs(sin->sin_port), 7400);
  char text[INET_ADDRSTRLEN] = {};
  ASSERT_NE(inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text)), nullptr);
  EXPECT_STREQ(text, "10.1.2.3");
  for (std::size_t i = sizeof(sockaddr_in); i < sizeof(storage); ++i)
    ASSERT_EQ(reinterpret_cast<const std::uint8_t*>(&storage)[i], 0) << "byte " << i;

  std::uint32_t words[4] = {sin->sin_addr.s_addr, 0, 0, 0};
  EXPECT_EQ(SocketAddress(IpAddress::from_words(words, AF_INET), ntohs(sin->sin_port)), address);
}

TEST(SocketAddress, ToSockaddrRoundTripsV6) {
  const auto address = SocketAddress::parse("[fd00::1:2]:443").value();
  sockaddr_storage storage;
  std::memset(&storage, 0xab, sizeof(storage));
  ASSERT_EQ(address.to_sockaddr(storage), sizeof(sockaddr_in6));
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&storage);
  EXPECT_EQ(sin6->sin6_family, AF_INET6);
  EXPECT_EQ(ntohs(sin6->sin6_port), 443);
  EXPECT_EQ(sin6->sin6_flowinfo, 0u);
  EXPECT_EQ(sin6->sin6_scope_id, 0u);
  char text[INET6_ADDRSTRLEN] = {};
  ASSERT_NE(inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text)), nullptr);
  EXPECT_STREQ(text, "fd00::1:2");

  std::uint32_t words[4];
  std::memcpy(words, &sin6->sin6_addr, 16);
  EXPECT_EQ(SocketAddress(IpAddress::from_words(words, AF_INET6), ntohs(sin6->sin6_port)), address);
}

// The kernel agrees: bind to what to_sockaddr made and read it back.
TEST(SocketAddress, ToSockaddrBindsOnLoopback) {
  for (const char* text : {"127.0.0.1", "::1"}) {
    const SocketAddress address(ip(text), 0);
    sockaddr_storage storage;
    socklen_t length = address.to_sockaddr(storage);
    UniqueFd fd(::socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(fd) << text;
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), length) != 0) {
      // Some sandboxes have no IPv6 loopback.
      if (address.ip().is_v4()) FAIL() << "bind " << text << ": " << std::strerror(errno);
      continue;
    }
    sockaddr_storage bound{};
    socklen_t bound_length = sizeof(bound);
    ASSERT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &bound_length), 0);
    ASSERT_EQ(bound_length, length);
    std::uint16_t port =
        ntohs(address.ip().is_v4() ? reinterpret_cast<const sockaddr_in*>(&bound)->sin_port
                                   : reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port);
    EXPECT_NE(port, 0);
    const SocketAddress with_port(address.ip(), port);
    sockaddr_storage expected;
    ASSERT_EQ(with_port.to_sockaddr(expected), length);
    EXPECT_EQ(std::memcmp(&expected, &bound, length), 0) << text;
  }
}

TEST(SocketAddress, OrdersByAddressThenPort) {
  const auto a = SocketAddress::parse("10.0.0.1:80").value();
  const auto b = SocketAddress::parse("10.0.0.1:81").value();
  const auto c = SocketAddress::parse("10.0.0.2:1").value();
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(a, SocketAddress(ip("::ffff:10.0.0.1"), 80));
}

}  // namespace
}  // namespace trustfence::net
