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

#include "proxy_pair.hpp"

namespace trustfence::bench::attest {

inline constexpr const char* kHaproxyBinary = "/usr/sbin/haproxy";

// Writes certificates, keys, CA files and configs under dir, starts both
// in the foreground and waits until each listens.
Result<ProxyPair> start_haproxy_pair(const testing::e2e::Topology& topology,
                                     const testing::e2e::TempDir& dir, const ProxyPlan& plan);

// "HAProxy version 2.6.12-1": the start of haproxy -v's first line.
Result<std::string> haproxy_version();

}  // namespace trustfence::bench::attest
