#include "support/prog_test_run.hpp"

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <cerrno>
#include <chrono>
#include <string>

#include "tf_datapath.skel.h"
#include "tf_datapath_mark_cookie.skel.h"
#include "trustfence/datapath/datapath.hpp"

namespace trustfence::testing {

std::string_view to_string(DatapathBuild build) {
  switch (build) {
    case DatapathBuild::kMarkCookie:
      return "mark-cookie build";
    case DatapathBuild::kProduction:
      return "production build";
  }
  return "unknown";
}

Result<RunResult> test_run(int prog_fd, std::span<const std::uint8_t> frame, std::uint32_t mark,
                           std::uint32_t repeat) {
  __sk_buff ctx{};
  ctx.mark = mark;
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
              .data_size_in = static_cast<__u32>(frame.size()), .ctx_in = &ctx,
              .ctx_size_in = sizeof(ctx), .repeat = static_cast<int>(repeat));
  auto start = std::chrono::steady_clock::now();
  int err = bpf_prog_test_run_opts(prog_fd, &opts);
  auto wall = std::chrono::steady_clock::now() - start;
  if (err != 0) return fail_errno("BPF_PROG_TEST_RUN", -err);
  return RunResult{
      .retval = opts.retval,
      .duration_ns = opts.duration,
      .wall_ns = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(wall).count()),
  };
}

void TestDatapath::Deleter::operator()(tf_datapath* skel) const { tf_datapath__destroy(skel); }
void TestDatapath::Deleter::operator()(tf_datapath_mark_cookie* skel) const {
  tf_datapath_mark_cookie__destroy(skel);
}

TestDatapath::TestDatapath(TestDatapath&&) noexcept = default;
TestDatapath& TestDatapath::operator=(TestDatapath&&) noexcept = default;
TestDatapath::~TestDatapath() = default;

// Both builds come from the same sources: their skeletons have the same
// members.
template <typename Skeleton>
Result<void> TestDatapath::load(std::unique_ptr<Skeleton, Deleter>& owner,
                                Skeleton* (*open_skeleton)(), const TestDatapathOptions& options) {
  const std::string build = std::string(to_string(build_));
  owner.reset(open_skeleton());
  if (!owner) return fail_errno("opening the datapath BPF object (" + build + ")", errno);
  Skeleton* skel = owner.get();
  skel->rodata->tf_config.mode = static_cast<__u8>(options.mode);
  skel->rodata->tf_config.untracked_verdict = static_cast<__u8>(options.untracked_verdict);

  // Tests own private maps: nothing may land under /sys/fs/bpf.
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, skel->obj) {
    if (int err = bpf_map__set_pin_path(map, nullptr); err != 0)
      return fail_errno(std::string("unpinning map ") + bpf_map__name(map), -err);
  }
  // Only the programs under test are loaded.
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, skel->obj) {
    bool under_test = prog == skel->progs.tf_egress || prog == skel->progs.tf_ingress;
    if (int err = bpf_program__set_autoload(prog, under_test); err != 0)
      return fail_errno(std::string("choosing programs to load: ") + bpf_program__name(prog), -err);
  }
  if (int err = bpf_object__load(skel->obj); err != 0)
    return fail_errno("loading tf_egress and tf_ingress (" + build + ")", -err);

  object_ = skel->obj;
  egress_ = skel->progs.tf_egress;
  ingress_ = skel->progs.tf_ingress;
  auto conns = datapath::TypedMap<datapath::Cookie, tf_conn>::borrow(skel->maps.tf_conns);
  if (!conns) return std::unexpected(conns.error());
  auto exempt = datapath::TypedMap<tf_exempt_key, std::uint8_t>::borrow(skel->maps.tf_exempt);
  if (!exempt) return std::unexpected(exempt.error());
  auto stats = datapath::PerCpuArray<tf_stats>::borrow(skel->maps.tf_stats);
  if (!stats) return std::unexpected(stats.error());
  conns_.emplace(std::move(*conns));
  exempt_.emplace(std::move(*exempt));
  stats_.emplace(std::move(*stats));
  return {};
}

Result<TestDatapath> TestDatapath::open(const TestDatapathOptions& options) {
  TestDatapath dp;
  dp.build_ = options.build;
  auto loaded = options.build == DatapathBuild::kMarkCookie
                    ? dp.load(dp.mark_cookie_skel_, tf_datapath_mark_cookie__open, options)
                    : dp.load(dp.production_skel_, tf_datapath__open, options);
  if (!loaded) return std::unexpected(loaded.error());
  return dp;
}

int TestDatapath::program_fd(tf_packet_dir dir) const {
  return bpf_program__fd(dir == TF_PACKET_EGRESS ? egress_ : ingress_);
}

Result<void> TestDatapath::track(datapath::Cookie cookie, tf_verdict verdict, tf_reason reason) {
  tf_conn conn{};
  conn.verdict = static_cast<__u8>(verdict);
  conn.reason = static_cast<__u8>(reason);
  conn.direction = TF_DIRECTION_OUTBOUND;
  return conns_->update(cookie, conn);
}

Result<void> TestDatapath::exempt(const tf_exempt_key& key) {
  return exempt_->update(key, std::uint8_t{1});
}

Result<tf_stats> TestDatapath::stats() const {
  auto per_cpu = stats_->lookup(0);
  if (!per_cpu) return std::unexpected(per_cpu.error());
  return datapath::sum_stats(*per_cpu);
}

}  // namespace trustfence::testing
