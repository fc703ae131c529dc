#pragma once

// A real cgroup v2 for the kernel tier and the connection benchmarks: a
// uniquely named directory under the cgroup v2 mount (found in
// /proc/mounts, never assumed), and a scoped move of this process into it.
// Sockets keep the cgroup they were created in, so callers create their
// sockets while a CgroupMembership is alive.

#include <cstdint>
#include <string>
#include <string_view>

#include "trustfence/common/result.hpp"

namespace trustfence::testing::kernel {

// Prefix of every cgroup and pin directory the kernel tier creates, followed
// by the creating pid, so a later run can sweep what a killed run left.
// Other users (bench/conn) pass a prefix of their own.
inline constexpr std::string_view kTestPrefix = "tf-ktest-";

// A unique name "<prefix><pid>-<n>" for a cgroup or a pin directory.
std::string unique_test_name(std::string_view prefix = kTestPrefix);

// True for "<prefix><pid>-<n>" whose pid no longer runs.
bool is_stale_test_name(const std::string& name, std::string_view prefix = kTestPrefix);

class TestCgroup {
 public:
  // mkdir of a cgroup named unique_test_name(prefix) under the cgroup v2
  // mount.
  static Result<TestCgroup> create(std::string_view prefix = kTestPrefix);

  TestCgroup(TestCgroup&& other) noexcept;
  TestCgroup& operator=(TestCgroup&& other) noexcept;
  TestCgroup(const TestCgroup&) = delete;
  TestCgroup& operator=(const TestCgroup&) = delete;
  ~TestCgroup();  // rmdir; a failure is a warning on stderr

  const std::string& path() const { return path_; }
  // Relative to the cgroup v2 mount, as a config's `cgroup` key may give it.
  const std::string& relative_path() const { return relative_; }
  // The kernel's cgroup id, read with name_to_handle_at (independently of
  // the production code, which uses the inode number).
  std::uint64_t id() const { return id_; }

  // Programs attached directly to this cgroup (sock_ops, egress, ingress).
  Result<unsigned> attached_programs() const;

  Result<void> remove();

 private:
  TestCgroup(std::string path, std::string relative, std::uint64_t id)
      : path_(std::move(path)), relative_(std::move(relative)), id_(id) {}

  std::string path_;
  std::string relative_;
  std::uint64_t id_ = 0;
};

// Moves this whole process into a cgroup for its lifetime, then back to the
// cgroup it was in (a failure to move back is a warning on stderr).
class CgroupMembership {
 public:
  static Result<CgroupMembership> enter(const TestCgroup& cgroup);

  CgroupMembership(CgroupMembership&& other) noexcept;
  CgroupMembership& operator=(CgroupMembership&&) = delete;
  CgroupMembership(const CgroupMembership&) = delete;
  CgroupMembership& operator=(const CgroupMembership&) = delete;
  ~CgroupMembership();

  Result<void> leave();

 private:
  explicit CgroupMembership(std::string original) : original_(std::move(original)) {}

  std::string original_;  // absolute path; empty once left
};

// The cgroup v2 this process is in, as an absolute path.
Result<std::string> current_cgroup();

// Removes test cgroups and pin directories left by test processes that no
// longer run (a crashed or killed run), so they do not pile up.
void sweep_stale_test_leftovers(std::string_view prefix = kTestPrefix);

}  // namespace trustfence::testing::kernel
