// IdPattern::parse and matching, and Policy::decide. Input: a pattern, a
// newline, a SPIFFE ID. Matching is checked against a string oracle that
// is correct for canonical IDs, and decisions against the policy's rules.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "trustfence/policy/policy.hpp"

using trustfence::identity::SpiffeId;
using trustfence::identity::TrustDomain;
using trustfence::policy::IdPattern;
using trustfence::policy::Policy;
using trustfence::policy::PolicyRules;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// What a pattern should match, from the texts alone.
bool oracle(std::string_view pattern, std::string_view id) {
  if (!pattern.ends_with("/*")) return pattern == id;
  std::string_view prefix = pattern.substr(0, pattern.size() - 1);  // keeps the '/'
  return id.size() > prefix.size() && id.starts_with(prefix);
}

void check_decisions(const IdPattern& pattern, const SpiffeId& id) {
  const TrustDomain local = *TrustDomain::parse("example.org");
  const TrustDomain alias = *TrustDomain::parse("alias.example");
  bool matches = pattern.matches(id);

  Policy deny_only(PolicyRules{local, {alias}, {}, {pattern}});
  auto d = deny_only.decide(id);
  if (matches) check(d.verdict == TF_VERDICT_DENY && d.reason == TF_REASON_ID_DENIED);
  bool local_like = id.trust_domain() == local || id.trust_domain() == alias;
  if (!local_like) check(d.verdict == TF_VERDICT_DENY);

  Policy allow_only(PolicyRules{local, {alias}, {pattern}, {}});
  auto a = allow_only.decide(id);
  check(a.verdict == (local_like || matches ? TF_VERDICT_ALLOW : TF_VERDICT_DENY));
  check(deny_only.decide(std::nullopt).matched_rule.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::size_t nl = input.find('\n');
  std::string_view pattern_text = input.substr(0, nl);
  std::string_view id_text = nl == input.npos ? std::string_view{} : input.substr(nl + 1);

  auto pattern = IdPattern::parse(pattern_text);
  if (!pattern) return 0;
  check(pattern->text() == pattern_text);
  auto id = SpiffeId::parse(id_text);
  if (!id) return 0;
  check(pattern->matches(*id) == oracle(pattern_text, id_text));
  check_decisions(*pattern, *id);
  return 0;
}
