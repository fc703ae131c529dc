#include "stunnel.hpp"

namespace trustfence::bench::attest {
namespace {

namespace e2e = testing::e2e;

struct Side {
  const char* name;  // "client", "server"
  const e2e::Cluster* own;
  const e2e::Cluster* peer;
  bool client_mode;
  std::string accept;
  std::string connect;
};

// The side's files and config under dir; returns the config's path.
Result<std::string> write_side(const e2e::TempDir& dir, const std::string& pair, const Side& side) {
  auto files = write_proxy_files(dir, pair, side.name, *side.own, *side.peer);
  if (!files) return std::unexpected(files.error());
  std::string config =
      "; written by tf_bench_attest\n"
      "foreground = yes\n"
      "pid =\n"
      "syslog = no\n"
      "debug = 4\n"  // warnings and errors only: nothing per connection
      "\n[bench]\n";
  config += std::string("client = ") + (side.client_mode ? "yes" : "no") + "\n";
  config += "accept = " + side.accept + "\n";
  config += "connect = " + side.connect + "\n";
  config += "cert = " + files->cert + "\n";
  config += "key = " + files->key + "\n";
  config += "CAfile = " + files->ca + "\n";
  config +=
      "verifyChain = yes\n"
      "requireCert = yes\n"
      "sslVersionMin = TLSv1.3\n"
      "socket = l:TCP_NODELAY=1\n"
      "socket = r:TCP_NODELAY=1\n";
  return dir.write(pair + "-" + side.name + ".conf", config);
}

}  // namespace

Result<ProxyPair> start_stunnel_pair(const e2e::Topology& topology, const e2e::TempDir& dir,
                                     const ProxyPlan& plan) {
  const Side server{"server",
                    plan.server_cluster,
                    plan.client_cluster,
                    false,
                    topology.ipv4_endpoint(1, plan.tls_port),
                    "127.0.0.1:" + std::to_string(plan.server_port)};
  const Side client{"client",
                    plan.client_cluster,
                    plan.server_cluster,
                    true,
                    "127.0.0.1:" + std::to_string(plan.client_port),
                    topology.ipv4_endpoint(1, plan.tls_port)};
  auto server_config = write_side(dir, plan.name, server);
  if (!server_config) return std::unexpected(server_config.error());
  auto client_config = write_side(dir, plan.name, client);
  if (!client_config) return std::unexpected(client_config.error());
  return ProxyPair::start(topology, plan, {kStunnelBinary, *server_config},
                          {kStunnelBinary, *client_config});
}

Result<std::string> stunnel_version() {
  return program_version({kStunnelBinary, "-version"}, "stunnel ",
                         "install Debian's stunnel4: bash scripts/setup.sh");
}

}  // namespace trustfence::bench::attest
