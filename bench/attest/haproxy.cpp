#include "haproxy.hpp"

namespace trustfence::bench::attest {
namespace {

namespace e2e = testing::e2e;

// Sections both sides share: foreground, no logging per connection, TCP.
constexpr const char* kCommon =
    "global\n"
    "  maxconn 8000\n"
    "  ssl-default-bind-options ssl-min-ver TLSv1.3\n"
    "  ssl-default-server-options ssl-min-ver TLSv1.3\n"
    "defaults\n"
    "  mode tcp\n"
    "  timeout connect 5s\n"
    "  timeout client 30s\n"
    "  timeout server 30s\n";

}  // namespace

Result<ProxyPair> start_haproxy_pair(const e2e::Topology& topology, const e2e::TempDir& dir,
                                     const ProxyPlan& plan) {
  auto server_files =
      write_proxy_files(dir, plan.name, "server", *plan.server_cluster, *plan.client_cluster);
  if (!server_files) return std::unexpected(server_files.error());
  auto client_files =
      write_proxy_files(dir, plan.name, "client", *plan.client_cluster, *plan.server_cluster);
  if (!client_files) return std::unexpected(client_files.error());
  const std::string tls_endpoint = topology.ipv4_endpoint(1, plan.tls_port);

  std::string server = std::string("# written by tf_bench_attest\n") + kCommon;
  server += "frontend mtls\n  bind " + tls_endpoint + " ssl crt " + server_files->cert_and_key +
            " ca-file " + server_files->ca + " verify required\n  default_backend app\n";
  server += "backend app\n  server app 127.0.0.1:" + std::to_string(plan.server_port) + "\n";
  std::string client = std::string("# written by tf_bench_attest\n") + kCommon;
  client += "frontend plain\n  bind 127.0.0.1:" + std::to_string(plan.client_port) +
            "\n  default_backend mtls\n";
  client += "backend mtls\n  server peer " + tls_endpoint + " ssl crt " +
            client_files->cert_and_key + " ca-file " + client_files->ca + " verify required\n";

  auto server_config = dir.write(plan.name + "-server.cfg", server);
  if (!server_config) return std::unexpected(server_config.error());
  auto client_config = dir.write(plan.name + "-client.cfg", client);
  if (!client_config) return std::unexpected(client_config.error());
  return ProxyPair::start(topology, plan, {kHaproxyBinary, "-db", "-f", *server_config},
                          {kHaproxyBinary, "-db", "-f", *client_config});
}

Result<std::string> haproxy_version() {
  auto line = program_version({kHaproxyBinary, "-v"}, "HAProxy version ",
                              "install Debian's haproxy: scripts/bench.sh does");
  if (!line) return line;
  return line->substr(0, line->find(" - "));
}

}  // namespace trustfence::bench::attest
