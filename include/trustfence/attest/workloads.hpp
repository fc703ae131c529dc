#pragma once

// Which SPIFFE ID the agent vouches for on behalf of a socket, by the
// socket's cgroup: the workload-id entry of the nearest configured
// ancestor cgroup, else the agent's own ID.

#include <chrono>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "trustfence/config/config.hpp"
#include "trustfence/identity/spiffe_id.hpp"

namespace trustfence::attest {

class WorkloadIdentities {
 public:
  // Bounds on the cgroup walk.
  static constexpr int kMaxDepth = 32;
  static constexpr std::size_t kMaxCgroups = 100'000;

  WorkloadIdentities(identity::SpiffeId agent_id, std::vector<config::WorkloadIdentity> entries);

  // Rescans the configured cgroups when the id is unknown, at most once a
  // second; a cgroup created since is then found.
  const identity::SpiffeId& lookup(std::uint64_t cgroup_id);
  const identity::SpiffeId& agent_id() const { return agent_id_; }

 private:
  void rescan();

  identity::SpiffeId agent_id_;
  std::vector<config::WorkloadIdentity> entries_;
  std::unordered_map<std::uint64_t, std::size_t> by_cgroup_;  // -> index in entries_
  std::chrono::steady_clock::time_point last_scan_{};
};

}  // namespace trustfence::attest
