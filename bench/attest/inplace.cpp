#include "inplace.hpp"

#include <bpf/bpf.h>
#include <fcntl.h>

#include <cerrno>

#include "tf_empty_skb.skel.h"

namespace trustfence::bench::attest {
namespace {

Result<UniqueFd> open_cgroup(const std::string& cgroup) {
  UniqueFd fd(::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail_errno("opening cgroup " + cgroup, errno);
  return fd;
}

Result<std::uint32_t> program_id(int prog_fd) {
  bpf_prog_info info{};
  __u32 len = sizeof(info);
  if (int err = bpf_obj_get_info_by_fd(prog_fd, &info, &len); err != 0)
    return fail_errno("reading BPF program info", -err);
  return info.id;
}

}  // namespace

RunTotals operator-(const RunTotals& a, const RunTotals& b) {
  return {a.runs - b.runs, a.ns - b.ns};
}

Result<std::vector<std::uint32_t>> attached_programs(const std::string& cgroup,
                                                     bpf_attach_type type) {
  auto fd = open_cgroup(cgroup);
  if (!fd) return std::unexpected(fd.error());
  std::vector<std::uint32_t> ids(64);
  __u32 count = static_cast<__u32>(ids.size());
  __u32 flags = 0;
  if (int err = bpf_prog_query(fd->get(), type, 0, &flags, ids.data(), &count); err != 0)
    return fail_errno("querying the programs attached to " + cgroup, -err);
  ids.resize(count);
  if (ids.empty()) return fail(Errc::kIo, "no program attached to " + cgroup);
  return ids;
}

Result<RunTotals> run_totals(const std::vector<std::uint32_t>& program_ids) {
  RunTotals total;
  for (std::uint32_t id : program_ids) {
    UniqueFd fd(bpf_prog_get_fd_by_id(id));
    if (!fd) return fail_errno("opening BPF program id " + std::to_string(id), errno);
    bpf_prog_info info{};
    __u32 len = sizeof(info);
    if (int err = bpf_obj_get_info_by_fd(fd.get(), &info, &len); err != 0)
      return fail_errno("reading BPF program info", -err);
    total.runs += info.run_cnt;
    total.ns += info.run_time_ns;
  }
  return total;
}

void EmptyPrograms::SkelDeleter::operator()(tf_empty_skb* skel) const {
  tf_empty_skb__destroy(skel);
}

EmptyPrograms::~EmptyPrograms() { links_.clear(); }

Result<EmptyPrograms> EmptyPrograms::attach(const std::vector<std::string>& cgroups) {
  EmptyPrograms progs;
  // The object's one program is an egress program; the ingress copy is
  // told its attach type before loading (the kernel enforces it).
  progs.egress_skel_.reset(tf_empty_skb__open_and_load());
  if (!progs.egress_skel_) return fail(Errc::kIo, "loading bench/bpf/empty_skb.bpf.c failed");
  progs.ingress_skel_.reset(tf_empty_skb__open());
  if (!progs.ingress_skel_) return fail(Errc::kIo, "opening bench/bpf/empty_skb.bpf.c failed");
  bpf_program__set_expected_attach_type(progs.ingress_skel_->progs.tf_empty_skb,
                                        BPF_CGROUP_INET_INGRESS);
  if (tf_empty_skb__load(progs.ingress_skel_.get()) != 0)
    return fail(Errc::kIo, "loading the ingress copy of the empty program failed");
  for (const auto& cgroup : cgroups) {
    auto fd = open_cgroup(cgroup);
    if (!fd) return std::unexpected(fd.error());
    for (auto* skel : {progs.egress_skel_.get(), progs.ingress_skel_.get()}) {
      bpf_link* link = bpf_program__attach_cgroup(skel->progs.tf_empty_skb, fd->get());
      if (!link) return fail_errno("attaching the empty program to " + cgroup, errno);
      progs.links_.emplace_back(link);
    }
  }
  auto egress = program_id(bpf_program__fd(progs.egress_skel_->progs.tf_empty_skb));
  if (!egress) return std::unexpected(egress.error());
  auto ingress = program_id(bpf_program__fd(progs.ingress_skel_->progs.tf_empty_skb));
  if (!ingress) return std::unexpected(ingress.error());
  progs.egress_ids_ = {*egress};
  progs.ingress_ids_ = {*ingress};
  return progs;
}

}  // namespace trustfence::bench::attest
