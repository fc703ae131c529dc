#include "trustfence/identity/spiffe_id.hpp"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace {

using trustfence::Errc;
using trustfence::identity::SpiffeId;
using trustfence::identity::TrustDomain;

// "spiffe://" + a trust domain of n bytes.
std::string domain_of(std::size_t n) { return std::string(n, 'a'); }

// A SPIFFE ID of exactly n bytes (n >= 20): spiffe://example.org/xxx...
std::string id_of(std::size_t n) {
  std::string id = "spiffe://example.org/";
  return id + std::string(n - id.size(), 'x');
}

// An ID of exactly n bytes made of short segments, the shape real IDs have.
std::string segmented_id_of(std::size_t n) {
  std::string id = "spiffe://example.org";
  while (id.size() + 8 <= n) id += "/ns-1234";
  if (id.size() < n) id += "/" + std::string(n - id.size() - 1, 'y');
  return id;
}

struct ValidRow {
  std::string name;
  std::string input;
  std::string trust_domain;
  std::string path;
  friend void PrintTo(const ValidRow& row, std::ostream* os) { *os << row.name; }
};

class ValidSpiffeId : public testing::TestWithParam<ValidRow> {};

TEST_P(ValidSpiffeId, ParsesToItsPartsAndBack) {
  const ValidRow& row = GetParam();
  auto id = SpiffeId::parse(row.input);
  ASSERT_TRUE(id.has_value()) << id.error().message;
  EXPECT_EQ(id->trust_domain().name(), row.trust_domain);
  EXPECT_EQ(id->path(), row.path);
  EXPECT_EQ(id->has_workload_path(), !row.path.empty());
  EXPECT_EQ(id->str(), row.input) << "the canonical form is the input itself";
  EXPECT_TRUE(id->member_of(*TrustDomain::parse(row.trust_domain)));
}

INSTANTIATE_TEST_SUITE_P(
    Standard, ValidSpiffeId,
    testing::ValuesIn(std::vector<ValidRow>{
        {"workload", "spiffe://example.org/ns/default/sa/web", "example.org", "/ns/default/sa/web"},
        {"trust_domain_only", "spiffe://example.org", "example.org", ""},
        {"single_segment", "spiffe://example.org/a", "example.org", "/a"},
        {"domain_charset", "spiffe://a-b_c.d0-9", "a-b_c.d0-9", ""},
        {"path_charset", "spiffe://td/AZaz09._-", "td", "/AZaz09._-"},
        {"mixed_case_path", "spiffe://td/NS/Web", "td", "/NS/Web"},
        {"dots_inside_segment", "spiffe://td/a.b/...", "td", "/a.b/..."},
        {"segment_dotdot_prefix", "spiffe://td/..a/.b", "td", "/..a/.b"},
        {"ipv4_looking_domain", "spiffe://192.168.0.1/x", "192.168.0.1", "/x"},
        {"trailing_dot_domain", "spiffe://example.org./x", "example.org.", "/x"},
        {"cluster_local", "spiffe://cluster.local/ns/a/sa/b", "cluster.local", "/ns/a/sa/b"},
        {"domain_255_bytes", "spiffe://" + domain_of(255), domain_of(255), ""},
        {"id_2048_bytes", id_of(2048), "example.org", id_of(2048).substr(20)},
        {"segmented_id_2048_bytes", segmented_id_of(2048), "example.org",
         segmented_id_of(2048).substr(20)},
    }),
    [](const auto& info) { return info.param.name; });

struct InvalidRow {
  std::string name;
  std::string input;
  std::string rule;  // a phrase the message must contain
  friend void PrintTo(const InvalidRow& row, std::ostream* os) { *os << row.name; }
};

class InvalidSpiffeId : public testing::TestWithParam<InvalidRow> {};

TEST_P(InvalidSpiffeId, IsRejectedNamingTheRule) {
  const InvalidRow& row = GetParam();
  auto id = SpiffeId::parse(row.input);
  ASSERT_FALSE(id.has_value()) << "accepted: " << id->str();
  EXPECT_EQ(id.error().code, Errc::kInvalidArgument);
  EXPECT_NE(id.error().message.find(row.rule), std::string::npos)
      << "message: " << id.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Standard, InvalidSpiffeId,
    testing::ValuesIn(std::vector<InvalidRow>{
        {"empty", "", "must not be empty"},
        {"no_scheme", "example.org/ns/a", "must start with the scheme 'spiffe://'"},
        {"scheme_without_slashes", "spiffe:example.org", "must start with the scheme"},
        {"scheme_one_slash", "spiffe:/example.org", "must start with the scheme"},
        {"uppercase_scheme", "SPIFFE://example.org/a", "exactly 'spiffe', lowercase"},
        {"mixed_case_scheme", "Spiffe://example.org/a", "exactly 'spiffe', lowercase"},
        {"other_scheme", "https://example.org/a", "must be 'spiffe', not 'https'"},
        {"leading_space", " spiffe://example.org/a", "scheme"},
        {"no_trust_domain", "spiffe:///ns/a", "must have a trust domain"},
        {"scheme_only", "spiffe://", "must have a trust domain"},
        {"userinfo", "spiffe://user@example.org/a", "userinfo"},
        {"userinfo_password", "spiffe://u:p@example.org/a", "userinfo"},
        {"port", "spiffe://example.org:443/a", "port"},
        {"empty_port", "spiffe://example.org:/a", "port"},
        {"ipv6_literal", "spiffe://[::1]/a", "IPv6"},
        {"ipv6_literal_port", "spiffe://[2001:db8::1]:8443", "IPv6"},
        {"query", "spiffe://example.org/a?x=1", "query"},
        {"query_after_domain", "spiffe://example.org?x", "query"},
        {"fragment", "spiffe://example.org/a#frag", "fragment"},
        {"percent_in_path", "spiffe://example.org/a%20b", "percent-encoding"},
        {"percent_in_domain", "spiffe://ex%61mple.org/a", "percent-encoding"},
        {"uppercase_domain", "spiffe://Example.org/a", "lowercase"},
        {"uppercase_domain_end", "spiffe://example.ORG", "lowercase"},
        {"domain_bad_char", "spiffe://exa!mple.org/a", "may only contain a-z, 0-9"},
        {"domain_space", "spiffe://exa mple.org/a", "a space"},
        {"domain_nul", std::string("spiffe://exa\0mple.org/a", 23), "byte 0x00"},
        {"domain_utf8", "spiffe://ex\xc3\xa4mple.org/a", "byte 0xc3"},
        {"domain_256_bytes", "spiffe://" + domain_of(256), "at most 255 bytes"},
        {"id_2049_bytes", id_of(2049), "at most 2048 bytes"},
        {"segmented_id_2049_bytes", segmented_id_of(2049), "at most 2048 bytes"},
        {"trailing_slash", "spiffe://example.org/", "must not end with '/'"},
        {"trailing_slash_after_segment", "spiffe://example.org/ns/", "must not end with '/'"},
        {"empty_segment", "spiffe://example.org/ns//a", "empty segments"},
        {"leading_empty_segment", "spiffe://example.org//a", "empty segments"},
        {"dot_segment", "spiffe://example.org/ns/./a", "'.' segments"},
        {"dotdot_segment", "spiffe://example.org/ns/../a", "'..' segments"},
        {"final_dot_segment", "spiffe://example.org/ns/.", "'.' segments"},
        {"final_dotdot_segment", "spiffe://example.org/..", "'..' segments"},
        {"path_bad_char", "spiffe://example.org/ns/a*b", "found '*'"},
        {"path_space", "spiffe://example.org/ns/a b", "a space"},
        {"path_tilde", "spiffe://example.org/~user", "found '~'"},
        {"path_colon", "spiffe://example.org/a:b", "found ':'"},
        {"path_at", "spiffe://example.org/a@b", "found '@'"},
        {"path_backslash", "spiffe://example.org/a\\b", "found '\\'"},
        {"path_newline", "spiffe://example.org/a\nb", "byte 0x0a"},
        {"path_utf8", "spiffe://example.org/caf\xc3\xa9", "byte 0xc3"},
    }),
    [](const auto& info) { return info.param.name; });

TEST(SpiffeIdMessages, PointAtTheOffendingByte) {
  auto id = SpiffeId::parse("spiffe://example.org/ns/a*b");
  ASSERT_FALSE(id);
  EXPECT_NE(id.error().message.find("at byte 25"), std::string::npos) << id.error().message;
}

struct DomainRow {
  std::string name;
  std::string input;
  std::string rule;  // empty: valid
  friend void PrintTo(const DomainRow& row, std::ostream* os) { *os << row.name; }
};

class TrustDomainParse : public testing::TestWithParam<DomainRow> {};

TEST_P(TrustDomainParse, FollowsTheStandard) {
  const DomainRow& row = GetParam();
  auto td = TrustDomain::parse(row.input);
  if (row.rule.empty()) {
    ASSERT_TRUE(td.has_value()) << td.error().message;
    EXPECT_EQ(td->name(), row.input);
    EXPECT_EQ(td->id_string(), "spiffe://" + row.input);
  } else {
    ASSERT_FALSE(td.has_value()) << "accepted: " << td->name();
    EXPECT_NE(td.error().message.find(row.rule), std::string::npos)
        << "message: " << td.error().message;
  }
}

INSTANTIATE_TEST_SUITE_P(Standard, TrustDomainParse,
                         testing::ValuesIn(std::vector<DomainRow>{
                             {"plain", "example.org", ""},
                             {"single_char", "a", ""},
                             {"charset", "a-b_c.9", ""},
                             {"ipv4_looking", "10.0.0.1", ""},
                             {"trailing_dot", "example.org.", ""},
                             {"length_255", domain_of(255), ""},
                             {"length_256", domain_of(256), "at most 255 bytes"},
                             {"empty", "", "must not be empty"},
                             {"uppercase", "Example.org", "lowercase"},
                             {"uri", "spiffe://example.org", "bare name"},
                             {"other_uri", "https://example.org", "bare name"},
                             {"with_path", "example.org/ns", "may only contain"},
                             {"port", "example.org:443", "port"},
                             {"ipv6", "[::1]", "IPv6"},
                             {"ipv6_bare", "::1", "IPv6"},
                             {"userinfo", "u@example.org", "userinfo"},
                             {"percent", "ex%41mple.org", "percent-encoding"},
                             {"space", "example .org", "a space"},
                         }),
                         [](const auto& info) { return info.param.name; });

TEST(TrustDomainIdentity, TrailingDotIsAnotherDomain) {
  auto plain = *TrustDomain::parse("example.org");
  auto dotted = *TrustDomain::parse("example.org.");
  EXPECT_NE(plain, dotted);
  EXPECT_FALSE(SpiffeId::parse("spiffe://example.org./a")->member_of(plain));
}

struct MembershipRow {
  std::string name;
  std::string id;
  std::string domain;
  bool member;
  friend void PrintTo(const MembershipRow& row, std::ostream* os) { *os << row.name; }
};

class Membership : public testing::TestWithParam<MembershipRow> {};

TEST_P(Membership, ComparesParsedDomainsNotPrefixes) {
  const MembershipRow& row = GetParam();
  auto id = SpiffeId::parse(row.id);
  auto td = TrustDomain::parse(row.domain);
  ASSERT_TRUE(id && td);
  EXPECT_EQ(id->member_of(*td), row.member);
}

INSTANTIATE_TEST_SUITE_P(
    LookAlikes, Membership,
    testing::ValuesIn(std::vector<MembershipRow>{
        {"same", "spiffe://example.org/a", "example.org", true},
        {"domain_own_id", "spiffe://example.org", "example.org", true},
        {"suffix_domain", "spiffe://example.org.evil.com/a", "example.org", false},
        {"prefix_domain", "spiffe://evil-example.org/a", "example.org", false},
        {"subdomain", "spiffe://a.example.org/a", "example.org", false},
        {"parent_domain", "spiffe://example.org/a", "a.example.org", false},
        {"trailing_dot", "spiffe://example.org./a", "example.org", false},
        {"path_looks_like_domain", "spiffe://evil.com/example.org", "example.org", false},
    }),
    [](const auto& info) { return info.param.name; });

TEST(SpiffeIdComparison, IsByValue) {
  auto a = *SpiffeId::parse("spiffe://example.org/ns/a");
  auto a2 = *SpiffeId::parse("spiffe://example.org/ns/a");
  auto upper = *SpiffeId::parse("spiffe://example.org/ns/A");
  auto b = *SpiffeId::parse("spiffe://example.org/ns/b");
  auto other = *SpiffeId::parse("spiffe://example.com/ns/a");
  auto root = *SpiffeId::parse("spiffe://example.org");
  EXPECT_EQ(a, a2);
  EXPECT_NE(a, upper) << "paths are case-sensitive";
  EXPECT_NE(a, b);
  EXPECT_NE(a, other);
  EXPECT_NE(a, root);
  EXPECT_LT(a, b);
  EXPECT_EQ(a.trust_domain(), root.trust_domain());
  EXPECT_FALSE(root.has_workload_path());
}

}  // namespace
