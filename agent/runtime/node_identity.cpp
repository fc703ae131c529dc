#include "trustfence/runtime/node_identity.hpp"

#include <ctime>

#include "trustfence/common/verdict.hpp"

namespace trustfence::runtime {
namespace {

std::set<std::string> authority_ders(const tls::Bundle& bundle) {
  std::set<std::string> out;
  for (const auto& cert : bundle.authorities) {
    unsigned char* der = nullptr;
    int length = i2d_X509(cert.get(), &der);
    if (length <= 0) continue;
    out.emplace(reinterpret_cast<char*>(der), static_cast<std::size_t>(length));
    OPENSSL_free(der);
  }
  return out;
}

}  // namespace

Result<NodeIdentity> load_node_identity(const config::IdentityConfig& config) {
  if (config.svid_cert.empty())
    return fail(Errc::kInvalidArgument,
                "trust-domain is set but svid-cert/svid-key are not: the agent authenticates "
                "to its peers with its own SVID");
  auto bundles = config::load_bundles(config);
  if (!bundles) return std::unexpected(bundles.error());
  auto set = std::make_unique<tls::BundleSet>(std::move(*bundles));
  auto verifier =
      std::make_unique<tls::SvidVerifier>(*set, [] { return std::chrono::system_clock::now(); });
  auto svid = tls::load_tls_identity(config.svid_cert, config.svid_key);
  if (!svid) return std::unexpected(svid.error());
  auto own = verifier->verify(svid->chain);
  if (!own)
    return fail(Errc::kInvalidArgument, "svid-cert = " + config.svid_cert + ": " +
                                            std::string(to_string(own.error().reason)) + ": " +
                                            own.error().detail);
  if (!own->id.member_of(config.rules.trust_domain))
    return fail(Errc::kInvalidArgument, "svid-cert = " + config.svid_cert + ": " + own->id.str() +
                                            " is not in trust-domain " +
                                            config.rules.trust_domain.name());
  auto cache = std::make_unique<tls::VerifyCache>(*verifier);
  auto client = tls::TlsContext::create(tls::Role::kClient, *svid, *cache, *verifier);
  if (!client) return std::unexpected(client.error());
  auto server = tls::TlsContext::create(tls::Role::kServer, *svid, *cache, *verifier);
  if (!server) return std::unexpected(server.error());
  return NodeIdentity{std::move(set),
                      std::move(verifier),
                      std::move(cache),
                      std::make_unique<tls::TlsContext>(std::move(*client)),
                      std::make_unique<tls::TlsContext>(std::move(*server)),
                      own->id,
                      own->not_after};
}

std::set<identity::TrustDomain> weakened_domains(const tls::BundleSet& before,
                                                 const tls::BundleSet& after) {
  std::set<identity::TrustDomain> out;
  for (const auto& td : before.domains()) {
    const tls::Bundle* old_bundle = before.find(td);
    const tls::Bundle* new_bundle = after.find(td);
    if (!new_bundle) {
      out.insert(td);
      continue;
    }
    auto kept = authority_ders(*new_bundle);
    for (const auto& der : authority_ders(*old_bundle)) {
      if (!kept.contains(der)) {
        out.insert(td);
        break;
      }
    }
  }
  return out;
}

std::map<identity::TrustDomain, std::chrono::system_clock::time_point> bundle_expiry(
    const tls::BundleSet& bundles) {
  std::map<identity::TrustDomain, std::chrono::system_clock::time_point> out;
  for (const auto& td : bundles.domains()) {
    const tls::Bundle* bundle = bundles.find(td);
    for (const auto& cert : bundle->authorities) {
      std::tm tm{};
      if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) != 1) continue;
      auto at = std::chrono::system_clock::from_time_t(timegm(&tm));
      auto [it, inserted] = out.emplace(td, at);
      if (!inserted && at < it->second) it->second = at;
    }
  }
  return out;
}

}  // namespace trustfence::runtime
