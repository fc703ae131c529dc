#include "trustfence/policy/policy.hpp"

#include <algorithm>

namespace trustfence::policy {

using identity::SpiffeId;
using identity::TrustDomain;

Result<IdPattern> IdPattern::parse(std::string_view text) {
  std::string_view id_part = text;
  bool prefix = text.ends_with("/*");
  if (prefix) id_part.remove_suffix(2);
  if (id_part.find('*') != id_part.npos)
    return fail(Errc::kInvalidArgument,
                "an ID pattern may only use '*' as its whole last segment "
                "(spiffe://<domain>/<path>/*)");
  auto id = SpiffeId::parse(id_part);
  if (!id)
    return fail(Errc::kInvalidArgument,
                "an ID pattern must be a valid SPIFFE ID, optionally "
                "ending in '/*': " +
                    id.error().message);
  if (!prefix && !id->has_workload_path())
    return fail(Errc::kInvalidArgument,
                "an ID pattern must name a workload path (spiffe://<domain>/<path>); to match "
                "every ID of a domain write spiffe://<domain>/*, to accept the whole domain use "
                "trust-domain-alias");
  return IdPattern(id->trust_domain(), id->path(), prefix, std::string(text));
}

bool IdPattern::matches_path(std::string_view path) const {
  if (!prefix_) return path == path_;
  // Whole segments only: "/ns/a/*" matches "/ns/a/x", never "/ns/ab/x",
  // and needs a non-empty segment after the prefix.
  return path.size() > path_.size() + 1 && path.starts_with(path_) && path[path_.size()] == '/';
}

bool IdPattern::matches(const SpiffeId& id) const {
  return id.trust_domain() == trust_domain_ && matches_path(id.path());
}

namespace {

bool contains(const std::vector<TrustDomain>& domains, const TrustDomain& td) {
  return std::find(domains.begin(), domains.end(), td) != domains.end();
}

Decision allow(tf_reason reason, std::string rule) {
  return Decision{TF_VERDICT_ALLOW, reason, std::move(rule)};
}

Decision deny(tf_reason reason, std::string rule) {
  return Decision{TF_VERDICT_DENY, reason, std::move(rule)};
}

}  // namespace

Decision Policy::decide(const std::optional<SpiffeId>& peer) const {
  // No identity matches no rule, deny-id included: it is simply not allowed.
  if (!peer) return deny(TF_REASON_DOMAIN_NOT_ALLOWED, "");

  const TrustDomain& td = peer->trust_domain();
  bool is_local = td == rules_.trust_domain;
  bool is_alias = !is_local && contains(rules_.aliases, td);
  // The local domain and its aliases are one domain for rules.
  auto is_local_equivalent = [&](const TrustDomain& d) {
    return d == rules_.trust_domain || contains(rules_.aliases, d);
  };
  auto rule_matches = [&](const IdPattern& p) {
    if (!p.matches_path(peer->path())) return false;
    return p.trust_domain() == td ||
           ((is_local || is_alias) && is_local_equivalent(p.trust_domain()));
  };

  for (const IdPattern& p : rules_.deny)
    if (rule_matches(p)) return deny(TF_REASON_ID_DENIED, "deny-id = " + p.text());
  if (is_local) return allow(TF_REASON_LOCAL_DOMAIN, "trust-domain = " + td.name());
  if (is_alias) return allow(TF_REASON_ALIAS_DOMAIN, "trust-domain-alias = " + td.name());
  for (const IdPattern& p : rules_.allow)
    if (rule_matches(p)) return allow(TF_REASON_ALLOWED_ID, "allow-id = " + p.text());
  return deny(TF_REASON_DOMAIN_NOT_ALLOWED, "");
}

std::vector<TrustDomain> Policy::accepted_domains() const {
  std::vector<TrustDomain> out{rules_.trust_domain};
  auto add = [&](const TrustDomain& td) {
    if (!contains(out, td)) out.push_back(td);
  };
  for (const TrustDomain& td : rules_.aliases) add(td);
  for (const IdPattern& p : rules_.allow) add(p.trust_domain());
  return out;
}

}  // namespace trustfence::policy
