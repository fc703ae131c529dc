#pragma once

// The comparison point: the same client and server behind a pair of
// Debian's stunnel mTLS proxies, no agents.
//
//   node 0: client -> 127.0.0.1:<client_port> [stunnel, client = yes]
//           -> <node 1>:<tls_port> [stunnel, server] -> 127.0.0.1:<server_port>
//
// Both ends present an X.509-SVID of their cluster and require and verify
// the other's against that cluster's CA (verifyChain, requireCert), TLS 1.3
// only. Each stunnel runs in the foreground as a Child of this process.

#include <openssl/evp.h>

#include <cstdint>
#include <optional>
#include <string>

#include "support/e2e/child.hpp"
#include "support/e2e/cluster.hpp"
#include "support/e2e/temp_dir.hpp"
#include "support/e2e/topology.hpp"

namespace trustfence::bench::attest {

inline constexpr const char* kStunnelBinary = "/usr/bin/stunnel4";

// A private key as unencrypted PEM, for the proxies' files.
std::string key_pem(EVP_PKEY* key);

// Where a pair of mTLS proxies (stunnel here, haproxy in haproxy.hpp) runs.
struct ProxyPlan {
  std::string name;                                       // prefix of its files: one pair per name
  const testing::e2e::Cluster* client_cluster = nullptr;  // node 0's
  const testing::e2e::Cluster* server_cluster = nullptr;  // node 1's
  std::string client_cgroup;                              // node 0's workload cgroup
  std::string server_cgroup;                              // node 1's
  std::uint16_t client_port = 0;                          // node 0, 127.0.0.1
  std::uint16_t tls_port = 0;                             // node 1's address
  std::uint16_t server_port = 0;                          // node 1, 127.0.0.1
};

// The two proxies; stopped (server side last) when destroyed.
class StunnelPair {
 public:
  // Writes certificates, keys, CA files and configs under dir, starts both
  // and waits until each listens.
  static Result<StunnelPair> start(const testing::e2e::Topology& topology,
                                   const testing::e2e::TempDir& dir, const ProxyPlan& plan);

  // "stunnel 5.68 ..., OpenSSL ...": the version line it prints.
  static Result<std::string> version();

  // What both wrote (warnings, errors) for a failure message.
  std::string logs() const;

 private:
  StunnelPair(testing::e2e::Child server_side, testing::e2e::Child client_side)
      : server_side_(std::move(server_side)), client_side_(std::move(client_side)) {}

  // Declared first, destroyed last: the client side goes first.
  testing::e2e::Child server_side_;
  testing::e2e::Child client_side_;
};

}  // namespace trustfence::bench::attest
