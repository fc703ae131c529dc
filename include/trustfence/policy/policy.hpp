#pragma once

// The trust-domain policy: which verified peer identities may talk to us,
// with the reason and the rule that decided.
//  - the local trust domain is accepted (local-domain);
//  - each alias is accepted as a whole (alias-domain) and is equivalent to
//    the local domain for rules (Istio's trustDomainAliases);
//  - allow-id accepts matching identities of a domain otherwise not
//    accepted (allowed-id): exact IDs, or a trailing "/*" matching whole
//    segments only;
//  - deny-id (same patterns) always wins (id-denied);
//  - everything else is domain-not-allowed. A peer with no identity fails
//    every identity rule, negative ones included.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trustfence/abi.h"
#include "trustfence/common/result.hpp"
#include "trustfence/identity/spiffe_id.hpp"

namespace trustfence::policy {

class IdPattern {
 public:
  // "spiffe://td/path" (exact) or "spiffe://td/path/*" (that prefix, whole
  // segments, at least one more segment).
  static Result<IdPattern> parse(std::string_view text);

  // The path part alone; Policy decides which domains are equivalent.
  bool matches_path(std::string_view path) const;
  bool matches(const identity::SpiffeId& id) const;
  const identity::TrustDomain& trust_domain() const { return trust_domain_; }
  const std::string& text() const { return text_; }

 private:
  IdPattern(identity::TrustDomain td, std::string path, bool prefix, std::string text)
      : trust_domain_(std::move(td)),
        path_(std::move(path)),
        prefix_(prefix),
        text_(std::move(text)) {}
  identity::TrustDomain trust_domain_;
  std::string path_;
  bool prefix_;
  std::string text_;
};

struct PolicyRules {
  identity::TrustDomain trust_domain;
  std::vector<identity::TrustDomain> aliases;
  std::vector<IdPattern> allow;
  std::vector<IdPattern> deny;
};

struct Decision {
  tf_verdict verdict;
  tf_reason reason;
  std::string matched_rule;  // e.g. "trust-domain = x", "deny-id = ..."
};

class Policy {
 public:
  explicit Policy(PolicyRules rules) : rules_(std::move(rules)) {}
  // peer: the verified identity, or none.
  Decision decide(const std::optional<identity::SpiffeId>& peer) const;
  // The domains whose bundles are needed: local, aliases, allow-id domains.
  std::vector<identity::TrustDomain> accepted_domains() const;
  const PolicyRules& rules() const { return rules_; }

 private:
  PolicyRules rules_;
};

}  // namespace trustfence::policy
