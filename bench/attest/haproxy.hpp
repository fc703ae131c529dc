#pragma once

// A second comparison point: the same client and server behind a pair of
// Debian's haproxy in TCP mode, mTLS between them, no agents.
//
//   node 0: client -> 127.0.0.1:<client_port> [haproxy: frontend, backend
//           server ... ssl crt verify required] -> <node 1>:<tls_port>
//           [haproxy: bind ... ssl crt verify required] -> 127.0.0.1:<server_port>
//
// As with stunnel, both ends present an X.509-SVID of their cluster and
// require and verify the other's against that cluster's CA, TLS 1.3 only.
// The client side keeps haproxy's default TLS session cache, as stunnel's
// client does, so reconnections resume.

#include <string>

#include "stunnel.hpp"
#include "support/e2e/child.hpp"
#include "support/e2e/temp_dir.hpp"
#include "support/e2e/topology.hpp"

namespace trustfence::bench::attest {

inline constexpr const char* kHaproxyBinary = "/usr/sbin/haproxy";

// The two proxies; stopped (server side last) when destroyed.
class HaproxyPair {
 public:
  // Writes certificates, keys, CA files and configs under dir, starts both
  // in the foreground and waits until each listens.
  static Result<HaproxyPair> start(const testing::e2e::Topology& topology,
                                   const testing::e2e::TempDir& dir, const ProxyPlan& plan);

  // "HAProxy version 2.6.12-1 ...": the first line of haproxy -v.
  static Result<std::string> version();

  std::string logs() const;

 private:
  HaproxyPair(testing::e2e::Child server_side, testing::e2e::Child client_side)
      : server_side_(std::move(server_side)), client_side_(std::move(client_side)) {}

  testing::e2e::Child server_side_;
  testing::e2e::Child client_side_;
};

}  // namespace trustfence::bench::attest
