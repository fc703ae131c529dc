#pragma once

// The agent's configuration: an INI file (Boost.Program_options syntax)
// whose every key is also a --flag; flags win over the file. Validated once
// here; the rest of the code sees plain values. Errors name the key and,
// for the file, the line.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "trustfence/common/net.hpp"
#include "trustfence/common/result.hpp"
#include "trustfence/datapath/datapath.hpp"
#include "trustfence/identity/spiffe_id.hpp"
#include "trustfence/policy/policy.hpp"
#include "trustfence/tls/bundle.hpp"

namespace trustfence::config {

// trust-bundle = TRUST_DOMAIN:PATH
struct BundleSource {
  identity::TrustDomain trust_domain;
  std::string path;
};

// Who we are and whom we accept; present when trust-domain is configured.
// Every accepted domain (local, aliases, allow-id domains) has a bundle.
struct IdentityConfig {
  policy::PolicyRules rules;
  std::vector<BundleSource> bundles;
  std::string svid_cert;  // leaf first, then intermediates (may be empty)
  std::string svid_key;
};

inline constexpr std::uint16_t kDefaultListenPort = 7400;
inline constexpr const char* kDefaultListen = "[::]:7400";  // dual-stack
inline constexpr std::chrono::milliseconds kDefaultAttestationTimeout{2000};
inline constexpr const char* kDefaultApiSocket = "/run/trustfence/api.sock";

// What to do about a peer with no agent to attest with.
enum class PeerAuthentication { kStrict, kPermissive };

// peer = CIDR:HOST:PORT: the agent answering for the addresses of CIDR
// (pods behind a node); the first matching route wins, else the remote
// address itself on the listen port.
struct PeerRoute {
  net::Cidr cidr;
  net::SocketAddress agent;
  std::string text;
};

// workload-id = CGROUP_PATH:SPIFFE_ID: the identity this agent vouches for
// on behalf of the sockets of that cgroup and its descendants.
struct WorkloadIdentity {
  std::string cgroup;  // absolute, or relative to the cgroup v2 mount
  identity::SpiffeId id;
};

struct AttestationConfig {
  net::SocketAddress listen = *net::SocketAddress::parse(kDefaultListen);
  std::vector<PeerRoute> peers;
  PeerAuthentication peer_authentication = PeerAuthentication::kStrict;
  std::chrono::milliseconds timeout = kDefaultAttestationTimeout;
  std::vector<WorkloadIdentity> workloads;
};

struct ApiConfig {
  std::string socket = kDefaultApiSocket;
  std::string group;  // empty: root only
  // Prometheus exposition, /healthz and /readyz over HTTP; none: off.
  std::optional<net::SocketAddress> metrics;
};

struct Config {
  std::string file;  // where it came from, empty for flags only
  datapath::DatapathOptions datapath;
  std::optional<IdentityConfig> identity;
  AttestationConfig attestation;
  ApiConfig api;
  std::string log_level = "info";
  std::string log_format = "text";  // or "json"
};

// args: the command line after the subcommand, e.g. {"--config", "f.conf"}.
Result<Config> load(const std::vector<std::string>& args);

// Loads every configured bundle into one set (a store per trust domain).
Result<tls::BundleSet> load_bundles(const IdentityConfig& identity);

// Only the pin directory: --pin-dir, else the pin-dir key of --config FILE,
// else the default. For commands that read the pinned maps.
Result<std::string> load_pin_dir(const std::vector<std::string>& args);

// Where the CLI finds a running agent and its maps, from --api-socket,
// --pin-dir or the keys of --config FILE, else the defaults.
struct ClientPaths {
  std::string pin_dir;
  std::string api_socket;
};
Result<ClientPaths> load_client_paths(const std::vector<std::string>& args);

// Help text of every key, for `trustfence agent --help`.
std::string describe_keys();

}  // namespace trustfence::config
