#pragma once

// The datapath programs under BPF_PROG_TEST_RUN, for the bpf test tier and
// the per-packet cost benchmark.
//
// A test run hands a cgroup_skb program a dummy socket whose cookie nobody
// can predict, so the tests load the mark-cookie build
// (tests/bpf/datapath_mark_cookie.bpf.c): the sources under bpf/ built with
// TF_COOKIE_FROM_MARK, where tf_socket_cookie returns skb->mark. The
// production build is there for the benchmark, to time the real helper.
//
// Nothing is pinned and nothing is attached to a cgroup: the maps live as
// long as the TestDatapath.

#include <bpf/libbpf.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "trustfence/abi.h"
#include "trustfence/common/result.hpp"
#include "trustfence/datapath/conn_table.hpp"
#include "trustfence/datapath/typed_map.hpp"

struct tf_datapath;
struct tf_datapath_mark_cookie;

namespace trustfence::testing {

struct RunResult {
  std::uint32_t retval = 0;
  // Mean ns per run as the kernel measured it (whole ns, truncated).
  std::uint32_t duration_ns = 0;
  // Wall-clock ns of the whole BPF_PROG_TEST_RUN call (all repeats).
  std::uint64_t wall_ns = 0;
};

// Runs prog_fd on frame (Ethernet header first) `repeat` times, with the
// test-run context's skb->mark set to mark.
Result<RunResult> test_run(int prog_fd, std::span<const std::uint8_t> frame, std::uint32_t mark,
                           std::uint32_t repeat = 1);

// Which build of the datapath to load: they differ only in where
// tf_socket_cookie takes a packet's socket cookie from.
enum class DatapathBuild {
  kMarkCookie,  // tests/bpf/datapath_mark_cookie.bpf.c: skb->mark
  kProduction,  // bpf/datapath.bpf.c as shipped: bpf_get_socket_cookie
};
std::string_view to_string(DatapathBuild build);

struct TestDatapathOptions {
  tf_mode mode = TF_MODE_ENFORCE;
  tf_verdict untracked_verdict = TF_VERDICT_ALLOW;
  DatapathBuild build = DatapathBuild::kMarkCookie;
};

class TestDatapath {
 public:
  // Opens and loads tf_egress and tf_ingress of the chosen build (the other
  // programs are not loaded) with options as rodata, every map unpinned.
  static Result<TestDatapath> open(const TestDatapathOptions& options = {});

  TestDatapath(TestDatapath&&) noexcept;
  TestDatapath& operator=(TestDatapath&&) noexcept;
  ~TestDatapath();

  DatapathBuild build() const { return build_; }
  bpf_object* object() const { return object_; }
  int program_fd(tf_packet_dir dir) const;
  Result<RunResult> run(tf_packet_dir dir, std::span<const std::uint8_t> frame, std::uint32_t mark,
                        std::uint32_t repeat = 1) const {
    return test_run(program_fd(dir), frame, mark, repeat);
  }

  // A tf_conns entry under cookie with this verdict and reason, as the
  // agent would leave it.
  Result<void> track(datapath::Cookie cookie, tf_verdict verdict, tf_reason reason);
  Result<void> exempt(const tf_exempt_key& key);
  // tf_stats summed over CPUs.
  Result<tf_stats> stats() const;

 private:
  struct Deleter {
    void operator()(tf_datapath* skel) const;
    void operator()(tf_datapath_mark_cookie* skel) const;
  };

  TestDatapath() = default;
  template <typename Skeleton>
  Result<void> load(std::unique_ptr<Skeleton, Deleter>& owner, Skeleton* (*open_skeleton)(),
                    const TestDatapathOptions& options);

  DatapathBuild build_ = DatapathBuild::kMarkCookie;
  // Only the one of build_ is set.
  std::unique_ptr<tf_datapath_mark_cookie, Deleter> mark_cookie_skel_;
  std::unique_ptr<tf_datapath, Deleter> production_skel_;
  bpf_object* object_ = nullptr;
  bpf_program* egress_ = nullptr;
  bpf_program* ingress_ = nullptr;
  std::optional<datapath::TypedMap<datapath::Cookie, tf_conn>> conns_;
  std::optional<datapath::TypedMap<tf_exempt_key, std::uint8_t>> exempt_;
  std::optional<datapath::PerCpuArray<tf_stats>> stats_;
};

}  // namespace trustfence::testing
