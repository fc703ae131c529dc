#include "trustfence/datapath/host.hpp"

#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <linux/capability.h>

namespace trustfence::datapath {
namespace fs = std::filesystem;

namespace {

// /proc/mounts writes space, tab, newline and backslash as \ooo octal.
std::string unescape_mount_field(const std::string& field) {
  std::string out;
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      auto octal = field.substr(i + 1, 3);
      if (octal.size() == 3 && octal.find_first_not_of("01234567") == std::string::npos) {
        out.push_back(static_cast<char>(std::stoi(octal, nullptr, 8)));
        i += 3;
        continue;
      }
    }
    out.push_back(field[i]);
  }
  return out;
}

}  // namespace

Result<std::string> find_cgroup2_mount(std::string_view proc_mounts) {
  std::istringstream lines{std::string(proc_mounts)};
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string device, mount_point, type;
    if (fields >> device >> mount_point >> type && type == "cgroup2")
      return unescape_mount_field(mount_point);
  }
  return fail(Errc::kUnsupported,
              "no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/mounts); mount one, "
              "e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`");
}

Result<std::string> cgroup2_mount() {
  std::ifstream in("/proc/mounts");
  if (!in) return fail_errno("reading /proc/mounts", errno);
  std::stringstream text;
  text << in.rdbuf();
  return find_cgroup2_mount(text.str());
}

Result<std::string> resolve_cgroup(const std::string& configured) {
  if (configured.empty())
    return fail(Errc::kInvalidArgument, "cgroup: no cgroup to enforce was configured");
  auto mount = cgroup2_mount();
  if (!mount) return mount;
  fs::path path = configured;
  if (path.is_relative()) path = fs::path(*mount) / path;
  struct statfs sfs {};
  if (::statfs(path.c_str(), &sfs) != 0) {
    if (errno == ENOENT)
      return fail(Errc::kNotFound, "cgroup: " + path.string() +
                                       " does not exist (create it, or fix the cgroup key)");
    return fail_errno("cgroup: " + path.string(), errno);
  }
  if (sfs.f_type != CGROUP2_SUPER_MAGIC)
    return fail(Errc::kInvalidArgument, "cgroup: " + path.string() +
                                            " is not on cgroup v2 (cgroup v2 is mounted at " +
                                            *mount + ")");
  return path.lexically_normal().string();
}

Result<std::uint64_t> cgroup_id(const std::string& path) {
  // The kernfs node id of a cgroup v2 directory is its inode number.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return fail_errno("cgroup: " + path, errno);
  return static_cast<std::uint64_t>(st.st_ino);
}

Result<std::string> own_cgroup() {
  std::ifstream in("/proc/self/cgroup");
  if (!in) return fail_errno("reading /proc/self/cgroup", errno);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("0::")) continue;  // the cgroup v2 hierarchy
    auto mount = cgroup2_mount();
    if (!mount) return mount;
    return (fs::path(*mount) / fs::path(line.substr(3)).relative_path())
        .lexically_normal()
        .string();
  }
  return fail(Errc::kNotFound, "/proc/self/cgroup: this process is in no cgroup v2");
}

bool cgroup_contains(const std::string& ancestor, const std::string& path) {
  auto a = fs::path(ancestor).lexically_normal();
  auto p = fs::path(path).lexically_normal();
  auto [a_end, p_it] = std::mismatch(a.begin(), a.end(), p.begin(), p.end());
  // "x/" normalizes with an empty last element.
  return a_end == a.end() || (std::next(a_end) == a.end() && a_end->empty());
}

Result<void> check_capabilities(std::uint64_t caps) {
  auto has = [caps](int cap) { return (caps >> cap) & 1U; };
  bool admin = has(CAP_SYS_ADMIN);
  if (!admin && !has(CAP_BPF))
    return fail(Errc::kPermissionDenied,
                "missing capability CAP_BPF (or CAP_SYS_ADMIN): needed to load BPF programs; run "
                "as root or grant it");
  if (!admin && !has(CAP_PERFMON))
    return fail(Errc::kPermissionDenied,
                "missing capability CAP_PERFMON (or CAP_SYS_ADMIN): needed to read socket state "
                "through BTF in tf_sockops");
  if (!has(CAP_NET_ADMIN))
    return fail(Errc::kPermissionDenied,
                "missing capability CAP_NET_ADMIN: needed to attach cgroup socket programs");
  return {};
}

Result<std::uint64_t> effective_capabilities() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
  }
  return fail(Errc::kIo, "could not read CapEff from /proc/self/status");
}

Result<void> check_kernel_features(const std::string& btf_path) {
  if (::access(btf_path.c_str(), R_OK) != 0)
    return fail(Errc::kUnsupported,
                "kernel BTF not found at " + btf_path +
                    ": this kernel lacks CONFIG_DEBUG_INFO_BTF, which the datapath needs");
  struct ProgType {
    bpf_prog_type type;
    const char* name;
  };
  constexpr std::array<ProgType, 2> progs = {
      {{BPF_PROG_TYPE_SOCK_OPS, "sock_ops"}, {BPF_PROG_TYPE_CGROUP_SKB, "cgroup_skb"}}};
  for (auto [type, name] : progs) {
    if (libbpf_probe_bpf_prog_type(type, nullptr) != 1)
      return fail(Errc::kUnsupported,
                  std::string("kernel does not support BPF program type ") + name);
  }
  struct MapType {
    bpf_map_type type;
    const char* name;
  };
  constexpr std::array<MapType, 3> maps = {{{BPF_MAP_TYPE_RINGBUF, "ringbuf (Linux 5.8+)"},
                                            {BPF_MAP_TYPE_LPM_TRIE, "lpm_trie"},
                                            {BPF_MAP_TYPE_PERCPU_ARRAY, "percpu_array"}}};
  for (auto [type, name] : maps) {
    if (libbpf_probe_bpf_map_type(type, nullptr) != 1)
      return fail(Errc::kUnsupported, std::string("kernel does not support BPF map type ") + name);
  }
  return {};
}

std::uint32_t default_rto_min_us() {
  std::ifstream in("/proc/sys/net/ipv4/tcp_rto_min_us");
  std::uint32_t us = 0;
  if (in >> us && us > 0) return us;
  return 200'000;
}

namespace {

bool on_bpffs(const fs::path& path) {
  struct statfs sfs {};
  return ::statfs(path.c_str(), &sfs) == 0 && sfs.f_type == BPF_FS_MAGIC;
}

}  // namespace

Result<void> prepare_pin_dir(const std::string& pin_dir) {
  fs::path dir = fs::path(pin_dir).lexically_normal();
  if (!dir.is_absolute())
    return fail(Errc::kInvalidArgument, "pin-dir: " + pin_dir + " must be an absolute path");
  fs::path existing = dir;
  while (!existing.empty() && !fs::exists(existing)) existing = existing.parent_path();
  if (!on_bpffs(existing)) {
    const fs::path default_mount = "/sys/fs/bpf";
    bool under_default = dir.string().rfind(default_mount.string() + "/", 0) == 0;
    if (!under_default)
      return fail(Errc::kInvalidArgument, "pin-dir: " + pin_dir +
                                              " is not on a bpffs (mount one there, or use a path "
                                              "under /sys/fs/bpf)");
    std::error_code ec;
    fs::create_directories(default_mount, ec);
    if (!on_bpffs(default_mount) &&
        ::mount("bpf", default_mount.c_str(), "bpf", 0, "mode=0700") != 0)
      return fail_errno("pin-dir: mounting bpffs at /sys/fs/bpf", errno);
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return fail(Errc::kIo, "pin-dir: creating " + pin_dir + ": " + ec.message());
  if (!on_bpffs(dir))
    return fail(Errc::kInvalidArgument, "pin-dir: " + pin_dir + " is not on a bpffs");
  return {};
}

}  // namespace trustfence::datapath
