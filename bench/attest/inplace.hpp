#pragma once

// Scenario 1 in place: what tf_egress / tf_ingress cost per packet while
// attached to a real cgroup under real traffic, from the kernel's BPF
// run-time statistics (run_cnt, run_time_ns; BPF_ENABLE_STATS). The
// statistics add their own clock reads to every run, so the floor is an
// empty cgroup_skb program attached the same way (a cgroup link, each
// direction) to the baseline's cgroups and measured under the same traffic:
// the cost of the enforcement is the difference.

#include <bpf/libbpf.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"

struct tf_empty_skb;

namespace trustfence::bench::attest {

// Runs and nanoseconds summed over a set of programs.
struct RunTotals {
  std::uint64_t runs = 0;
  std::uint64_t ns = 0;
  double ns_per_run() const { return runs ? static_cast<double>(ns) / runs : 0; }
};
RunTotals operator-(const RunTotals& a, const RunTotals& b);

// Ids of the programs attached to a cgroup v2 directory for one attach
// type (BPF_CGROUP_INET_EGRESS, BPF_CGROUP_INET_INGRESS).
Result<std::vector<std::uint32_t>> attached_programs(const std::string& cgroup,
                                                     bpf_attach_type type);
Result<RunTotals> run_totals(const std::vector<std::uint32_t>& program_ids);

// The empty program attached to cgroups, egress and ingress; detached on
// destruction.
class EmptyPrograms {
 public:
  static Result<EmptyPrograms> attach(const std::vector<std::string>& cgroups);
  EmptyPrograms(EmptyPrograms&&) noexcept = default;
  ~EmptyPrograms();

  const std::vector<std::uint32_t>& egress() const { return egress_ids_; }
  const std::vector<std::uint32_t>& ingress() const { return ingress_ids_; }

 private:
  struct SkelDeleter {
    void operator()(tf_empty_skb* skel) const;
  };
  struct LinkDeleter {
    void operator()(bpf_link* link) const { bpf_link__destroy(link); }
  };
  EmptyPrograms() = default;

  // Links first in destruction order: detached before the programs go.
  std::unique_ptr<tf_empty_skb, SkelDeleter> egress_skel_, ingress_skel_;
  std::vector<std::unique_ptr<bpf_link, LinkDeleter>> links_;
  std::vector<std::uint32_t> egress_ids_, ingress_ids_;
};

}  // namespace trustfence::bench::attest
