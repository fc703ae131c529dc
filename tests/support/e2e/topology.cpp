#include "support/e2e/topology.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/e2e/child.hpp"
#include "support/e2e/netns.hpp"
#include "support/kernel/cgroup.hpp"
#include "support/process.hpp"

namespace trustfence::testing::e2e {
namespace fs = std::filesystem;
namespace {

constexpr const char* kBridge = "br0";

// Runs `ip args...`; a non-zero exit is an error carrying ip's stderr.
Result<void> ip(std::vector<std::string> args) {
  static const auto program = find_program("ip");
  if (!program) return std::unexpected(program.error());
  args.insert(args.begin(), *program);
  auto run = run_command(args);
  if (!run) return std::unexpected(run.error());
  if (run->exit_code != 0)
    return fail(Errc::kIo,
                join_argv(args) + ": exit " + std::to_string(run->exit_code) + ": " + run->err);
  return {};
}

// A node's static address must work at once: no duplicate address
// detection, on the address itself (nodad) and for eth0's link-local one.
Result<void> disable_dad(const std::string& netns) {
  return in_netns(netns, []() -> Result<void> {
    for (const char* conf : {"all", "default"}) {
      auto path = std::string("/proc/sys/net/ipv6/conf/") + conf + "/accept_dad";
      std::ofstream out(path);
      out << "0\n";
      out.close();
      if (!out) return fail_errno("writing 0 to " + path, errno ? errno : EIO);
    }
    return {};
  });
}

}  // namespace

Result<std::vector<std::string>> list_netns() {
  auto program = find_program("ip");
  if (!program) return std::unexpected(program.error());
  auto run = run_command({*program, "netns", "list"});
  if (!run) return std::unexpected(run.error());
  if (run->exit_code != 0) return fail(Errc::kIo, "ip netns list: " + run->err);
  std::vector<std::string> names;
  std::istringstream lines(run->out);
  std::string line;
  // "name" or "name (id: 3)"
  while (std::getline(lines, line))
    if (auto name = line.substr(0, line.find(' ')); !name.empty()) names.push_back(name);
  return names;
}

void sweep_stale_e2e_leftovers() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(kNetnsDir, ec)) {
    auto name = entry.path().filename().string();
    if (!kernel::is_stale_test_name(name, kE2ePrefix)) continue;
    // A parallel run may sweep the same name first: only a netns still
    // there is worth a warning.
    if (auto gone = ip({"netns", "del", name}); !gone && fs::exists(entry.path()))
      std::fprintf(stderr, "warning: sweeping stale netns: %s\n", gone.error().message.c_str());
  }
  for (const auto& entry : fs::directory_iterator(fs::temp_directory_path(), ec)) {
    if (kernel::is_stale_test_name(entry.path().filename().string(), kE2ePrefix)) {
      std::error_code ignored;  // a parallel run may remove it first
      fs::remove_all(entry.path(), ignored);
    }
  }
  kernel::sweep_stale_test_leftovers(kE2ePrefix);
}

Result<Topology> Topology::create(std::size_t nodes) {
  if (nodes == 0 || nodes > kMaxNodes)
    return fail(Errc::kInvalidArgument, "a topology has 1 to " + std::to_string(kMaxNodes) +
                                            " nodes, not " + std::to_string(nodes));
  sweep_stale_e2e_leftovers();
  Topology topology(kernel::unique_test_name(kE2ePrefix));
  if (auto ok = topology.build_switch(); !ok) return std::unexpected(ok.error());
  for (std::size_t i = 0; i < nodes; ++i)
    if (auto ok = topology.add_node(i); !ok) return std::unexpected(ok.error());
  return topology;
}

Result<void> Topology::add_netns(const std::string& netns) {
  if (auto ok = ip({"netns", "add", netns}); !ok) return ok;
  made_.push_back(netns);
  return ip({"-n", netns, "link", "set", "lo", "up"});
}

Result<void> Topology::build_switch() {
  switch_ = name_ + "-sw";
  if (auto ok = add_netns(switch_); !ok) return ok;
  // No STP: ports forward as soon as they are up. No multicast snooping:
  // neighbour discovery is flooded without waiting for a querier.
  if (auto ok = ip({"-n", switch_, "link", "add", kBridge, "type", "bridge", "stp_state", "0",
                    "mcast_snooping", "0"});
      !ok)
    return ok;
  return ip({"-n", switch_, "link", "set", kBridge, "up"});
}

Result<void> Topology::add_node(std::size_t i) {
  const auto netns = name_ + "-n" + std::to_string(i);
  const auto port = "p" + std::to_string(i);
  if (auto ok = add_netns(netns); !ok) return ok;
  nodes_.push_back(netns);
  // Before eth0 exists, so it inherits the default.
  if (auto ok = disable_dad(netns); !ok) return ok;
  const std::vector<std::vector<std::string>> steps = {
      {"-n", netns, "link", "add", kInterface, "type", "veth", "peer", "name", port, "netns",
       switch_},
      {"-n", switch_, "link", "set", port, "master", kBridge},
      {"-n", switch_, "link", "set", port, "up"},
      {"-n", netns, "addr", "add", ipv4(i) + "/24", "dev", kInterface},
      {"-n", netns, "addr", "add", ipv6(i) + "/64", "dev", kInterface, "nodad"},
      {"-n", netns, "link", "set", kInterface, "up"},
  };
  for (const auto& step : steps)
    if (auto ok = ip(step); !ok) return ok;
  return {};
}

Topology::Topology(Topology&& other) noexcept
    : name_(std::move(other.name_)),
      switch_(std::move(other.switch_)),
      nodes_(std::move(other.nodes_)),
      made_(std::exchange(other.made_, {})) {}

Topology& Topology::operator=(Topology&& other) noexcept {
  if (this != &other) {
    (void)destroy();
    name_ = std::move(other.name_);
    switch_ = std::move(other.switch_);
    nodes_ = std::move(other.nodes_);
    made_ = std::exchange(other.made_, {});
  }
  return *this;
}

Topology::~Topology() {
  if (auto ok = destroy(); !ok) std::fprintf(stderr, "warning: %s\n", ok.error().message.c_str());
}

Result<void> Topology::destroy() {
  Result<void> first_failure;
  // Nodes first: deleting a node's netns takes its veth pair, and so the
  // bridge port, with it.
  while (!made_.empty()) {
    auto netns = std::move(made_.back());
    made_.pop_back();
    auto gone = ip({"netns", "del", netns});
    if (!gone && first_failure) first_failure = gone;
  }
  return first_failure;
}

std::string Topology::ipv4(std::size_t i) const { return "10.231.0." + std::to_string(i + 1); }

// The same digits as the IPv4 host number (node 9: .10 and ::10), read
// as hex by IPv6; still one address per node.
std::string Topology::ipv6(std::size_t i) const { return "fd00:231::" + std::to_string(i + 1); }

std::string Topology::ipv4_endpoint(std::size_t i, std::uint16_t port) const {
  return ipv4(i) + ":" + std::to_string(port);
}

std::string Topology::ipv6_endpoint(std::size_t i, std::uint16_t port) const {
  return "[" + ipv6(i) + "]:" + std::to_string(port);
}

}  // namespace trustfence::testing::e2e
