#include "proxy_pair.hpp"

#include <sys/stat.h>

#include "support/process.hpp"
#include "support/test_ca.hpp"

namespace trustfence::bench::attest {
namespace {

namespace e2e = testing::e2e;

Result<e2e::Child> start_side(const e2e::Topology& topology, std::size_t node,
                              const std::string& cgroup, std::vector<std::string> argv,
                              std::uint16_t port) {
  const std::string what = argv.empty() ? std::string() : argv.front();
  auto child = e2e::spawn({.netns = topology.node(node), .cgroup = cgroup, .argv = argv});
  if (!child) return std::unexpected(child.error());
  if (auto ok = e2e::wait_for_tcp_listen(topology.node(node), port, e2e::kReadyTimeout, &*child);
      !ok) {
    auto err = child->read_stderr();
    return fail(ok.error().code,
                what + ": " + ok.error().message + "\n" + (err ? *err : std::string()));
  }
  return std::move(*child);
}

}  // namespace

Result<ProxyFiles> write_proxy_files(const e2e::TempDir& dir, const std::string& pair,
                                     const char* side, const e2e::Cluster& own,
                                     const e2e::Cluster& peer) {
  const std::string prefix = pair + "-" + side;
  auto svid = own.issue("spiffe://" + own.trust_domain() + "/ns/bench/sa/" + side);
  const std::string cert_pem = test::to_pem(svid.cert.get());
  const std::string key_pem = test::to_pem(svid.key.get());
  auto cert = dir.write(prefix + ".pem", cert_pem);
  if (!cert) return std::unexpected(cert.error());
  auto key = dir.write(prefix + ".key", key_pem);
  if (!key) return std::unexpected(key.error());
  ::chmod(key->c_str(), 0600);
  auto both = dir.write(prefix + "-cert-key.pem", cert_pem + key_pem);
  if (!both) return std::unexpected(both.error());
  ::chmod(both->c_str(), 0600);
  auto ca = dir.write(prefix + "-ca.pem", peer.bundle_pem());
  if (!ca) return std::unexpected(ca.error());
  return ProxyFiles{*cert, *key, *both, *ca};
}

Result<ProxyPair> ProxyPair::start(const e2e::Topology& topology, const ProxyPlan& plan,
                                   std::vector<std::string> server_argv,
                                   std::vector<std::string> client_argv) {
  auto server_side =
      start_side(topology, 1, plan.server_cgroup, std::move(server_argv), plan.tls_port);
  if (!server_side) return std::unexpected(server_side.error());
  auto client_side =
      start_side(topology, 0, plan.client_cgroup, std::move(client_argv), plan.client_port);
  if (!client_side) return std::unexpected(client_side.error());
  return ProxyPair(std::move(*server_side), std::move(*client_side));
}

std::string ProxyPair::logs() const {
  std::string text;
  for (const auto* side : {&server_side_, &client_side_}) {
    auto err = side->read_stderr();
    if (err && !err->empty()) text += side->description() + ":\n" + *err;
  }
  return text;
}

Result<std::string> program_version(const std::vector<std::string>& argv, std::string_view prefix,
                                    std::string_view install_hint) {
  auto result = testing::run_command(argv, testing::kCommandTimeout, testing::Output::kMerged);
  if (!result)
    return fail(result.error().code,
                result.error().message + " (" + std::string(install_hint) + ")");
  for (std::size_t at = 0; at < result->out.size();) {
    auto end = result->out.find('\n', at);
    auto line = result->out.substr(at, end == std::string::npos ? std::string::npos : end - at);
    if (line.starts_with(prefix)) return line;
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return fail(Errc::kIo,
              argv.front() + " printed no line starting with \"" + std::string(prefix) + "\"");
}

}  // namespace trustfence::bench::attest
