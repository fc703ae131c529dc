#include "trustfence/attest/workloads.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "trustfence/datapath/host.hpp"

namespace trustfence::attest {

namespace fs = std::filesystem;

WorkloadIdentities::WorkloadIdentities(identity::SpiffeId agent_id,
                                       std::vector<config::WorkloadIdentity> entries)
    : agent_id_(std::move(agent_id)), entries_(std::move(entries)) {
  // Shallow paths first, so a deeper (more specific) entry overwrites.
  std::stable_sort(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) {
    return std::count(a.cgroup.begin(), a.cgroup.end(), '/') <
           std::count(b.cgroup.begin(), b.cgroup.end(), '/');
  });
  if (!entries_.empty()) rescan();
}

const identity::SpiffeId& WorkloadIdentities::lookup(std::uint64_t cgroup_id) {
  if (entries_.empty()) return agent_id_;
  auto it = by_cgroup_.find(cgroup_id);
  if (it == by_cgroup_.end() &&
      std::chrono::steady_clock::now() - last_scan_ > std::chrono::seconds(1)) {
    rescan();
    it = by_cgroup_.find(cgroup_id);
  }
  return it == by_cgroup_.end() ? agent_id_ : entries_[it->second].id;
}

void WorkloadIdentities::rescan() {
  last_scan_ = std::chrono::steady_clock::now();
  by_cgroup_.clear();
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    auto root = datapath::resolve_cgroup(entries_[i].cgroup);
    if (!root) {
      spdlog::warn("workload-id {}: {}", entries_[i].cgroup, root.error().message);
      continue;
    }
    std::error_code ec;
    auto visit = [&](const fs::path& dir) {
      if (auto id = datapath::cgroup_id(dir.string()); id) by_cgroup_[*id] = i;
    };
    visit(*root);
    fs::recursive_directory_iterator walk(*root, fs::directory_options::skip_permission_denied, ec);
    std::size_t seen = 0;
    for (; !ec && walk != fs::recursive_directory_iterator(); walk.increment(ec)) {
      if (walk.depth() >= kMaxDepth) {
        walk.disable_recursion_pending();
        continue;
      }
      if (!walk->is_directory(ec)) continue;
      if (++seen > kMaxCgroups) {
        spdlog::warn("workload-id {}: more than {} cgroups below, the rest keep the agent's ID",
                     entries_[i].cgroup, kMaxCgroups);
        break;
      }
      visit(walk->path());
    }
  }
}

}  // namespace trustfence::attest
