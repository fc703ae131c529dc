#pragma once

// What the datapath needs of the host, checked up front so a failure names
// the missing piece: privileges, BTF, program and map types, cgroup v2,
// bpffs.

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

// Kernel BTF and the program and map types the datapath loads.
Result<void> check_kernel_features(const std::string& btf_path = "/sys/kernel/btf/vmlinux");

// The netns's TCP retransmission floor in microseconds: the
// net.ipv4.tcp_rto_min_us sysctl where the kernel has it, else 200 ms.
std::uint32_t default_rto_min_us();

// Makes sure pin_dir lies on a bpffs, mounting one at /sys/fs/bpf if none is
// mounted there, and creates pin_dir.
Result<void> prepare_pin_dir(const std::string& pin_dir);

}  // namespace trustfence::datapath
