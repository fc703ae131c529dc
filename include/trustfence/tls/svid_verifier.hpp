#pragma once

// X.509-SVID verification, in the order of the SPIFFE X.509-SVID spec, each
// failure a named reason of the shared closed set (trustfence/abi.h):
//   chain present, leaf first                    -> invalid-svid
//   exactly one URI SAN                          -> invalid-svid
//   a valid SPIFFE ID with a non-root path       -> invalid-svid
//   leaf not a CA, digitalSignature, no
//   keyCertSign / cRLSign                        -> invalid-svid
//   a bundle for the leaf's own trust domain     -> no-bundle
//   chains to that bundle only (rest untrusted,
//   intermediates must be CAs)                   -> bad-chain
//   valid at the injected clock's time           -> expired

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <string>

#include "trustfence/abi.h"
#include "trustfence/identity/spiffe_id.hpp"
#include "trustfence/tls/bundle.hpp"

namespace trustfence::tls {

using Clock = std::function<std::chrono::system_clock::time_point()>;

struct VerifiedSvid {
  identity::SpiffeId id;
  std::chrono::system_clock::time_point not_after;  // earliest in the chain
};

struct VerifyFailure {
  tf_reason reason;
  std::string detail;  // for an operator; names the step that failed
};

using VerifyResult = std::expected<VerifiedSvid, VerifyFailure>;

class SvidVerifier {
 public:
  SvidVerifier(const BundleSet& bundles, Clock clock);
  VerifyResult verify(const Chain& chain) const;

  const BundleSet& bundles() const { return bundles_; }
  std::chrono::system_clock::time_point now() const { return clock_(); }

 private:
  const BundleSet& bundles_;
  Clock clock_;
};

}  // namespace trustfence::tls
