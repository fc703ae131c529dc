#pragma once

// Trust bundles: the X.509 authorities of one trust domain. Bundles are
// never merged: each trust domain has its own store, and a chain is only
// ever verified against the bundle of its leaf's own trust domain.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trustfence/common/result.hpp"
#include "trustfence/identity/spiffe_id.hpp"
#include "trustfence/tls/openssl.hpp"

namespace trustfence::tls {

// Hard limits on untrusted input.
inline constexpr std::size_t kMaxBundleBytes = 4 * 1024 * 1024;
inline constexpr std::size_t kMaxBundleAuthorities = 1024;
inline constexpr std::size_t kMaxChainBytes = 256 * 1024;
inline constexpr std::size_t kMaxChainLength = 16;

struct Bundle {
  identity::TrustDomain trust_domain;
  Chain authorities;                         // may be empty: the domain then trusts nothing
  std::optional<std::uint64_t> sequence;     // spiffe_sequence
  std::optional<std::int64_t> refresh_hint;  // spiffe_refresh_hint, seconds
};

// PEM text of one or more CERTIFICATE blocks (leaf first for a chain).
Result<Chain> parse_pem_chain(std::string_view pem);
// A SPIFFE bundle (JWK Set): "x509-svid" keys with "x5c" (base64 DER);
// keys of other "use" or "kty" are ignored; "keys": [] trusts nothing.
Result<Bundle> parse_spiffe_bundle(const identity::TrustDomain& td, std::string_view json);
Result<Bundle> parse_pem_bundle(const identity::TrustDomain& td, std::string_view pem);
// Reads a file (bounded by kMaxBundleBytes); ".json" files are SPIFFE
// bundles, anything else PEM. Errors name the file.
Result<Bundle> load_bundle(const identity::TrustDomain& td, const std::string& path);

// One X509_STORE per trust domain.
class BundleSet {
 public:
  // Replaces the domain's bundle if it had one.
  Result<void> add(Bundle bundle);
  const Bundle* find(const identity::TrustDomain& td) const;
  // The store holding only td's authorities, or nullptr.
  X509_STORE* store(const identity::TrustDomain& td) const;
  std::size_t size() const { return entries_.size(); }
  std::vector<identity::TrustDomain> domains() const;
  // Changes on every add(), and no two sets share one, so anything derived
  // from a set (cached verifications) can tell it is stale.
  std::uint64_t generation() const { return generation_; }

 private:
  static std::uint64_t next_generation();

  struct Entry {
    Bundle bundle;
    X509StorePtr store;
  };
  std::map<identity::TrustDomain, Entry> entries_;
  std::uint64_t generation_ = next_generation();
};

}  // namespace trustfence::tls
