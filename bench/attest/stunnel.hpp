#pragma once

// The first comparison point: a pair of Debian's stunnel (proxy_pair.hpp):
// verifyChain, requireCert, TLS 1.3 only.

#include <string>

#include "proxy_pair.hpp"

namespace trustfence::bench::attest {

inline constexpr const char* kStunnelBinary = "/usr/bin/stunnel4";

// Writes certificates, keys, CA files and configs under dir, starts both
// and waits until each listens.
Result<ProxyPair> start_stunnel_pair(const testing::e2e::Topology& topology,
                                     const testing::e2e::TempDir& dir, const ProxyPlan& plan);

// "stunnel 5.68 ..., OpenSSL ...": the version line it prints.
Result<std::string> stunnel_version();

}  // namespace trustfence::bench::attest
