#include "trustfence/datapath/host.hpp"

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <string>

namespace {

using trustfence::Errc;
using trustfence::datapath::check_capabilities;
using trustfence::datapath::find_cgroup2_mount;

// /proc/mounts of a systemd host in hybrid mode (cgroup v1 controllers, v2
// at /sys/fs/cgroup/unified), as on the development machines.
constexpr const char* kHybridMounts =
    "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
    "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
    "tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0\n"
    "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n"
    "cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0\n"
    "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0\n"
    "bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0\n";

constexpr const char* kUnifiedMounts =
    "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
    "cgroup2 /sys/fs/cgroup cgroup2 "
    "rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0\n"
    "bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0\n";

constexpr const char* kV1OnlyMounts =
    "tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0\n"
    "cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0\n";

TEST(FindCgroup2Mount, HybridLayoutFindsTheUnifiedHierarchy) {
  auto mount = find_cgroup2_mount(kHybridMounts);
  ASSERT_TRUE(mount.has_value()) << mount.error().message;
  EXPECT_EQ(*mount, "/sys/fs/cgroup/unified");
}

TEST(FindCgroup2Mount, PureV2LayoutFindsSysFsCgroup) {
  auto mount = find_cgroup2_mount(kUnifiedMounts);
  ASSERT_TRUE(mount.has_value()) << mount.error().message;
  EXPECT_EQ(*mount, "/sys/fs/cgroup");
}

TEST(FindCgroup2Mount, GoesByTheFilesystemTypeNotTheDeviceName) {
  auto mount = find_cgroup2_mount(
      "cgroup2 /mnt/decoy tmpfs rw 0 0\n"
      "none /run/cg cgroup2 rw 0 0\n");
  ASSERT_TRUE(mount.has_value()) << mount.error().message;
  EXPECT_EQ(*mount, "/run/cg");
}

TEST(FindCgroup2Mount, TakesTheFirstOfSeveral) {
  auto mount = find_cgroup2_mount(
      "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"
      "cgroup2 /run/nested cgroup2 rw 0 0\n");
  ASSERT_TRUE(mount.has_value()) << mount.error().message;
  EXPECT_EQ(*mount, "/sys/fs/cgroup");
}

TEST(FindCgroup2Mount, HandlesALastLineWithoutNewline) {
  auto mount = find_cgroup2_mount("proc /proc proc rw 0 0\ncgroup2 /cg cgroup2 rw 0 0");
  ASSERT_TRUE(mount.has_value()) << mount.error().message;
  EXPECT_EQ(*mount, "/cg");
}

TEST(FindCgroup2Mount, DecodesOctalEscapesOfTheMountPoint) {
  // The kernel writes a space in a mount point as \040 in /proc/mounts.
  auto mount = find_cgroup2_mount("none /mnt/my\\040cgroup cgroup2 rw 0 0\n");
  ASSERT_TRUE(mount.has_value()) << mount.error().message;
  EXPECT_EQ(*mount, "/mnt/my cgroup");
}

TEST(FindCgroup2Mount, NoCgroup2IsAClearError) {
  for (const char* text : {kV1OnlyMounts, "", "\n\n"}) {
    auto mount = find_cgroup2_mount(text);
    ASSERT_FALSE(mount.has_value()) << "found " << *mount << " in: " << text;
    EXPECT_EQ(mount.error().code, Errc::kUnsupported);
    EXPECT_NE(mount.error().message.find("no cgroup v2"), std::string::npos)
        << mount.error().message;
  }
}

constexpr std::uint64_t cap(int n) { return std::uint64_t{1} << n; }
// Every capability of Linux 6.x (CAP_LAST_CAP is CAP_CHECKPOINT_RESTORE).
constexpr std::uint64_t kRootCaps = (std::uint64_t{1} << (CAP_LAST_CAP + 1)) - 1;
constexpr std::uint64_t kAllButBpfAndAdmin = kRootCaps & ~cap(CAP_BPF) & ~cap(CAP_SYS_ADMIN);

struct CapCase {
  const char* name;
  std::uint64_t caps;
  const char* missing;  // nullptr: enough
};

void PrintTo(const CapCase& c, std::ostream* os) { *os << c.name; }

class CheckCapabilities : public ::testing::TestWithParam<CapCase> {};

TEST_P(CheckCapabilities, AcceptsEnoughAndNamesWhatIsMissing) {
  const CapCase& c = GetParam();
  auto checked = check_capabilities(c.caps);
  if (c.missing == nullptr) {
    EXPECT_TRUE(checked.has_value()) << checked.error().message;
    return;
  }
  ASSERT_FALSE(checked.has_value()) << "accepted without " << c.missing;
  EXPECT_EQ(checked.error().code, Errc::kPermissionDenied);
  EXPECT_NE(checked.error().message.find(std::string("missing capability ") + c.missing),
            std::string::npos)
      << checked.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Table, CheckCapabilities,
    ::testing::Values(
        CapCase{"root", kRootCaps, nullptr},
        CapCase{"bpf_perfmon_net_admin", cap(CAP_BPF) | cap(CAP_PERFMON) | cap(CAP_NET_ADMIN),
                nullptr},
        CapCase{"sys_admin_net_admin", cap(CAP_SYS_ADMIN) | cap(CAP_NET_ADMIN), nullptr},
        CapCase{"none", 0, "CAP_BPF"},
        CapCase{"all_but_bpf_and_sys_admin", kAllButBpfAndAdmin, "CAP_BPF"},
        CapCase{"all_but_net_admin", kRootCaps & ~cap(CAP_NET_ADMIN), "CAP_NET_ADMIN"},
        CapCase{"bpf_perfmon", cap(CAP_BPF) | cap(CAP_PERFMON), "CAP_NET_ADMIN"},
        CapCase{"sys_admin_only", cap(CAP_SYS_ADMIN), "CAP_NET_ADMIN"},
        CapCase{"bpf_net_admin_no_perfmon", cap(CAP_BPF) | cap(CAP_NET_ADMIN), "CAP_PERFMON"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(EffectiveCapabilities, MatchesCapget) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  ASSERT_EQ(::syscall(SYS_capget, &header, data), 0);
  std::uint64_t expected = data[0].effective | (std::uint64_t{data[1].effective} << 32);

  auto caps = trustfence::datapath::effective_capabilities();
  ASSERT_TRUE(caps.has_value()) << caps.error().message;
  EXPECT_EQ(*caps, expected);
}

TEST(CheckKernelFeatures, MissingBtfNamesThePathAndTheKernelOption) {
  auto checked = trustfence::datapath::check_kernel_features("/nonexistent/trustfence/vmlinux");
  ASSERT_FALSE(checked.has_value());
  EXPECT_EQ(checked.error().code, Errc::kUnsupported);
  EXPECT_NE(checked.error().message.find("/nonexistent/trustfence/vmlinux"), std::string::npos)
      << checked.error().message;
  EXPECT_NE(checked.error().message.find("CONFIG_DEBUG_INFO_BTF"), std::string::npos)
      << checked.error().message;
}

TEST(ResolveCgroup, EmptyIsRefused) {
  auto resolved = trustfence::datapath::resolve_cgroup("");
  ASSERT_FALSE(resolved.has_value()) << *resolved;
  EXPECT_EQ(resolved.error().code, Errc::kInvalidArgument);
}

TEST(ResolveCgroup, AMissingCgroupIsNamed) {
  if (!trustfence::datapath::cgroup2_mount()) GTEST_SKIP() << "no cgroup v2 on this host";
  auto resolved = trustfence::datapath::resolve_cgroup("/nonexistent/trustfence-unit");
  ASSERT_FALSE(resolved.has_value()) << *resolved;
  EXPECT_EQ(resolved.error().code, Errc::kNotFound);
  EXPECT_NE(resolved.error().message.find("/nonexistent/trustfence-unit"), std::string::npos)
      << resolved.error().message;
}

TEST(ResolveCgroup, ADirectoryOffCgroup2IsRefused) {
  if (!trustfence::datapath::cgroup2_mount()) GTEST_SKIP() << "no cgroup v2 on this host";
  auto resolved = trustfence::datapath::resolve_cgroup("/proc");
  ASSERT_FALSE(resolved.has_value()) << *resolved;
  EXPECT_EQ(resolved.error().code, Errc::kInvalidArgument);
  EXPECT_NE(resolved.error().message.find("not on cgroup v2"), std::string::npos)
      << resolved.error().message;
}

TEST(ResolveCgroup, TheCgroup2MountItselfResolvesToItself) {
  auto mount = trustfence::datapath::cgroup2_mount();
  if (!mount) GTEST_SKIP() << "no cgroup v2 on this host";
  auto resolved = trustfence::datapath::resolve_cgroup(*mount);
  ASSERT_TRUE(resolved.has_value()) << resolved.error().message;
  EXPECT_EQ(*resolved, *mount);
}

TEST(PreparePinDir, ARelativePathIsRefused) {
  auto prepared = trustfence::datapath::prepare_pin_dir("sys/fs/bpf/trustfence");
  ASSERT_FALSE(prepared.has_value());
  EXPECT_EQ(prepared.error().code, Errc::kInvalidArgument);
  EXPECT_NE(prepared.error().message.find("absolute"), std::string::npos)
      << prepared.error().message;
}

}  // namespace

namespace {

struct ContainsCase {
  const char* ancestor;
  const char* path;
  bool contains;
};

class CgroupContains : public ::testing::TestWithParam<ContainsCase> {};

TEST_P(CgroupContains, ComparesWholePathComponents) {
  const auto& c = GetParam();
  EXPECT_EQ(trustfence::datapath::cgroup_contains(c.ancestor, c.path), c.contains)
      << c.ancestor << " vs " << c.path;
}

INSTANTIATE_TEST_SUITE_P(
    Table, CgroupContains,
    ::testing::Values(
        ContainsCase{"/sys/fs/cgroup/kubepods", "/sys/fs/cgroup/kubepods", true},
        ContainsCase{"/sys/fs/cgroup/kubepods", "/sys/fs/cgroup/kubepods/pod1", true},
        ContainsCase{"/sys/fs/cgroup/kubepods/", "/sys/fs/cgroup/kubepods/a/b", true},
        ContainsCase{"/sys/fs/cgroup/kubepods", "/sys/fs/cgroup/kubepods2", false},
        ContainsCase{"/sys/fs/cgroup/kubepods", "/sys/fs/cgroup", false},
        ContainsCase{"/sys/fs/cgroup/a/../kubepods", "/sys/fs/cgroup/kubepods/x", true},
        ContainsCase{"/sys/fs/cgroup/kubepods", "/sys/fs/cgroup/other/kubepods", false}));

}  // namespace
