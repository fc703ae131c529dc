#include "haproxy.hpp"

#include <sys/stat.h>

#include "support/process.hpp"
#include "support/test_ca.hpp"

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

struct Side {
  const char* name;  // "client", "server"
  const e2e::Cluster* own;
  const e2e::Cluster* peer;
};

struct Files {
  std::string crt;  // certificate then key, as haproxy's crt wants them
  std::string ca;
};

Result<Files> write_files(const e2e::TempDir& dir, const std::string& pair, const Side& side) {
  const std::string prefix = pair + "-" + side.name;
  auto svid = side.own->issue("spiffe://" + side.own->trust_domain() + "/ns/bench/sa/" + side.name);
  auto crt = dir.write(prefix + ".pem", test::to_pem(svid.cert.get()) + key_pem(svid.key.get()));
  if (!crt) return std::unexpected(crt.error());
  ::chmod(crt->c_str(), 0600);
  auto ca = dir.write(prefix + "-ca.pem", side.peer->bundle_pem());
  if (!ca) return std::unexpected(ca.error());
  return Files{*crt, *ca};
}

Result<e2e::Child> start_side(const e2e::Topology& topology, std::size_t node,
                              const std::string& cgroup, const std::string& config,
                              std::uint16_t port) {
  auto child = e2e::spawn({.netns = topology.node(node),
                           .cgroup = cgroup,
                           .argv = {kHaproxyBinary, "-db", "-f", config}});
  if (!child) return std::unexpected(child.error());
  if (auto ok = e2e::wait_for_tcp_listen(topology.node(node), port, e2e::kReadyTimeout, &*child);
      !ok) {
    auto err = child->read_stderr();
    return fail(ok.error().code, "haproxy (" + config + "): " + ok.error().message + "\n" +
                                     (err ? *err : std::string()));
  }
  return std::move(*child);
}

}  // namespace

Result<HaproxyPair> HaproxyPair::start(const e2e::Topology& topology, const e2e::TempDir& dir,
                                       const ProxyPlan& plan) {
  auto server_files =
      write_files(dir, plan.name, {"server", plan.server_cluster, plan.client_cluster});
  if (!server_files) return std::unexpected(server_files.error());
  auto client_files =
      write_files(dir, plan.name, {"client", plan.client_cluster, plan.server_cluster});
  if (!client_files) return std::unexpected(client_files.error());
  const std::string tls_endpoint = topology.ipv4_endpoint(1, plan.tls_port);

  std::string server = std::string("# written by tf_bench_attest\n") + kCommon;
  server += "frontend mtls\n  bind " + tls_endpoint + " ssl crt " + server_files->crt +
            " ca-file " + server_files->ca + " verify required\n  default_backend app\n";
  server += "backend app\n  server app 127.0.0.1:" + std::to_string(plan.server_port) + "\n";
  std::string client = std::string("# written by tf_bench_attest\n") + kCommon;
  client += "frontend plain\n  bind 127.0.0.1:" + std::to_string(plan.client_port) +
            "\n  default_backend mtls\n";
  client += "backend mtls\n  server peer " + tls_endpoint + " ssl crt " + client_files->crt +
            " ca-file " + client_files->ca + " verify required\n";

  auto server_config = dir.write(plan.name + "-server.cfg", server);
  if (!server_config) return std::unexpected(server_config.error());
  auto client_config = dir.write(plan.name + "-client.cfg", client);
  if (!client_config) return std::unexpected(client_config.error());
  auto server_side = start_side(topology, 1, plan.server_cgroup, *server_config, plan.tls_port);
  if (!server_side) return std::unexpected(server_side.error());
  auto client_side = start_side(topology, 0, plan.client_cgroup, *client_config, plan.client_port);
  if (!client_side) return std::unexpected(client_side.error());
  return HaproxyPair(std::move(*server_side), std::move(*client_side));
}

Result<std::string> HaproxyPair::version() {
  auto result = testing::run_command({kHaproxyBinary, "-v"}, testing::kCommandTimeout,
                                     testing::Output::kMerged);
  if (!result)
    return fail(result.error().code,
                result.error().message + " (install Debian's haproxy: scripts/bench.sh does)");
  auto line = result->out.substr(0, result->out.find('\n'));
  if (line.rfind("HAProxy version ", 0) != 0)
    return fail(Errc::kIo, std::string(kHaproxyBinary) + " -v printed no version line");
  return line.substr(0, line.find(" - "));
}

std::string HaproxyPair::logs() const {
  std::string text;
  for (const auto* side : {&server_side_, &client_side_}) {
    auto err = side->read_stderr();
    if (err && !err->empty()) text += side->description() + ":\n" + *err;
  }
  return text;
}

}  // namespace trustfence::bench::attest
