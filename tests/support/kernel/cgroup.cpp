#include "support/kernel/cgroup.hpp"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "trustfence/common/unique_fd.hpp"
#include "trustfence/datapath/datapath.hpp"
#include "trustfence/datapath/host.hpp"

namespace trustfence::testing::kernel {
namespace fs = std::filesystem;
namespace {

Result<std::uint64_t> kernfs_id(const std::string& path) {
  struct {
    file_handle handle;
    std::uint64_t id;
  } fh{};
  fh.handle.handle_bytes = sizeof(std::uint64_t);
  int mount_id = 0;
  if (::name_to_handle_at(AT_FDCWD, path.c_str(), &fh.handle, &mount_id, 0) != 0)
    return fail_errno("name_to_handle_at " + path, errno);
  std::uint64_t id = 0;
  std::memcpy(&id, fh.handle.f_handle, sizeof(id));
  return id;
}

Result<void> write_pid(const std::string& cgroup_path) {
  auto procs = cgroup_path + "/cgroup.procs";
  UniqueFd fd(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return fail_errno("opening " + procs, errno);
  auto pid = std::to_string(::getpid());
  if (::write(fd.get(), pid.data(), pid.size()) != static_cast<ssize_t>(pid.size()))
    return fail_errno("moving pid " + pid + " into " + cgroup_path, errno);
  return {};
}

}  // namespace

std::string unique_test_name(std::string_view prefix) {
  static std::atomic<unsigned> counter{0};
  return std::string(prefix) + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

bool is_stale_test_name(const std::string& name, std::string_view prefix) {
  std::string_view rest = name;
  if (!rest.starts_with(prefix)) return false;
  rest.remove_prefix(prefix.size());
  int pid = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), pid);
  if (ec != std::errc() || end == rest.data() || *end != '-' || pid <= 0) return false;
  return pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH;
}

Result<TestCgroup> TestCgroup::create(std::string_view prefix) {
  auto mount = datapath::cgroup2_mount();
  if (!mount) return std::unexpected(mount.error());
  auto name = unique_test_name(prefix);
  auto path = (fs::path(*mount) / name).string();
  if (::mkdir(path.c_str(), 0755) != 0) return fail_errno("mkdir cgroup " + path, errno);
  auto id = kernfs_id(path);
  if (!id) {
    ::rmdir(path.c_str());
    return std::unexpected(id.error());
  }
  return TestCgroup(path, name, *id);
}

TestCgroup::TestCgroup(TestCgroup&& other) noexcept
    : path_(std::exchange(other.path_, {})),
      relative_(std::exchange(other.relative_, {})),
      id_(other.id_) {}

TestCgroup& TestCgroup::operator=(TestCgroup&& other) noexcept {
  if (this != &other) {
    (void)remove();
    path_ = std::exchange(other.path_, {});
    relative_ = std::exchange(other.relative_, {});
    id_ = other.id_;
  }
  return *this;
}

TestCgroup::~TestCgroup() {
  if (auto ok = remove(); !ok) std::fprintf(stderr, "warning: %s\n", ok.error().message.c_str());
}

Result<void> TestCgroup::remove() {
  if (path_.empty()) return {};
  if (::rmdir(path_.c_str()) != 0 && errno != ENOENT)
    return fail_errno("rmdir cgroup " + path_, errno);
  path_.clear();
  return {};
}

Result<unsigned> TestCgroup::attached_programs() const {
  UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail_errno("opening cgroup " + path_, errno);
  unsigned total = 0;
  for (auto type : {BPF_CGROUP_SOCK_OPS, BPF_CGROUP_INET_EGRESS, BPF_CGROUP_INET_INGRESS}) {
    __u32 count = 0;
    __u32 flags = 0;
    if (::bpf_prog_query(fd.get(), type, 0, &flags, nullptr, &count) != 0)
      return fail_errno("querying programs attached to " + path_, errno);
    total += count;
  }
  return total;
}

Result<std::string> current_cgroup() {
  auto mount = datapath::cgroup2_mount();
  if (!mount) return std::unexpected(mount.error());
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    // The cgroup v2 line is "0::/path".
    if (line.starts_with("0::")) return (fs::path(*mount) / line.substr(4)).string();
  }
  return fail(Errc::kNotFound, "no cgroup v2 line (0::) in /proc/self/cgroup");
}

Result<CgroupMembership> CgroupMembership::enter(const TestCgroup& cgroup) {
  auto original = current_cgroup();
  if (!original) return std::unexpected(original.error());
  if (auto moved = write_pid(cgroup.path()); !moved) return std::unexpected(moved.error());
  return CgroupMembership(*original);
}

CgroupMembership::CgroupMembership(CgroupMembership&& other) noexcept
    : original_(std::exchange(other.original_, {})) {}

CgroupMembership::~CgroupMembership() {
  if (auto ok = leave(); !ok) std::fprintf(stderr, "warning: %s\n", ok.error().message.c_str());
}

Result<void> CgroupMembership::leave() {
  if (original_.empty()) return {};
  auto back = write_pid(original_);
  original_.clear();
  return back;
}

void sweep_stale_test_leftovers(std::string_view prefix) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/sys/fs/bpf", ec)) {
    if (is_stale_test_name(entry.path().filename().string(), prefix))
      (void)datapath::Datapath::uninstall(entry.path().string());
  }
  auto mount = datapath::cgroup2_mount();
  if (!mount) return;
  for (const auto& entry : fs::directory_iterator(*mount, ec)) {
    if (is_stale_test_name(entry.path().filename().string(), prefix)) ::rmdir(entry.path().c_str());
  }
}

}  // namespace trustfence::testing::kernel
