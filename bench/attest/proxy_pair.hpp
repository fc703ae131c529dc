#pragma once

// The comparison points of the benchmark: the same client and server behind
// a pair of mTLS proxies from Debian (stunnel.hpp, haproxy.hpp), no agents.
//
//   node 0: client -> 127.0.0.1:<client_port> [proxy, client side]
//           -> <node 1>:<tls_port> [proxy, server side] -> 127.0.0.1:<server_port>
//
// Both ends present an X.509-SVID of their cluster and require and verify
// the other's against that cluster's CA, TLS 1.3 only. Each proxy runs in
// the foreground as a Child of this process.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "support/e2e/child.hpp"
#include "support/e2e/cluster.hpp"
#include "support/e2e/temp_dir.hpp"
#include "support/e2e/topology.hpp"
#include "trustfence/common/result.hpp"

namespace trustfence::bench::attest {

// Where a pair of mTLS proxies runs.
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

// One side's SVID files under dir, named after the pair and the side.
struct ProxyFiles {
  std::string cert;          // the SVID's certificate
  std::string key;           // its key (0600)
  std::string cert_and_key;  // both in one file (0600), as haproxy's crt wants them
  std::string ca;            // the peer cluster's CA
};
Result<ProxyFiles> write_proxy_files(const testing::e2e::TempDir& dir, const std::string& pair,
                                     const char* side, const testing::e2e::Cluster& own,
                                     const testing::e2e::Cluster& peer);

// The two proxies; stopped (client side first) when destroyed.
class ProxyPair {
 public:
  // Starts the server side in node 1 and waits until it listens on
  // tls_port, then the client side in node 0 on client_port.
  static Result<ProxyPair> start(const testing::e2e::Topology& topology, const ProxyPlan& plan,
                                 std::vector<std::string> server_argv,
                                 std::vector<std::string> client_argv);

  // What both wrote (warnings, errors), for a failure message.
  std::string logs() const;

 private:
  ProxyPair(testing::e2e::Child server_side, testing::e2e::Child client_side)
      : server_side_(std::move(server_side)), client_side_(std::move(client_side)) {}

  // Declared first, destroyed last: the client side goes first.
  testing::e2e::Child server_side_;
  testing::e2e::Child client_side_;
};

// The first line `argv` prints (stdout and stderr) that starts with prefix;
// install_hint ends the error when the program is missing.
Result<std::string> program_version(const std::vector<std::string>& argv, std::string_view prefix,
                                    std::string_view install_hint);

}  // namespace trustfence::bench::attest
