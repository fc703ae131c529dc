#include "support/e2e/cluster.hpp"

#include <signal.h>
#include <sys/stat.h>

#include <openssl/pem.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "support/e2e/netns.hpp"
#include "support/process.hpp"

namespace trustfence::testing::e2e {
namespace {

Result<void> write_file(const std::string& path, const std::string& text, mode_t mode = 0644) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return fail(Errc::kIo, "cannot write " + path);
  ::chmod(path.c_str(), mode);
  return {};
}

std::string endpoint_ip(const std::string& endpoint) {
  auto colon = endpoint.rfind(':');
  auto host = endpoint.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return host;
}

std::uint16_t endpoint_port(const std::string& endpoint) {
  return static_cast<std::uint16_t>(std::stoul(endpoint.substr(endpoint.rfind(':') + 1)));
}

}  // namespace

Cluster::Cluster(std::string trust_domain)
    : trust_domain_(std::move(trust_domain)), ca_(test::TestCa::root(trust_domain_)) {}

test::Issued Cluster::issue(const std::string& spiffe_id) const {
  return ca_.issue(test::leaf_spec(spiffe_id));
}

std::string Cluster::agent_id() const {
  return "spiffe://" + trust_domain_ + "/ns/trustfence/sa/agent";
}

Result<std::unique_ptr<AgentNode>> AgentNode::start(const Topology& topology, const AgentSpec& spec,
                                                    const TempDir& dir,
                                                    const std::string& trustfence_binary) {
  std::unique_ptr<AgentNode> node(new AgentNode());
  node->spec_ = spec;
  node->binary_ = trustfence_binary;
  node->netns_ = topology.node(spec.node);
  node->dir_ = dir.path() + "/" + spec.name;
  std::filesystem::create_directories(node->dir_);
  node->config_path_ = node->dir_ + "/agent.conf";
  node->api_socket_ = node->dir_ + "/api.sock";
  node->log_path_ = node->dir_ + "/agent.log";
  node->pin_dir_ = "/sys/fs/bpf/" + kernel::unique_test_name(kE2ePrefix);
  auto cgroup = kernel::TestCgroup::create(kE2ePrefix);
  if (!cgroup) return std::unexpected(cgroup.error());
  node->cgroup_.emplace(std::move(*cgroup));
  for (const auto& [name, id] : spec.workloads) {
    if (::mkdir(node->cgroup(name).c_str(), 0755) != 0)
      return fail_errno("mkdir " + node->cgroup(name), errno);
  }

  const Cluster& cluster = *spec.cluster;
  const Cluster& signer = spec.svid_signer ? *spec.svid_signer : cluster;
  auto svid = signer.issue(spec.svid_id.empty() ? cluster.agent_id() : spec.svid_id);
  if (auto ok = write_file(node->dir_ + "/svid.pem", test::to_pem(svid.cert.get())); !ok)
    return std::unexpected(ok.error());
  if (auto ok = write_file(node->dir_ + "/svid.key", test::to_pem(svid.key.get()), 0600); !ok)
    return std::unexpected(ok.error());
  if (auto ok = node->write_config({}); !ok) return std::unexpected(ok.error());
  if (auto ok = node->launch(); !ok) return std::unexpected(ok.error());
  return node;
}

Result<void> AgentNode::write_config(const std::vector<std::string>& extra) {
  const Cluster& cluster = *spec_.cluster;
  const Cluster& own_bundle = spec_.own_bundle ? *spec_.own_bundle : cluster;
  std::string text = "# " + spec_.name + ", written by the e2e support\n";
  text += "cgroup = " + cgroup_->path() + "\n";
  text += "pin-dir = " + pin_dir_ + "\n";
  text += "api-socket = " + api_socket_ + "\n";
  text += "trust-domain = " + cluster.trust_domain() + "\n";
  text += "svid-cert = " + dir_ + "/svid.pem\n";
  text += "svid-key = " + dir_ + "/svid.key\n";
  text += "log-level = " + spec_.log_level + "\n";
  std::vector<std::pair<std::string, const Cluster*>> bundles = {
      {cluster.trust_domain(), &own_bundle}};
  for (const Cluster* other : spec_.bundles)
    if (other->trust_domain() != cluster.trust_domain())
      bundles.emplace_back(other->trust_domain(), other);
  for (const auto& [td, source] : bundles) {
    std::string path = dir_ + "/bundle-" + td + ".pem";
    if (auto ok = write_file(path, source->bundle_pem()); !ok) return ok;
    text += "trust-bundle = " + td + ":" + path + "\n";
  }
  for (const auto& [name, id] : spec_.workloads)
    text += "workload-id = " + cgroup(name) + ":" + id + "\n";
  for (const auto& line : spec_.config) text += line + "\n";
  for (const auto& line : extra) text += line + "\n";
  return write_file(config_path_, text);
}

Result<void> AgentNode::launch() {
  auto child = spawn({.netns = netns_,
                      .argv = {binary_, "agent", "--config", config_path_},
                      .stdout_path = log_path_,
                      .stderr_path = log_path_});
  if (!child) return std::unexpected(child.error());
  agent_.emplace(std::move(*child));
  if (auto ok = wait_for_tcp_listen(netns_, 7400, kReadyTimeout, &*agent_); !ok)
    return fail(ok.error().code, spec_.name + ": " + ok.error().message);
  // The API comes up after the channel listener; wait for it to answer.
  auto deadline = std::chrono::steady_clock::now() + kReadyTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto stats = run_command(
        {binary_, "stats", "--json", "--api-socket", api_socket_, "--pin-dir", pin_dir_});
    if (stats && stats->exit_code == 0 && stats->out.find("channels") != std::string::npos)
      return {};
    if (!agent_->running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto log_text = log();
  return fail(Errc::kIo, spec_.name + ": the agent did not come up; its log:\n" +
                             (log_text ? *log_text : log_text.error().message));
}

void AgentNode::stop() {
  if (agent_) agent_->terminate();
  agent_.reset();
}

Result<void> AgentNode::restart(const std::vector<std::string>& extra_config) {
  stop();
  if (auto ok = write_config(extra_config); !ok) return ok;
  return launch();
}

Result<int> AgentNode::stop_agent(int signal) {
  if (!agent_) return fail(Errc::kInvalidArgument, spec_.name + ": no agent runs");
  // The agent alone, not its process group: nothing but it may see the signal.
  if (agent_->running() && ::kill(agent_->pid(), signal) != 0)
    return fail_errno(spec_.name + ": signal " + std::to_string(signal) + " to the agent", errno);
  auto exit = agent_->wait(kTerminateGrace);
  if (!exit) return fail(exit.error().code, spec_.name + ": " + exit.error().message);
  agent_.reset();
  return *exit;
}

void AgentNode::kill_hard() {
  if (auto exit = stop_agent(SIGKILL); !exit)
    std::fprintf(stderr, "kill_hard: %s\n", exit.error().message.c_str());
}

Result<void> AgentNode::start_again() {
  if (agent_running()) return fail(Errc::kInvalidArgument, spec_.name + ": the agent still runs");
  agent_.reset();
  return launch();
}

bool AgentNode::agent_running() { return agent_ && agent_->running(); }

AgentNode::~AgentNode() {
  stop();
  if (cgroup_) {
    run_command({binary_, "agent", "--uninstall", "--pin-dir", pin_dir_});
    for (const auto& [name, id] : spec_.workloads) ::rmdir(cgroup(name).c_str());
  }
}

Result<void> AgentNode::update_config(const std::vector<std::string>& config) {
  spec_.config = config;
  return write_config({});
}

Result<void> AgentNode::write_raw_config(const std::string& text) {
  return write_file(config_path_, text);
}

Result<void> AgentNode::replace_bundle(const std::string& td, const Cluster& source) {
  // Written aside and renamed over: the agent never reads half a file.
  std::string path = dir_ + "/bundle-" + td + ".pem";
  if (auto ok = write_file(path + ".new", source.bundle_pem()); !ok) return ok;
  if (::rename((path + ".new").c_str(), path.c_str()) != 0)
    return fail_errno("rename over " + path, errno);
  return {};
}

Result<void> AgentNode::send_sighup() {
  if (!agent_ || ::kill(agent_->pid(), SIGHUP) != 0)
    return fail_errno("SIGHUP to the agent", errno);
  return {};
}

Result<nlohmann::json> AgentNode::stats() const {
  auto result = run_command({binary_, "stats", "--json", "--api-socket", api_socket_});
  if (!result) return std::unexpected(result.error());
  if (result->exit_code != 0)
    return fail(Errc::kIo, spec_.name + ": trustfence stats failed: " + result->err);
  try {
    return nlohmann::json::parse(result->out);
  } catch (const nlohmann::json::exception& e) {
    return fail(Errc::kIo, spec_.name + ": trustfence stats printed no JSON: " + e.what());
  }
}

std::string AgentNode::cgroup(const std::string& workload) const {
  return workload.empty() ? cgroup_->path() : cgroup_->path() + "/" + workload;
}

Result<nlohmann::json> AgentNode::conns() const {
  auto result = run_command(
      {binary_, "conns", "--json", "--closed", "--api-socket", api_socket_, "--pin-dir", pin_dir_});
  if (!result) return std::unexpected(result.error());
  if (result->exit_code != 0)
    return fail(Errc::kIo, spec_.name + ": trustfence conns failed: " + result->err);
  try {
    return nlohmann::json::parse(result->out);
  } catch (const nlohmann::json::exception& e) {
    return fail(Errc::kIo, spec_.name + ": trustfence conns printed no JSON: " + e.what());
  }
}

Result<std::string> AgentNode::conns_table() const {
  auto result = run_command(
      {binary_, "conns", "--closed", "--api-socket", api_socket_, "--pin-dir", pin_dir_});
  if (!result) return std::unexpected(result.error());
  return result->out + result->err;
}

Result<std::string> AgentNode::log() const {
  std::ifstream in(log_path_);
  if (!in) return fail(Errc::kIo, "cannot read " + log_path_);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Result<CommandResult> run_client(const std::string& netns, const std::string& cgroup,
                                 const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout) {
  return run_in({.netns = netns, .cgroup = cgroup, .argv = argv}, timeout);
}

nlohmann::json find_conn(const nlohmann::json& rows, const std::string& direction,
                         const std::string& peer_ip, std::uint16_t service_port) {
  nlohmann::json found = nullptr;
  for (const auto& row : rows) {
    if (row.value("direction", "") != direction) continue;
    if (endpoint_ip(row.value("remote", "")) != peer_ip) continue;
    auto port_of = direction == "outbound" ? row.value("remote", "") : row.value("local", "");
    if (endpoint_port(port_of) != service_port) continue;
    found = row;  // rows come oldest first
  }
  return found;
}

}  // namespace trustfence::testing::e2e
