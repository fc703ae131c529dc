#include "trustfence/policy/policy.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "trustfence/common/verdict.hpp"

namespace {

using trustfence::to_string;
using trustfence::identity::SpiffeId;
using trustfence::identity::TrustDomain;
using trustfence::policy::Decision;
using trustfence::policy::IdPattern;
using trustfence::policy::Policy;
using trustfence::policy::PolicyRules;

TrustDomain td(std::string_view name) { return *TrustDomain::parse(name); }

IdPattern pattern(std::string_view text) {
  auto p = IdPattern::parse(text);
  EXPECT_TRUE(p.has_value()) << text << ": " << p.error().message;
  return *p;
}

std::vector<IdPattern> patterns(const std::vector<std::string>& texts) {
  std::vector<IdPattern> out;
  for (const auto& t : texts) out.push_back(pattern(t));
  return out;
}

// ---- IdPattern::parse

struct PatternParseRow {
  std::string name;
  std::string text;
  std::string rule;  // empty: valid
  friend void PrintTo(const PatternParseRow& row, std::ostream* os) { *os << row.name; }
};

class IdPatternParse : public testing::TestWithParam<PatternParseRow> {};

TEST_P(IdPatternParse, AcceptsExactAndTrailingWildcardOnly) {
  const auto& row = GetParam();
  auto p = IdPattern::parse(row.text);
  if (row.rule.empty()) {
    ASSERT_TRUE(p.has_value()) << p.error().message;
    EXPECT_EQ(p->text(), row.text);
  } else {
    ASSERT_FALSE(p.has_value()) << "accepted " << row.text;
    EXPECT_NE(p.error().message.find(row.rule), std::string::npos)
        << "message: " << p.error().message;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, IdPatternParse,
    testing::ValuesIn(std::vector<PatternParseRow>{
        {"exact", "spiffe://td/ns/a/sa/b", ""},
        {"prefix", "spiffe://td/ns/a/*", ""},
        {"whole_domain_prefix", "spiffe://td/*", ""},
        {"domain_only", "spiffe://td", "must name a workload path"},
        {"star_inside", "spiffe://td/ns/*/sa/b", "'*' as its whole last segment"},
        {"star_in_segment", "spiffe://td/ns/a*", "'*' as its whole last segment"},
        {"double_star", "spiffe://td/ns/**", "'*' as its whole last segment"},
        {"star_domain", "spiffe://*.td/ns/a", "'*' as its whole last segment"},
        {"trailing_slash", "spiffe://td/ns/", "must not end with '/'"},
        {"prefix_of_trailing_slash", "spiffe://td/ns//*", "must not end with '/'"},
        {"bad_id", "spiffe://TD/ns/a", "lowercase"},
        {"not_spiffe", "https://td/ns/a", "scheme"},
        {"star_alone", "*", "'*' as its whole last segment"},
        {"empty", "", "must not be empty"},
    }),
    [](const auto& info) { return info.param.name; });

// ---- IdPattern::matches

struct MatchRow {
  std::string name;
  std::string pattern;
  std::string id;
  bool matches;
  friend void PrintTo(const MatchRow& row, std::ostream* os) { *os << row.name; }
};

class IdPatternMatch : public testing::TestWithParam<MatchRow> {};

TEST_P(IdPatternMatch, MatchesWholeSegments) {
  const auto& row = GetParam();
  auto id = SpiffeId::parse(row.id);
  ASSERT_TRUE(id.has_value()) << id.error().message;
  EXPECT_EQ(pattern(row.pattern).matches(*id), row.matches);
}

INSTANTIATE_TEST_SUITE_P(
    Table, IdPatternMatch,
    testing::ValuesIn(std::vector<MatchRow>{
        {"exact_same", "spiffe://td/ns/a", "spiffe://td/ns/a", true},
        {"exact_longer", "spiffe://td/ns/a", "spiffe://td/ns/a/b", false},
        {"exact_case", "spiffe://td/ns/a", "spiffe://td/ns/A", false},
        {"exact_other_domain", "spiffe://td/ns/a", "spiffe://td2/ns/a", false},
        {"prefix_child", "spiffe://td/ns/a/*", "spiffe://td/ns/a/x", true},
        {"prefix_grandchild", "spiffe://td/ns/a/*", "spiffe://td/ns/a/x/y", true},
        {"prefix_itself", "spiffe://td/ns/a/*", "spiffe://td/ns/a", false},
        {"prefix_segment_boundary", "spiffe://td/ns/a/*", "spiffe://td/ns/ab/x", false},
        {"prefix_segment_boundary_exact", "spiffe://td/ns/a/*", "spiffe://td/ns/ab", false},
        {"prefix_parent", "spiffe://td/ns/a/*", "spiffe://td/ns", false},
        {"prefix_case", "spiffe://td/ns/a/*", "spiffe://td/NS/a/x", false},
        {"prefix_lookalike_domain", "spiffe://example.org/ns/*",
         "spiffe://example.org.evil.com/ns/x", false},
        {"prefix_domain_all", "spiffe://td/*", "spiffe://td/x", true},
        {"prefix_domain_all_root", "spiffe://td/*", "spiffe://td", false},
    }),
    [](const auto& info) { return info.param.name; });

// ---- Policy::decide

// The two-cluster example of DESIGN.md, seen from team-a.
PolicyRules design_rules() {
  return PolicyRules{
      .trust_domain = td("team-a.gke.local"),
      .aliases = {td("team-b.eks.local")},
      .allow = patterns({"spiffe://team-c.local/ns/auth/sa/auth",
                         "spiffe://team-c.local/ns/shared/*", "spiffe://team-d.local/*"}),
      .deny = patterns({"spiffe://team-b.eks.local/ns/legacy/*",
                        "spiffe://team-a.gke.local/ns/quarantine/sa/bad",
                        "spiffe://team-d.local/ns/blocked/*"}),
  };
}

struct DecideRow {
  std::string name;
  std::optional<std::string> peer;  // nullopt: no identity
  tf_verdict verdict;
  tf_reason reason;
  std::string matched_rule;
  friend void PrintTo(const DecideRow& row, std::ostream* os) { *os << row.name; }
};

class Decide : public testing::TestWithParam<DecideRow> {};

TEST_P(Decide, ReturnsVerdictReasonAndRule) {
  const auto& row = GetParam();
  std::optional<SpiffeId> peer;
  if (row.peer) {
    auto id = SpiffeId::parse(*row.peer);
    ASSERT_TRUE(id.has_value()) << id.error().message;
    peer = *id;
  }
  Decision d = Policy(design_rules()).decide(peer);
  EXPECT_EQ(to_string(d.verdict), to_string(row.verdict));
  EXPECT_EQ(to_string(d.reason), to_string(row.reason));
  EXPECT_EQ(d.matched_rule, row.matched_rule);
}

constexpr auto kAllow = TF_VERDICT_ALLOW;
constexpr auto kDeny = TF_VERDICT_DENY;

INSTANTIATE_TEST_SUITE_P(
    DesignExample, Decide,
    testing::ValuesIn(std::vector<DecideRow>{
        // Local domain and alias, accepted whole.
        {"local", "spiffe://team-a.gke.local/ns/web/sa/web", kAllow, TF_REASON_LOCAL_DOMAIN,
         "trust-domain = team-a.gke.local"},
        {"alias", "spiffe://team-b.eks.local/ns/api/sa/api", kAllow, TF_REASON_ALIAS_DOMAIN,
         "trust-domain-alias = team-b.eks.local"},
        // deny-id wins, and aliases are equivalent to the local domain for it.
        {"deny_alias_rule_on_alias", "spiffe://team-b.eks.local/ns/legacy/sa/x", kDeny,
         TF_REASON_ID_DENIED, "deny-id = spiffe://team-b.eks.local/ns/legacy/*"},
        {"deny_alias_rule_on_local", "spiffe://team-a.gke.local/ns/legacy/sa/x", kDeny,
         TF_REASON_ID_DENIED, "deny-id = spiffe://team-b.eks.local/ns/legacy/*"},
        {"deny_local_rule_on_local", "spiffe://team-a.gke.local/ns/quarantine/sa/bad", kDeny,
         TF_REASON_ID_DENIED, "deny-id = spiffe://team-a.gke.local/ns/quarantine/sa/bad"},
        {"deny_local_rule_on_alias", "spiffe://team-b.eks.local/ns/quarantine/sa/bad", kDeny,
         TF_REASON_ID_DENIED, "deny-id = spiffe://team-a.gke.local/ns/quarantine/sa/bad"},
        {"deny_exact_is_exact", "spiffe://team-a.gke.local/ns/quarantine/sa/bad2", kAllow,
         TF_REASON_LOCAL_DOMAIN, "trust-domain = team-a.gke.local"},
        {"deny_prefix_is_not_the_prefix_itself", "spiffe://team-b.eks.local/ns/legacy", kAllow,
         TF_REASON_ALIAS_DOMAIN, "trust-domain-alias = team-b.eks.local"},
        {"deny_segment_boundary", "spiffe://team-b.eks.local/ns/legacyx/sa/x", kAllow,
         TF_REASON_ALIAS_DOMAIN, "trust-domain-alias = team-b.eks.local"},
        {"deny_beats_allow", "spiffe://team-d.local/ns/blocked/sa/x", kDeny, TF_REASON_ID_DENIED,
         "deny-id = spiffe://team-d.local/ns/blocked/*"},
        // allow-id: only the matching identities of a domain otherwise denied.
        {"allow_exact", "spiffe://team-c.local/ns/auth/sa/auth", kAllow, TF_REASON_ALLOWED_ID,
         "allow-id = spiffe://team-c.local/ns/auth/sa/auth"},
        {"allow_prefix", "spiffe://team-c.local/ns/shared/sa/cache", kAllow, TF_REASON_ALLOWED_ID,
         "allow-id = spiffe://team-c.local/ns/shared/*"},
        {"allow_whole_domain_prefix", "spiffe://team-d.local/ns/x/sa/y", kAllow,
         TF_REASON_ALLOWED_ID, "allow-id = spiffe://team-d.local/*"},
        {"allow_other_id_same_domain", "spiffe://team-c.local/ns/auth/sa/other", kDeny,
         TF_REASON_DOMAIN_NOT_ALLOWED, ""},
        {"allow_segment_boundary", "spiffe://team-c.local/ns/sharedx/sa/a", kDeny,
         TF_REASON_DOMAIN_NOT_ALLOWED, ""},
        {"allow_domain_itself_not_accepted", "spiffe://team-c.local", kDeny,
         TF_REASON_DOMAIN_NOT_ALLOWED, ""},
        {"allow_rule_not_equivalent_across_domains", "spiffe://team-e.local/ns/auth/sa/auth", kDeny,
         TF_REASON_DOMAIN_NOT_ALLOWED, ""},
        // Everything else.
        {"unknown_domain", "spiffe://team-e.local/ns/a/sa/b", kDeny, TF_REASON_DOMAIN_NOT_ALLOWED,
         ""},
        {"cluster_local_not_special", "spiffe://cluster.local/ns/default/sa/default", kDeny,
         TF_REASON_DOMAIN_NOT_ALLOWED, ""},
        {"lookalike_suffix", "spiffe://team-a.gke.local.evil.com/ns/web/sa/web", kDeny,
         TF_REASON_DOMAIN_NOT_ALLOWED, ""},
        {"lookalike_prefix", "spiffe://evil-team-a.gke.local/ns/web/sa/web", kDeny,
         TF_REASON_DOMAIN_NOT_ALLOWED, ""},
        {"lookalike_subdomain", "spiffe://x.team-a.gke.local/ns/web/sa/web", kDeny,
         TF_REASON_DOMAIN_NOT_ALLOWED, ""},
        {"lookalike_trailing_dot", "spiffe://team-a.gke.local./ns/web/sa/web", kDeny,
         TF_REASON_DOMAIN_NOT_ALLOWED, ""},
        {"lookalike_of_allowed", "spiffe://team-c.local.evil.com/ns/auth/sa/auth", kDeny,
         TF_REASON_DOMAIN_NOT_ALLOWED, ""},
        {"no_identity", std::nullopt, kDeny, TF_REASON_DOMAIN_NOT_ALLOWED, ""},
    }),
    [](const auto& info) { return info.param.name; });

TEST(PolicyEquivalence, AllowRuleOfAnAliasDoesNotOpenOtherDomains) {
  // An allow-id written for the local domain is moot there (accepted
  // anyway) and must not leak to a third domain with the same path.
  PolicyRules rules{.trust_domain = td("a.local"),
                    .aliases = {td("b.local")},
                    .allow = patterns({"spiffe://a.local/ns/x/*"}),
                    .deny = {}};
  Policy policy(std::move(rules));
  EXPECT_EQ(policy.decide(*SpiffeId::parse("spiffe://b.local/ns/x/y")).reason,
            TF_REASON_ALIAS_DOMAIN);
  EXPECT_EQ(policy.decide(*SpiffeId::parse("spiffe://c.local/ns/x/y")).reason,
            TF_REASON_DOMAIN_NOT_ALLOWED);
}

TEST(PolicyEquivalence, DenyRuleOfAThirdDomainStaysThere) {
  PolicyRules rules{.trust_domain = td("a.local"),
                    .aliases = {td("b.local")},
                    .allow = patterns({"spiffe://c.local/*"}),
                    .deny = patterns({"spiffe://c.local/ns/x/*"})};
  Policy policy(std::move(rules));
  EXPECT_EQ(policy.decide(*SpiffeId::parse("spiffe://a.local/ns/x/y")).reason,
            TF_REASON_LOCAL_DOMAIN);
  EXPECT_EQ(policy.decide(*SpiffeId::parse("spiffe://b.local/ns/x/y")).reason,
            TF_REASON_ALIAS_DOMAIN);
  EXPECT_EQ(policy.decide(*SpiffeId::parse("spiffe://c.local/ns/x/y")).reason, TF_REASON_ID_DENIED);
  EXPECT_EQ(policy.decide(*SpiffeId::parse("spiffe://c.local/ns/z/y")).reason,
            TF_REASON_ALLOWED_ID);
}

TEST(PolicyEquivalence, HoldsBetweenTwoAliases) {
  PolicyRules rules{.trust_domain = td("a.local"),
                    .aliases = {td("b.local"), td("c.local")},
                    .allow = {},
                    .deny = patterns({"spiffe://b.local/ns/x/*"})};
  Policy policy(std::move(rules));
  for (const char* id :
       {"spiffe://a.local/ns/x/y", "spiffe://b.local/ns/x/y", "spiffe://c.local/ns/x/y"}) {
    Decision d = policy.decide(*SpiffeId::parse(id));
    EXPECT_EQ(d.reason, TF_REASON_ID_DENIED) << id;
    EXPECT_EQ(d.matched_rule, "deny-id = spiffe://b.local/ns/x/*") << id;
  }
}

TEST(PolicyNoIdentity, FailsEvenANegativeRuleSet) {
  // Only deny rules and a local domain: no identity is still not "not denied".
  PolicyRules rules{.trust_domain = td("a.local"),
                    .aliases = {},
                    .allow = {},
                    .deny = patterns({"spiffe://a.local/*"})};
  Decision d = Policy(std::move(rules)).decide(std::nullopt);
  EXPECT_EQ(d.verdict, TF_VERDICT_DENY);
  EXPECT_EQ(d.reason, TF_REASON_DOMAIN_NOT_ALLOWED);
  EXPECT_EQ(d.matched_rule, "");
}

TEST(PolicyAcceptedDomains, AreLocalAliasesAndAllowDomainsOnce) {
  Policy policy(design_rules());
  std::vector<std::string> names;
  for (const auto& d : policy.accepted_domains()) names.push_back(d.name());
  EXPECT_EQ(names, (std::vector<std::string>{"team-a.gke.local", "team-b.eks.local", "team-c.local",
                                             "team-d.local"}));
}

}  // namespace
