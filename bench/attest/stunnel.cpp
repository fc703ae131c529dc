#include "stunnel.hpp"

#include <sys/stat.h>

#include <openssl/pem.h>

#include "support/process.hpp"
#include "support/test_ca.hpp"

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

// Certificate, key and the peer's CA under dir; returns the config's path.
Result<std::string> write_side(const e2e::TempDir& dir, const std::string& pair, const Side& side) {
  const std::string prefix = pair + "-" + side.name;
  auto svid = side.own->issue("spiffe://" + side.own->trust_domain() + "/ns/bench/sa/" + side.name);
  auto cert = dir.write(prefix + ".pem", test::to_pem(svid.cert.get()));
  if (!cert) return std::unexpected(cert.error());
  auto key = dir.write(prefix + ".key", key_pem(svid.key.get()));
  if (!key) return std::unexpected(key.error());
  ::chmod(key->c_str(), 0600);
  auto ca = dir.write(prefix + "-ca.pem", side.peer->bundle_pem());
  if (!ca) return std::unexpected(ca.error());
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
  config += "cert = " + *cert + "\n";
  config += "key = " + *key + "\n";
  config += "CAfile = " + *ca + "\n";
  config +=
      "verifyChain = yes\n"
      "requireCert = yes\n"
      "sslVersionMin = TLSv1.3\n"
      "socket = l:TCP_NODELAY=1\n"
      "socket = r:TCP_NODELAY=1\n";
  return dir.write(prefix + ".conf", config);
}

Result<e2e::Child> start_side(const e2e::Topology& topology, std::size_t node,
                              const std::string& cgroup, const std::string& config,
                              std::uint16_t port) {
  auto child = e2e::spawn(
      {.netns = topology.node(node), .cgroup = cgroup, .argv = {kStunnelBinary, config}});
  if (!child) return std::unexpected(child.error());
  if (auto ok = e2e::wait_for_tcp_listen(topology.node(node), port, e2e::kReadyTimeout, &*child);
      !ok) {
    auto err = child->read_stderr();
    return fail(ok.error().code, "stunnel (" + config + "): " + ok.error().message + "\n" +
                                     (err ? *err : std::string()));
  }
  return std::move(*child);
}

}  // namespace

std::string key_pem(EVP_PKEY* key) {
  tls::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

Result<StunnelPair> StunnelPair::start(const e2e::Topology& topology, const e2e::TempDir& dir,
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
  auto server_side = start_side(topology, 1, plan.server_cgroup, *server_config, plan.tls_port);
  if (!server_side) return std::unexpected(server_side.error());
  auto client_side = start_side(topology, 0, plan.client_cgroup, *client_config, plan.client_port);
  if (!client_side) return std::unexpected(client_side.error());
  return StunnelPair(std::move(*server_side), std::move(*client_side));
}

Result<std::string> StunnelPair::version() {
  auto result = testing::run_command({kStunnelBinary, "-version"}, testing::kCommandTimeout,
                                     testing::Output::kMerged);
  if (!result)
    return fail(result.error().code,
                result.error().message + " (install Debian's stunnel4: bash scripts/setup.sh)");
  for (std::size_t at = 0; at < result->out.size();) {
    auto end = result->out.find('\n', at);
    auto line = result->out.substr(at, end == std::string::npos ? std::string::npos : end - at);
    if (line.rfind("stunnel ", 0) == 0) return line;
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return fail(Errc::kIo, std::string(kStunnelBinary) + " -version printed no version line");
}

std::string StunnelPair::logs() const {
  std::string text;
  for (const auto* side : {&server_side_, &client_side_}) {
    auto err = side->read_stderr();
    if (err && !err->empty()) text += side->description() + ":\n" + *err;
  }
  return text;
}

}  // namespace trustfence::bench::attest
