#pragma once

// Several "nodes" on one host: each node is a network namespace with one
// veth (eth0) into a "switch" namespace that bridges them all. Every link
// is created inside the namespaces, so nothing shows up in (or collides
// with) this host's own netns, and nodes have no route anywhere but each
// other: 10.231.0.0/24 and fd00:231::/64.
//
//   node i (0-based): netns "<name>-n<i>", eth0 = 10.231.0.(i+1)/24,
//                     fd00:231::(i+1)/64 (no DAD: usable at once), lo up
//   switch:           netns "<name>-sw", bridge br0, ports p<i>
//
// <name> is "tf-e2e-<pid>-<n>", unique per run and per topology.
//
// A netns lives on while a process is inside it: declare a Topology before
// the Children spawned into it, so they are stopped first.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "trustfence/common/result.hpp"

namespace trustfence::testing::e2e {

class Topology {
 public:
  // The limit of the /24 (node i takes host number i + 1).
  static constexpr std::size_t kMaxNodes = 254;
  static constexpr const char* kInterface = "eth0";

  // Sweeps what dead e2e runs left (sweep_stale_e2e_leftovers), then builds it.
  // On failure everything made so far is deleted again.
  static Result<Topology> create(std::size_t nodes);

  Topology(Topology&& other) noexcept;
  Topology& operator=(Topology&& other) noexcept;
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;
  ~Topology();  // destroy(); a failure is a warning on stderr

  // Deletes every netns it made (their links go with them).
  Result<void> destroy();

  // "tf-e2e-<pid>-<n>": the prefix of all its netns names.
  const std::string& name() const { return name_; }
  std::size_t size() const { return nodes_.size(); }
  // Node i's netns name (for SpawnOptions::netns).
  const std::string& node(std::size_t i) const { return nodes_.at(i); }
  const std::string& switch_netns() const { return switch_; }
  std::string ipv4(std::size_t i) const;
  std::string ipv6(std::size_t i) const;
  // "10.231.0.2:80", "[fd00:231::2]:80"
  std::string ipv4_endpoint(std::size_t i, std::uint16_t port) const;
  std::string ipv6_endpoint(std::size_t i, std::uint16_t port) const;

 private:
  explicit Topology(std::string name) : name_(std::move(name)) {}

  Result<void> add_netns(const std::string& netns);
  Result<void> build_switch();
  Result<void> add_node(std::size_t i);

  std::string name_;
  std::string switch_;
  std::vector<std::string> nodes_;
  std::vector<std::string> made_;  // every netns created, deleted in reverse
};

// Deletes e2e namespaces, cgroups, pin directories and temporary files
// whose creating pid no longer runs (a crashed or killed run).
void sweep_stale_e2e_leftovers();

// The netns names `ip netns list` shows.
Result<std::vector<std::string>> list_netns();

}  // namespace trustfence::testing::e2e
