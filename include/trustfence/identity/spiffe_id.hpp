#pragma once

// SPIFFE identities as immutable values, built only by validating parsers
// that follow the SPIFFE ID standard strictly. Compare parsed values, never
// string prefixes: spiffe://example.org.evil.com is not in example.org.

#include <compare>
#include <cstddef>
#include <string>
#include <string_view>

#include "trustfence/common/result.hpp"

namespace trustfence::identity {

class TrustDomain {
 public:
  static constexpr std::size_t kMaxLength = 255;

  // A bare name ("example.org"): [a-z0-9._-], 1..255 bytes. Uppercase is
  // rejected, not folded; "example.org." and "example.org" differ.
  static Result<TrustDomain> parse(std::string_view name);

  const std::string& name() const { return name_; }
  // "spiffe://example.org"
  std::string id_string() const;

  auto operator<=>(const TrustDomain&) const = default;

 private:
  explicit TrustDomain(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

class SpiffeId {
 public:
  static constexpr std::size_t kMaxLength = 2048;

  // "spiffe://<trust domain><path>": scheme exactly "spiffe"; no userinfo,
  // port, query, fragment or percent-encoding; path segments
  // [A-Za-z0-9._-], none empty, "." or ".."; no trailing "/". The path may
  // be empty (the trust domain's own ID); see has_workload_path().
  static Result<SpiffeId> parse(std::string_view uri);

  const TrustDomain& trust_domain() const { return trust_domain_; }
  // "" or "/seg/seg..."
  const std::string& path() const { return path_; }
  bool has_workload_path() const { return !path_.empty(); }
  bool member_of(const TrustDomain& td) const { return trust_domain_ == td; }
  std::string str() const;

  auto operator<=>(const SpiffeId&) const = default;

 private:
  SpiffeId(TrustDomain td, std::string path)
      : trust_domain_(std::move(td)), path_(std::move(path)) {}
  TrustDomain trust_domain_;
  std::string path_;
};

}  // namespace trustfence::identity
