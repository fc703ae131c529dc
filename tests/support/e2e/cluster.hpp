#pragma once

// The seed scenario's building blocks: trust domains with their own CA
// minted at run time, and one trustfence agent per topology node, each
// enforcing its own cgroup with its own pins, API socket and config.
// Shared by the e2e tests and the demo.

#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "support/e2e/child.hpp"
#include "support/e2e/temp_dir.hpp"
#include "support/e2e/topology.hpp"
#include "support/kernel/cgroup.hpp"
#include "support/test_ca.hpp"

namespace trustfence::testing::e2e {

// One trust domain and its CA.
class Cluster {
 public:
  explicit Cluster(std::string trust_domain);

  const std::string& trust_domain() const { return trust_domain_; }
  std::string bundle_pem() const { return ca_.pem(); }
  // An X.509-SVID for id, signed by this cluster's CA.
  test::Issued issue(const std::string& spiffe_id) const;
  // The ID agents of this cluster present by default.
  std::string agent_id() const;

 private:
  std::string trust_domain_;
  test::TestCa ca_;
};

struct AgentSpec {
  std::string name;      // for files and messages: "node1"
  std::size_t node = 0;  // topology node it runs in
  const Cluster* cluster = nullptr;
  // Bundles it holds (its own domain's is added): federation gives every
  // node every bundle; policy decides whom to accept.
  std::vector<const Cluster*> bundles{};
  // Further config lines: aliases, allow-id, peer-authentication, ...
  std::vector<std::string> config{};
  // Its SVID: the cluster's agent ID signed by the cluster's CA unless
  // overridden (a spoofer claims another domain's ID with its own CA).
  std::string svid_id{};
  const Cluster* svid_signer = nullptr;
  // The bundle it trusts for its own domain (a spoofer's own idea of it).
  const Cluster* own_bundle = nullptr;
  // Sub-cgroups of its enforced cgroup and the IDs vouched for them.
  std::vector<std::pair<std::string, std::string>> workloads{};
  // debug: one line per verdict, which tests read back (restart, scenario);
  // benchmarks run as deployed, at info.
  std::string log_level = "debug";
};

class AgentNode {
 public:
  // Writes certificates, bundles and config under dir, starts the agent
  // in the node's netns and waits until its API and channel listen.
  static Result<std::unique_ptr<AgentNode>> start(const Topology& topology, const AgentSpec& spec,
                                                  const TempDir& dir,
                                                  const std::string& trustfence_binary);
  ~AgentNode();
  AgentNode(const AgentNode&) = delete;
  AgentNode& operator=(const AgentNode&) = delete;

  // Stops the agent and starts it again with extra config lines (pins, and
  // so verdicts, are kept).
  Result<void> restart(const std::vector<std::string>& extra_config);

  // Sends signal to the agent process alone and waits until it is gone:
  // its exit status as a shell tells it (137 for SIGKILL). The pins, and so
  // enforcement and verdicts, stay; nobody answers the API until
  // start_again(). SIGKILL is a crash or the OOM killer, SIGTERM a clean stop.
  Result<int> stop_agent(int signal);
  // stop_agent(SIGKILL), failures reported on stderr.
  void kill_hard();
  // Starts the agent again with the configuration as it stands and waits
  // until its API and channel listen, as start() does. Its log starts
  // over: read log() before, to keep the earlier run's.
  Result<void> start_again();
  bool agent_running();

  // Rewrites the config with these lines in place of the spec's, without a
  // restart: the agent's file watch reloads it (or send_sighup()).
  Result<void> update_config(const std::vector<std::string>& config);
  // Replaces the config file with text as is (e.g. a broken one).
  Result<void> write_raw_config(const std::string& text);
  Result<void> send_sighup();
  // Overwrites the bundle file of trust domain td with source's CA (a CA
  // rotated away, or a spoofer's idea of it); the file watch reloads.
  Result<void> replace_bundle(const std::string& td, const Cluster& source);
  // `trustfence stats --json` of this agent.
  Result<nlohmann::json> stats() const;

  const std::string& name() const { return spec_.name; }
  const std::string& netns() const { return netns_; }
  // The enforced cgroup, or one of the spec's workload sub-cgroups.
  std::string cgroup(const std::string& workload = "") const;
  const std::string& api_socket() const { return api_socket_; }
  const std::string& pin_dir() const { return pin_dir_; }

  // `trustfence conns --json --closed` against this node's agent.
  Result<nlohmann::json> conns() const;
  // `trustfence conns` (the table) for people.
  Result<std::string> conns_table() const;
  Result<std::string> log() const;

 private:
  AgentNode() = default;
  Result<void> write_config(const std::vector<std::string>& extra);
  Result<void> launch();
  void stop();

  AgentSpec spec_;
  std::string binary_;
  std::string netns_;
  std::string dir_;
  std::string config_path_;
  std::string api_socket_;
  std::string pin_dir_;
  std::string log_path_;
  std::optional<kernel::TestCgroup> cgroup_;
  std::optional<Child> agent_;
};

// Runs a client inside node netns and cgroup: exit code and output.
Result<CommandResult> run_client(const std::string& netns, const std::string& cgroup,
                                 const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(20));

// The newest row of conns() of a connection with the peer at peer_ip
// ("10.231.0.2", "fd00:231::2") on service_port (the remote port of an
// outbound connection, the local port of an inbound one); null if none.
nlohmann::json find_conn(const nlohmann::json& rows, const std::string& direction,
                         const std::string& peer_ip, std::uint16_t service_port);

}  // namespace trustfence::testing::e2e
