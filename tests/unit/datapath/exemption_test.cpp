#include "trustfence/datapath/exemption.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>

namespace {

using trustfence::Errc;
using trustfence::datapath::Exemption;

using Bytes = std::array<std::uint8_t, 16>;

Bytes ipv6_bytes(const char* text) {
  Bytes bytes{};
  EXPECT_EQ(inet_pton(AF_INET6, text, bytes.data()), 1) << text;
  return bytes;
}

Bytes key_addr(const tf_exempt_key& key) {
  Bytes bytes;
  std::memcpy(bytes.data(), key.addr, bytes.size());
  return bytes;
}

struct Accepted {
  std::string rule;
  std::string canonical;
  unsigned prefixlen;    // 16 port bits + (96 + len for IPv4 | len for IPv6)
  std::uint16_t port;    // host order; the key holds it in network order
  const char* key_addr;  // IPv6 text of the 16 address bytes of the key
};

void PrintTo(const Accepted& c, std::ostream* os) { *os << c.rule; }

class ExemptionParses : public ::testing::TestWithParam<Accepted> {};

TEST_P(ExemptionParses, IntoTheCanonicalTextAndTrieKey) {
  const Accepted& want = GetParam();
  auto ex = Exemption::parse(want.rule);
  ASSERT_TRUE(ex.has_value()) << ex.error().message;

  EXPECT_EQ(ex->text, want.canonical);
  EXPECT_EQ(ex->key.prefixlen, want.prefixlen);
  EXPECT_EQ(ex->key.port, htons(want.port));
  EXPECT_EQ(key_addr(ex->key), ipv6_bytes(want.key_addr));
  EXPECT_EQ(ex->key._pad[0], 0);
  EXPECT_EQ(ex->key._pad[1], 0);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ExemptionParses,
    ::testing::Values(
        Accepted{"10.96.0.10/32:53", "10.96.0.10/32:53", 16 + 128, 53, "::ffff:10.96.0.10"},
        Accepted{"10.0.0.0/8", "10.0.0.0/8", 16 + 104, 0, "::ffff:10.0.0.0"},
        Accepted{"127.0.0.1", "127.0.0.1/32", 16 + 128, 0, "::ffff:127.0.0.1"},
        Accepted{"192.168.1.7:8443", "192.168.1.7/32:8443", 16 + 128, 8443, "::ffff:192.168.1.7"},
        Accepted{"0.0.0.0/0:53", "0.0.0.0/0:53", 16 + 96, 53, "::ffff:0.0.0.0"},
        Accepted{"10.0.0.1:65535", "10.0.0.1/32:65535", 16 + 128, 65535, "::ffff:10.0.0.1"},
        // Host bits are cleared, in whole and in partial bytes.
        Accepted{"10.1.2.3/8", "10.0.0.0/8", 16 + 104, 0, "::ffff:10.0.0.0"},
        Accepted{"10.17.2.3/12:443", "10.16.0.0/12:443", 16 + 108, 443, "::ffff:10.16.0.0"},
        Accepted{"172.16.5.255/23", "172.16.4.0/23", 16 + 119, 0, "::ffff:172.16.4.0"},
        Accepted{"fd00::/8", "[fd00::]/8", 16 + 8, 0, "fd00::"},
        Accepted{"fd12:3456::1/16", "[fd12::]/16", 16 + 16, 0, "fd12::"},
        Accepted{"2001:db8::ff/121", "[2001:db8::80]/121", 16 + 121, 0, "2001:db8::80"},
        Accepted{"::/0", "[::]/0", 16, 0, "::"}, Accepted{"::1", "[::1]/128", 16 + 128, 0, "::1"},
        Accepted{"fd00::1", "[fd00::1]/128", 16 + 128, 0, "fd00::1"},
        Accepted{"[fd00::1]:443", "[fd00::1]/128:443", 16 + 128, 443, "fd00::1"},
        Accepted{"[fd00::1]", "[fd00::1]/128", 16 + 128, 0, "fd00::1"},
        Accepted{"[2001:db8::]/32:8080", "[2001:db8::]/32:8080", 16 + 32, 8080, "2001:db8::"},
        Accepted{"[2001:db8::1]/32", "[2001:db8::]/32", 16 + 32, 0, "2001:db8::"}));

TEST(ExemptionKey, HoldsIpv4AsV4MappedIpv6) {
  auto ex = Exemption::parse("10.96.0.10/32");
  ASSERT_TRUE(ex.has_value()) << ex.error().message;
  const std::uint8_t expected[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 96, 0, 10};
  EXPECT_EQ(std::memcmp(ex->key.addr, expected, 16), 0);
}

TEST(ExemptionKey, HoldsThePortInNetworkByteOrder) {
  auto ex = Exemption::parse("10.96.0.10/32:53");
  ASSERT_TRUE(ex.has_value()) << ex.error().message;
  std::uint8_t port_bytes[2];
  std::memcpy(port_bytes, &ex->key.port, 2);
  EXPECT_EQ(port_bytes[0], 0x00);
  EXPECT_EQ(port_bytes[1], 0x35);
}

TEST(Exemption, RulesWithTheSameCanonicalFormAreEqual) {
  auto a = Exemption::parse("10.1.2.3/8");
  auto b = Exemption::parse("10.0.0.0/8");
  auto c = Exemption::parse("10.0.0.0/9");
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(*a, *b);
  EXPECT_FALSE(*a == *c);
}

struct Rejected {
  std::string rule;
  std::string why;  // a fragment of the message, beside the rule text
};

void PrintTo(const Rejected& c, std::ostream* os) { *os << "'" << c.rule << "'"; }

class ExemptionRejects : public ::testing::TestWithParam<Rejected> {};

TEST_P(ExemptionRejects, WithAMessageNamingTheRule) {
  const Rejected& want = GetParam();
  auto ex = Exemption::parse(want.rule);
  ASSERT_FALSE(ex.has_value()) << want.rule << " was accepted as " << ex->text;
  EXPECT_EQ(ex.error().code, Errc::kInvalidArgument);
  EXPECT_NE(ex.error().message.find("'" + want.rule + "'"), std::string::npos)
      << ex.error().message;
  EXPECT_NE(ex.error().message.find(want.why), std::string::npos) << ex.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Table, ExemptionRejects,
    ::testing::Values(
        Rejected{"not-an-address", "not an IPv4 or IPv6 address"},
        Rejected{"10.0.0.256", "not an IPv4 or IPv6 address"},
        Rejected{"10.0.0/8", "not an IPv4 or IPv6 address"},
        Rejected{"", "not an IPv4 or IPv6 address"},
        Rejected{"fd00::zz/64", "not an IPv4 or IPv6 address"},
        Rejected{"10.0.0.0/33", "prefix length"}, Rejected{"fd00::/129", "prefix length"},
        Rejected{"[fd00::]/129:53", "prefix length"}, Rejected{"10.0.0.0/", "prefix length"},
        Rejected{"10.0.0.0/x", "prefix length"}, Rejected{"10.0.0.0/-1", "prefix length"},
        Rejected{"10.0.0.1:65536", "port"}, Rejected{"10.0.0.0/8:99999", "port"},
        Rejected{"[fd00::1]:70000", "port"}, Rejected{"10.0.0.1:http", "port"},
        Rejected{"10.0.0.1:-1", "port"}, Rejected{"10.0.0.1:", "empty port"},
        Rejected{"10.0.0.0/8:", "empty port"}, Rejected{"[fd00::1]:", "port"},
        Rejected{"[fd00::]/8:", "port"}, Rejected{"[fd00::1:443", "missing ']'"},
        Rejected{"[fd00::1]443", "unexpected"}));

}  // namespace
