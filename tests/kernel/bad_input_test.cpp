// Bad input gets a clear error and nothing is lost: a missing or wrong
// cgroup is named; pins of another ABI, or without tf_meta, are refused
// with a way to clean up, and left alone until the operator does;
// `trustfence agent --uninstall` is that way.

#include <bpf/bpf.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "support/kernel/assert_ok.hpp"
#include "support/kernel/socket.hpp"
#include "support/kernel/test_datapath.hpp"
#include "support/privileges.hpp"
#include "support/process.hpp"
#include "trustfence/datapath/host.hpp"
#include "trustfence/datapath/typed_map.hpp"

namespace trustfence::testing::kernel {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class BadInputTest : public TestDatapath {
 protected:
  // Rewrites the pinned tf_meta as another build of trustfence would have.
  Result<void> rewrite_meta(const std::function<void(tf_meta&)>& edit) {
    auto fd = datapath::open_pinned((fs::path(pin_dir()) / "tf_meta").string());
    if (!fd) return std::unexpected(fd.error());
    auto meta = datapath::TypedMap<__u32, tf_meta>::adopt(std::move(*fd), "tf_meta");
    if (!meta) return std::unexpected(meta.error());
    auto current = meta->lookup(0);
    if (!current) return std::unexpected(current.error());
    if (!*current) return fail(Errc::kNotFound, "tf_meta has no entry 0");
    tf_meta changed = **current;
    edit(changed);
    return meta->update(0, changed);
  }

  // Opening must fail as incompatible, say what and how to clean up, and
  // leave the pins and the attached programs as they were.
  void expect_refused(const std::string& what) {
    auto reopened = datapath::Datapath::open(options());
    ASSERT_FALSE(reopened.has_value()) << "opened pins of " << what;
    EXPECT_EQ(reopened.error().code, Errc::kIncompatible) << reopened.error().message;
    EXPECT_THAT(reopened.error().message, HasSubstr(pin_dir()));
    EXPECT_THAT(reopened.error().message, HasSubstr("trustfence agent --uninstall --pin-dir"))
        << "the refusal should say how to clean up";
    for (const char* pin : {"tf_conns", "tf_sockops_link", "tf_egress_link", "tf_ingress_link"})
      EXPECT_TRUE(fs::exists(fs::path(pin_dir()) / pin)) << "a refused open removed " << pin;
    auto attached = cgroup().attached_programs();
    ASSERT_TRUE(attached.has_value()) << attached.error().message;
    EXPECT_EQ(*attached, 3u) << "a refused open detached the running programs";
  }

  // The operator's way out: the CLI removes every pin and detaches.
  void uninstall_with_cli() {
    std::vector<std::string> argv = {TF_CLI_PATH, "agent", "--uninstall", "--pin-dir", pin_dir()};
    auto run = run_command(argv);
    ASSERT_TRUE(run.has_value()) << run.error().message;
    EXPECT_EQ(run->exit_code, 0) << join_argv(argv) << "\nstdout: " << run->out
                                 << "\nstderr: " << run->err;
    EXPECT_FALSE(fs::exists(pin_dir())) << "uninstall left " << pin_dir();
    EXPECT_TRUE(wait_until(
        [&] {
          auto n = cgroup().attached_programs();
          return n && *n == 0;
        },
        kIoTimeout))
        << "programs still attached after `trustfence agent --uninstall`";
  }
};

TEST_F(BadInputTest, MissingCgroupIsNamedAbsoluteOrRelative) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK_AND_ASSIGN(auto mount, datapath::cgroup2_mount());
  const std::string missing = cgroup().relative_path() + "-missing";
  for (const std::string& configured : {(fs::path(mount) / missing).string(), missing}) {
    SCOPED_TRACE("cgroup = " + configured);
    auto opts = options();
    opts.cgroup = configured;
    auto dp = datapath::Datapath::open(opts);
    ASSERT_FALSE(dp.has_value());
    EXPECT_EQ(dp.error().code, Errc::kNotFound);
    EXPECT_THAT(dp.error().message, HasSubstr((fs::path(mount) / missing).string()));
    EXPECT_THAT(dp.error().message, HasSubstr("does not exist"));
    EXPECT_FALSE(fs::exists(pin_dir())) << "a failed open left a pin directory";
  }
}

TEST_F(BadInputTest, DirectoryOutsideCgroupV2IsRefused) {
  TF_REQUIRE_ROOT();
  auto opts = options();
  opts.cgroup = fs::temp_directory_path().string();
  auto dp = datapath::Datapath::open(opts);
  ASSERT_FALSE(dp.has_value());
  EXPECT_EQ(dp.error().code, Errc::kInvalidArgument);
  EXPECT_THAT(dp.error().message, HasSubstr(opts.cgroup));
  EXPECT_THAT(dp.error().message, HasSubstr("cgroup v2"));
}

TEST_F(BadInputTest, PinDirOutsideBpffsIsRefused) {
  TF_REQUIRE_ROOT();
  auto opts = options();
  opts.pin_dir = (fs::temp_directory_path() / unique_test_name()).string();
  auto dp = datapath::Datapath::open(opts);
  std::error_code ec;
  fs::remove_all(opts.pin_dir, ec);
  ASSERT_FALSE(dp.has_value());
  EXPECT_EQ(dp.error().code, Errc::kInvalidArgument);
  EXPECT_THAT(dp.error().message, HasSubstr(opts.pin_dir));
  EXPECT_THAT(dp.error().message, HasSubstr("bpffs"));
}

TEST_F(BadInputTest, PinsOfAnotherAbiVersionAreRefusedAndKeptUntilUninstall) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK(open());
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(AF_INET));
  TF_ASSERT_OK_AND_ASSIGN(auto port, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto pair, connect_pair(AF_INET, listener.get(), port.port));
  TF_ASSERT_OK(inside.leave());
  TF_ASSERT_OK_AND_ASSIGN(bool decided, allow(pair.client_cookie));
  ASSERT_TRUE(decided);
  TF_ASSERT_OK(rewrite_meta([](tf_meta& m) { m.abi_version = TF_ABI_VERSION + 1; }));
  close();

  expect_refused("ABI version " + std::to_string(TF_ABI_VERSION + 1));
  auto reopened = datapath::Datapath::open(options());
  ASSERT_FALSE(reopened.has_value());
  EXPECT_THAT(reopened.error().message, HasSubstr(std::to_string(TF_ABI_VERSION + 1)))
      << "the refusal should name the version it found";
  // Refused, not rewritten: the other version's entries are intact.
  TF_ASSERT_OK_AND_ASSIGN(auto conns_fd,
                          datapath::open_pinned((fs::path(pin_dir()) / "tf_conns").string()));
  tf_conn raw{};
  std::uint64_t cookie = pair.client_cookie;
  ASSERT_EQ(bpf_map_lookup_elem(conns_fd.get(), &cookie, &raw), 0);
  EXPECT_EQ(raw.verdict, TF_VERDICT_ALLOW);

  conns_fd.reset();
  uninstall_with_cli();
  TF_ASSERT_OK(open());
  EXPECT_EQ(dp().pin_state(), datapath::PinState::kFresh);
}

TEST_F(BadInputTest, PinsOfAnotherMagicAreRefused) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK(open());
  TF_ASSERT_OK(rewrite_meta([](tf_meta& m) { m.magic = 0x0badf00d; }));
  close();
  expect_refused("another magic");
}

TEST_F(BadInputTest, PinsOfAnotherLayoutAreRefused) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK(open());
  TF_ASSERT_OK(rewrite_meta([](tf_meta& m) { m.conn_size += 8; }));
  close();
  expect_refused("another tf_conn size");
}

TEST_F(BadInputTest, PinsWithoutMetaAreRefused) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK(open());
  close();
  ASSERT_EQ(::unlink((fs::path(pin_dir()) / "tf_meta").c_str()), 0);
  expect_refused("no tf_meta");
  auto reopened = datapath::Datapath::open(options());
  ASSERT_FALSE(reopened.has_value());
  EXPECT_THAT(reopened.error().message, HasSubstr("tf_meta"));
  uninstall_with_cli();
}

TEST_F(BadInputTest, SecondAgentOnThePinDirAndUninstallUnderAnAgentAreRefused) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK(open());
  auto second = datapath::Datapath::open(options());
  ASSERT_FALSE(second.has_value()) << "two agents opened one pin-dir";
  EXPECT_THAT(second.error().message, HasSubstr(pin_dir()));

  auto removed = datapath::Datapath::uninstall(pin_dir());
  ASSERT_FALSE(removed.has_value()) << "uninstall went ahead under a running agent";
  EXPECT_THAT(removed.error().message, HasSubstr(pin_dir()));
  std::vector<std::string> argv = {TF_CLI_PATH, "agent", "--uninstall", "--pin-dir", pin_dir()};
  TF_ASSERT_OK_AND_ASSIGN(auto run, run_command(argv));
  EXPECT_NE(run.exit_code, 0) << join_argv(argv) << " succeeded under a running agent";
  EXPECT_TRUE(fs::exists(fs::path(pin_dir()) / "tf_conns"));
  TF_ASSERT_OK_AND_ASSIGN(unsigned attached, cgroup().attached_programs());
  EXPECT_EQ(attached, 3u);
}

}  // namespace
}  // namespace trustfence::testing::kernel
