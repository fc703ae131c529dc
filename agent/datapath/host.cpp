#include "trustfence/datapath/host.hpp"

#include <arpa/inet.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/inet_diag.h>
#include <linux/magic.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "trustfence/common/unique_fd.hpp"

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

namespace {

struct BtfDeleter {
  void operator()(btf* b) const { btf__free(b); }
};
using BtfPtr = std::unique_ptr<btf, BtfDeleter>;

// Raw BTF (the sysfs file) or an ELF file with a .BTF section.
BtfPtr load_btf(const std::string& path) {
  btf* parsed = btf__parse(path.c_str(), nullptr);
  if (libbpf_get_error(parsed) != 0) return nullptr;
  return BtfPtr(parsed);
}

// uapi constants such as TCP_BPF_RTO_MIN or BPF_LINK_TYPE_CGROUP are
// enumerators of the kernel's BTF: the kernel knows them iff they are there.
bool has_enumerator(const btf* b, std::string_view name) {
  const __u32 count = btf__type_cnt(b);
  for (__u32 id = 1; id < count; ++id) {
    const btf_type* type = btf__type_by_id(b, id);
    if (!btf_is_enum(type)) continue;
    const struct btf_enum* values = btf_enum(type);
    for (__u16 i = 0; i < btf_vlen(type); ++i)
      if (name == btf__name_by_offset(b, values[i].name_off)) return true;
  }
  return false;
}

bool has_member(const btf* b, const char* struct_name, std::string_view member) {
  __s32 id = btf__find_by_name_kind(b, struct_name, BTF_KIND_STRUCT);
  if (id <= 0) return false;
  const btf_type* type = btf__type_by_id(b, id);
  const btf_member* members = btf_members(type);
  for (__u16 i = 0; i < btf_vlen(type); ++i)
    if (member == btf__name_by_offset(b, members[i].name_off)) return true;
  return false;
}

std::string kernel_release() {
  utsname uts{};
  if (::uname(&uts) != 0) return "unknown";
  return uts.release;
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (const auto& part : parts) {
    if (!out.empty()) out += separator;
    out += part;
  }
  return out;
}

// Where libbpf looks for the kernel config, in its order.
bool kernel_config_readable() {
  return ::access(("/boot/config-" + kernel_release()).c_str(), R_OK) == 0 ||
         ::access("/proc/config.gz", R_OK) == 0;
}

struct DestroyRequest {
  nlmsghdr header;
  inet_diag_req_v2 body;
};

// Destroys a throwaway loopback connection of our own through SOCK_DESTROY,
// as the agent destroys denied ones: 0 means the kernel can. Without
// CONFIG_INET_DIAG_DESTROY it answers EOPNOTSUPP; without tcp_diag, ENOENT.
bool probe_sock_destroy() {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener || !client) return false;
  sockaddr_in server{};
  server.sin_family = AF_INET;
  server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(server);
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&server), sizeof(server)) != 0 ||
      ::listen(listener.get(), 1) != 0 ||
      ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&server), &len) != 0 ||
      ::connect(client.get(), reinterpret_cast<const sockaddr*>(&server), sizeof(server)) != 0)
    return false;
  sockaddr_in local{};
  len = sizeof(local);
  std::uint64_t cookie = 0;
  socklen_t cookie_len = sizeof(cookie);
  if (::getsockname(client.get(), reinterpret_cast<sockaddr*>(&local), &len) != 0 ||
      ::getsockopt(client.get(), SOL_SOCKET, SO_COOKIE, &cookie, &cookie_len) != 0)
    return false;

  UniqueFd diag(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!diag) return false;
  timeval timeout{.tv_sec = 2, .tv_usec = 0};
  ::setsockopt(diag.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  DestroyRequest req{};
  req.header.nlmsg_len = sizeof(req);
  req.header.nlmsg_type = SOCK_DESTROY;
  req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.header.nlmsg_seq = 1;
  req.body.sdiag_family = AF_INET;
  req.body.sdiag_protocol = IPPROTO_TCP;
  req.body.idiag_states = ~0U;
  req.body.id.idiag_sport = local.sin_port;
  req.body.id.idiag_dport = server.sin_port;
  std::memcpy(req.body.id.idiag_src, &local.sin_addr, sizeof(local.sin_addr));
  std::memcpy(req.body.id.idiag_dst, &server.sin_addr, sizeof(server.sin_addr));
  req.body.id.idiag_cookie[0] = static_cast<std::uint32_t>(cookie);
  req.body.id.idiag_cookie[1] = static_cast<std::uint32_t>(cookie >> 32);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(diag.get(), &req, sizeof(req), 0, reinterpret_cast<const sockaddr*>(&kernel),
               sizeof(kernel)) != static_cast<ssize_t>(sizeof(req)))
    return false;
  alignas(nlmsghdr) char buf[1024];
  for (;;) {
    ssize_t n = ::recv(diag.get(), buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    auto left = static_cast<unsigned>(n);
    for (auto* msg = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(msg, left);
         msg = NLMSG_NEXT(msg, left)) {
      if (msg->nlmsg_seq != req.header.nlmsg_seq || msg->nlmsg_type != NLMSG_ERROR) continue;
      if (msg->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return false;
      return static_cast<const nlmsgerr*>(NLMSG_DATA(msg))->error == 0;
    }
  }
}

}  // namespace

Result<void> check_kernel_features(const std::string& btf_path) {
  if (::access(btf_path.c_str(), R_OK) != 0)
    return fail(Errc::kUnsupported,
                "kernel BTF not found at " + btf_path +
                    ": this kernel lacks CONFIG_DEBUG_INFO_BTF, which the datapath needs");
  std::vector<std::string> missing;
  auto need = [&missing](bool present, std::string what) {
    if (!present) missing.push_back(std::move(what));
  };
  struct ProgType {
    bpf_prog_type type;
    const char* name;
  };
  constexpr std::array<ProgType, 2> progs = {{{BPF_PROG_TYPE_SOCK_OPS, "sock_ops programs"},
                                              {BPF_PROG_TYPE_CGROUP_SKB, "cgroup_skb programs"}}};
  for (auto [type, name] : progs) need(libbpf_probe_bpf_prog_type(type, nullptr) == 1, name);
  struct MapType {
    bpf_map_type type;
    const char* name;
  };
  constexpr std::array<MapType, 6> maps = {
      {{BPF_MAP_TYPE_RINGBUF, "ring buffer maps (Linux 5.8)"},
       {BPF_MAP_TYPE_SK_STORAGE, "sk_storage maps (Linux 5.2)"},
       {BPF_MAP_TYPE_LPM_TRIE, "lpm_trie maps"},
       {BPF_MAP_TYPE_LRU_HASH, "lru_hash maps"},
       {BPF_MAP_TYPE_HASH, "hash maps"},
       {BPF_MAP_TYPE_PERCPU_ARRAY, "percpu_array maps"}}};
  for (auto [type, name] : maps) need(libbpf_probe_bpf_map_type(type, nullptr) == 1, name);
  struct Helper {
    bpf_prog_type prog;
    bpf_func_id id;
    const char* name;
  };
  constexpr std::array<Helper, 6> helpers = {{
      {BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_skc_to_tcp_sock, "bpf_skc_to_tcp_sock (Linux 5.9)"},
      {BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_ringbuf_query, "bpf_ringbuf_query (Linux 5.8)"},
      {BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_sk_storage_get, "bpf_sk_storage_get in sock_ops"},
      {BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_sock_ops_cb_flags_set, "bpf_sock_ops_cb_flags_set"},
      {BPF_PROG_TYPE_CGROUP_SKB, BPF_FUNC_sk_fullsock, "bpf_sk_fullsock (Linux 5.1)"},
      {BPF_PROG_TYPE_CGROUP_SKB, BPF_FUNC_sk_storage_get, "bpf_sk_storage_get in cgroup_skb"},
  }};
  for (auto [prog, id, name] : helpers) need(libbpf_probe_bpf_helper(prog, id, nullptr) == 1, name);
  if (auto vmlinux = load_btf(btf_path)) {
    need(has_enumerator(vmlinux.get(), "BPF_LINK_TYPE_CGROUP"), "cgroup BPF links (Linux 5.7)");
    need(has_member(vmlinux.get(), "sock_cgroup_data", "cgroup"),
         "the socket's cgroup as struct sock_cgroup_data.cgroup (Linux 5.15)");
  } else {
    missing.push_back("kernel BTF readable at " + btf_path);
  }
  if (missing.empty()) return {};
  return fail(Errc::kUnsupported, "this kernel (Linux " + kernel_release() +
                                      ") lacks what the trustfence datapath needs: " +
                                      join(missing, ", ") + "; it needs Linux " + kMinimumLinux +
                                      " or later, built with CONFIG_DEBUG_INFO_BTF");
}

KernelFeatures probe_kernel_features(const std::string& btf_path) {
  KernelFeatures features;
  if (auto vmlinux = load_btf(btf_path))
    features.rto_min_sockopt = has_enumerator(vmlinux.get(), "TCP_BPF_RTO_MIN");
  features.kernel_config = kernel_config_readable();
  features.sock_destroy = probe_sock_destroy();
  return features;
}

const KernelFeatures& kernel_features() {
  static const KernelFeatures features = probe_kernel_features();
  return features;
}

std::string describe_missing(const KernelFeatures& features, bool resend_supported) {
  std::vector<std::string> missing;
  if (!features.rto_min_sockopt)
    missing.push_back(
        "bpf_setsockopt(TCP_BPF_RTO_MIN) (Linux 5.10): pending sockets keep the 200 ms "
        "retransmission floor, so payload held at a receiver waits for the sender's timer");
  else if (!features.kernel_config)
    missing.push_back("a readable kernel config (/boot/config-" + kernel_release() +
                      " or /proc/config.gz) to read CONFIG_HZ from: pending sockets keep the "
                      "200 ms retransmission floor, so payload held at a receiver waits for "
                      "the sender's timer");
  if (!resend_supported)
    missing.push_back(
        "bpf_setsockopt from TCP socket iterators (Linux 5.15): payload held at egress is not "
        "pushed on ALLOW and waits for TCP's 200 ms probe timer");
  if (!features.sock_destroy)
    missing.push_back(
        "SOCK_DESTROY of TCP sockets (CONFIG_INET_DIAG_DESTROY, module tcp_diag): denied "
        "connections are dropped but not reset, so their applications see a timeout");
  if (missing.empty()) return {};
  return "kernel (Linux " + kernel_release() + ") lacks " + join(missing, "; lacks ");
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
