#pragma once

// What the datapath needs of the host, checked up front so a failure names
// the missing piece: privileges, BTF, program, map and link types, helpers,
// cgroup v2, bpffs; and the optional kernel features it degrades without.

#include <cstdint>
#include <string>
#include <string_view>

#include "trustfence/common/result.hpp"

namespace trustfence::datapath {

// The cgroup v2 mount point in /proc/mounts text (the first one listed).
Result<std::string> find_cgroup2_mount(std::string_view proc_mounts);
Result<std::string> cgroup2_mount();

// A config's cgroup: absolute, or relative to the cgroup v2 mount. It must
// exist and lie on cgroup v2.
Result<std::string> resolve_cgroup(const std::string& configured);
Result<std::uint64_t> cgroup_id(const std::string& path);

// This process's cgroup v2 directory (from /proc/self/cgroup).
Result<std::string> own_cgroup();
// Whether path is ancestor or lies below it (whole path components).
bool cgroup_contains(const std::string& ancestor, const std::string& path);

// Effective capabilities: the datapath needs CAP_BPF (or CAP_SYS_ADMIN),
// CAP_NET_ADMIN, and CAP_PERFMON (or CAP_SYS_ADMIN) for BTF socket reads.
Result<void> check_capabilities(std::uint64_t effective_caps);
Result<std::uint64_t> effective_capabilities();

inline constexpr const char* kVmlinuxBtf = "/sys/kernel/btf/vmlinux";
// The oldest kernel with everything check_kernel_features() requires.
inline constexpr const char* kMinimumLinux = "5.15";

// What the datapath cannot do without: kernel BTF, its program, map and
// link types, the helpers it calls and the kernel fields it reads. Every
// missing piece is named, with the Linux version that brought it, in one
// message.
Result<void> check_kernel_features(const std::string& btf_path = kVmlinuxBtf);

// What the datapath uses when the kernel has it and does without otherwise
// (README, "Kernel support"). Setting TCP_NODELAY from the tf_resend_held
// socket iterator (Linux 5.15) is found out by loading it instead:
// Datapath::resend_supported().
struct KernelFeatures {
  // bpf_setsockopt(TCP_BPF_RTO_MIN) in sock_ops (Linux 5.10): lowers the
  // retransmission floor of pending sockets.
  bool rto_min_sockopt = false;
  // The kernel's build configuration, where libbpf reads CONFIG_HZ (RTO
  // floors are in jiffies): /boot/config-RELEASE or /proc/config.gz.
  bool kernel_config = false;
  // SOCK_DESTROY of TCP sockets (CONFIG_INET_DIAG_DESTROY, module
  // tcp_diag): a denied socket is reset at once.
  bool sock_destroy = false;
};

// Probes them: a vmlinux BTF lookup, two file checks and one SOCK_DESTROY
// request on a listener of its own.
KernelFeatures probe_kernel_features(const std::string& btf_path = kVmlinuxBtf);
// probe_kernel_features(), once per process: the answers do not change.
const KernelFeatures& kernel_features();

// One line naming each missing optional feature, the Linux version or
// kernel option that brings it, and what doing without it costs; empty when
// nothing is missing.
std::string describe_missing(const KernelFeatures& features, bool resend_supported);

// The netns's TCP retransmission floor in microseconds: the
// net.ipv4.tcp_rto_min_us sysctl where the kernel has it, else 200 ms.
std::uint32_t default_rto_min_us();

// Makes sure pin_dir lies on a bpffs, mounting one at /sys/fs/bpf if none is
// mounted there, and creates pin_dir.
Result<void> prepare_pin_dir(const std::string& pin_dir);

}  // namespace trustfence::datapath
