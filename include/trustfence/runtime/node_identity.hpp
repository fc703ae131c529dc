#pragma once

// What the agent attests with, built from the identity config and replaced
// as a whole on reload: the bundles, the verifier and its cache, and the
// TLS contexts made from the agent's own SVID.

#include <chrono>
#include <map>
#include <memory>
#include <set>

#include "trustfence/common/result.hpp"
#include "trustfence/config/config.hpp"
#include "trustfence/identity/spiffe_id.hpp"
#include "trustfence/tls/bundle.hpp"
#include "trustfence/tls/svid_verifier.hpp"
#include "trustfence/tls/tls_stream.hpp"
#include "trustfence/tls/verify_cache.hpp"

namespace trustfence::runtime {

struct NodeIdentity {
  std::unique_ptr<tls::BundleSet> bundles;
  std::unique_ptr<tls::SvidVerifier> verifier;
  std::unique_ptr<tls::VerifyCache> cache;
  std::unique_ptr<tls::TlsContext> client;
  std::unique_ptr<tls::TlsContext> server;
  identity::SpiffeId agent_id;  // from our own SVID
  std::chrono::system_clock::time_point svid_not_after;
};

// Loads bundles and SVID, and checks the SVID against our own bundle the
// way peers will: an agent that cannot authenticate does not start.
Result<NodeIdentity> load_node_identity(const config::IdentityConfig& config);

// Trust domains whose bundle lost an authority (or the whole bundle)
// between before and after: connections from them must be re-verified.
std::set<identity::TrustDomain> weakened_domains(const tls::BundleSet& before,
                                                 const tls::BundleSet& after);

// The earliest notAfter among each trust domain's authorities.
std::map<identity::TrustDomain, std::chrono::system_clock::time_point> bundle_expiry(
    const tls::BundleSet& bundles);

}  // namespace trustfence::runtime
