#include "trustfence/config/config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using trustfence::Errc;
using trustfence::config::load;

// A fresh directory per test, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "trustfence-config-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp " << pattern;
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string write(const std::string& name, const std::string& text) const {
    fs::path file = path_ / name;
    std::ofstream(file) << text;
    return file.string();
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

class ConfigTest : public ::testing::Test {
 protected:
  std::string write(const std::string& text) { return dir_.write("agent.conf", text); }
  TempDir dir_;
};

TEST_F(ConfigTest, AFileWithEveryKey) {
  auto file = write(
      "# trustfence agent\n"
      "cgroup             = /sys/fs/cgroup/unified/demo\n"
      "pin-dir            = /sys/fs/bpf/tf-unit\n"
      "mode               = audit\n"
      "untracked-fallback = deny\n"
      "exempt             = 10.96.0.10/32:53\n"
      "exempt             = [fd00::1]:443\n"
      "pending-rto-min-us = 5000\n"
      "max-connections    = 4096\n"
      "log-level          = debug\n");

  auto config = load({"--config", file});
  ASSERT_TRUE(config.has_value()) << config.error().message;

  EXPECT_EQ(config->file, file);
  EXPECT_EQ(config->datapath.cgroup, "/sys/fs/cgroup/unified/demo");
  EXPECT_EQ(config->datapath.pin_dir, "/sys/fs/bpf/tf-unit");
  EXPECT_EQ(config->datapath.mode, TF_MODE_AUDIT);
  EXPECT_EQ(config->datapath.untracked_verdict, TF_VERDICT_DENY);
  ASSERT_EQ(config->datapath.exemptions.size(), 2u);
  EXPECT_EQ(config->datapath.exemptions[0].text, "10.96.0.10/32:53");
  EXPECT_EQ(config->datapath.exemptions[1].text, "[fd00::1]/128:443");
  EXPECT_EQ(config->datapath.pending_rto_min_us, 5000u);
  EXPECT_EQ(config->datapath.max_connections, 4096u);
  EXPECT_EQ(config->log_level, "debug");
}

TEST_F(ConfigTest, OnlyTheCgroupIsRequiredTheRestHasDefaults) {
  auto config = load({"--cgroup", "demo"});
  ASSERT_TRUE(config.has_value()) << config.error().message;

  EXPECT_EQ(config->file, "");
  EXPECT_EQ(config->datapath.cgroup, "demo");
  EXPECT_EQ(config->datapath.pin_dir, "/sys/fs/bpf/trustfence");
  EXPECT_EQ(config->datapath.mode, TF_MODE_ENFORCE);
  EXPECT_EQ(config->datapath.untracked_verdict, TF_VERDICT_ALLOW);
  EXPECT_TRUE(config->datapath.exemptions.empty());
  EXPECT_EQ(config->datapath.pending_rto_min_us, trustfence::datapath::kDefaultPendingRtoMinUs);
  EXPECT_EQ(config->datapath.max_connections, TF_DEFAULT_MAX_CONNS);
  EXPECT_EQ(config->log_level, "info");
}

TEST_F(ConfigTest, FlagsOverrideTheFile) {
  auto file = write(
      "cgroup = from-file\n"
      "mode = audit\n"
      "untracked-fallback = deny\n"
      "pin-dir = /sys/fs/bpf/from-file\n"
      "max-connections = 4096\n");

  auto config = load({"--config", file, "--mode", "enforce", "--pin-dir=/sys/fs/bpf/from-flag",
                      "--max-connections", "2048", "--cgroup", "from-flag"});
  ASSERT_TRUE(config.has_value()) << config.error().message;

  EXPECT_EQ(config->datapath.cgroup, "from-flag");
  EXPECT_EQ(config->datapath.mode, TF_MODE_ENFORCE);
  EXPECT_EQ(config->datapath.pin_dir, "/sys/fs/bpf/from-flag");
  EXPECT_EQ(config->datapath.max_connections, 2048u);
  EXPECT_EQ(config->datapath.untracked_verdict, TF_VERDICT_DENY) << "a key with no flag is read";
}

TEST_F(ConfigTest, RepeatedExemptKeysAccumulateInOrder) {
  auto file = write(
      "cgroup = demo\n"
      "exempt = 10.96.0.10/32:53\n"
      "exempt = 10.0.0.0/8\n"
      "exempt = [fd00::]/8:443\n");

  auto config = load({"--config", file});
  ASSERT_TRUE(config.has_value()) << config.error().message;
  std::vector<std::string> texts;
  for (const auto& ex : config->datapath.exemptions) texts.push_back(ex.text);
  EXPECT_THAT(texts, ::testing::ElementsAre("10.96.0.10/32:53", "10.0.0.0/8", "[fd00::]/8:443"));
}

TEST_F(ConfigTest, RepeatedExemptFlagsAccumulate) {
  auto config = load({"--cgroup", "demo", "--exempt", "10.96.0.10/32:53", "--exempt", "127.0.0.1"});
  ASSERT_TRUE(config.has_value()) << config.error().message;
  ASSERT_EQ(config->datapath.exemptions.size(), 2u);
  EXPECT_EQ(config->datapath.exemptions[0].text, "10.96.0.10/32:53");
  EXPECT_EQ(config->datapath.exemptions[1].text, "127.0.0.1/32");
}

TEST_F(ConfigTest, AnUnknownKeyNamesTheKeyAndItsLine) {
  auto file = write(
      "cgroup = demo\n"
      "mode = enforce\n"
      "trust-domian = team-a.gke.local\n");

  auto config = load({"--config", file});
  ASSERT_FALSE(config.has_value());
  EXPECT_EQ(config.error().code, Errc::kInvalidArgument);
  EXPECT_THAT(config.error().message, HasSubstr("trust-domian"));
  EXPECT_THAT(config.error().message, HasSubstr(file + ":3:"));
}

TEST_F(ConfigTest, AnUnknownFlagIsNamed) {
  auto config = load({"--cgroup", "demo", "--trust-domian", "x"});
  ASSERT_FALSE(config.has_value());
  EXPECT_EQ(config.error().code, Errc::kInvalidArgument);
  EXPECT_THAT(config.error().message, HasSubstr("trust-domian"));
}

struct BadValue {
  const char* name;
  std::string key;
  std::string value;
};

void PrintTo(const BadValue& c, std::ostream* os) { *os << c.key << " = " << c.value; }

class ConfigRejects : public ConfigTest, public ::testing::WithParamInterface<BadValue> {};

TEST_P(ConfigRejects, AValueNamingKeyFileAndLine) {
  const BadValue& c = GetParam();
  // The bad key sits on line 4, after a comment and a blank line.
  auto file = write("# agent\ncgroup = demo\n\n" + c.key + " = " + c.value + "\n# end\n");

  auto config = load({"--config", file});
  ASSERT_FALSE(config.has_value()) << c.key << " = " << c.value << " was accepted";
  EXPECT_EQ(config.error().code, Errc::kInvalidArgument);
  EXPECT_THAT(config.error().message, HasSubstr(file + ":4:"));
  EXPECT_THAT(config.error().message, HasSubstr(c.key));
}

INSTANTIATE_TEST_SUITE_P(
    Table, ConfigRejects,
    ::testing::Values(
        BadValue{"mode", "mode", "permissive"}, BadValue{"mode_case", "mode", "Enforce"},
        BadValue{"untracked_fallback", "untracked-fallback", "maybe"},
        BadValue{"log_level", "log-level", "verbose"},
        BadValue{"rto_below_range", "pending-rto-min-us", "999"},
        BadValue{"rto_above_range", "pending-rto-min-us", "200001"},
        BadValue{"rto_not_a_number", "pending-rto-min-us", "fast"},
        BadValue{"rto_negative", "pending-rto-min-us", "-1"},
        // 2^32 - 4294966296 = 1000: a negative must not wrap into range.
        BadValue{"rto_negative_wrapping_into_range", "pending-rto-min-us", "-4294966296"},
        BadValue{"max_conns_negative_wrapping_into_range", "max-connections", "-4294963200"},
        BadValue{"max_conns_too_small", "max-connections", "15"},
        BadValue{"max_conns_too_big", "max-connections", "16777217"},
        BadValue{"max_conns_not_a_number", "max-connections", "lots"},
        BadValue{"max_conns_overflow", "max-connections", "99999999999"},
        BadValue{"pin_dir_relative", "pin-dir", "sys/fs/bpf/trustfence"},
        BadValue{"exempt_bad_cidr", "exempt", "10.0.0.0/33"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(ConfigTest, RangeLimitsAreInclusive) {
  for (const char* rto : {"0", "1000", "200000"}) {
    auto config = load({"--cgroup", "demo", "--pending-rto-min-us", rto});
    EXPECT_TRUE(config.has_value()) << rto << ": " << config.error().message;
  }
  for (const char* max : {"16", "16777216"}) {
    auto config = load({"--cgroup", "demo", "--max-connections", max});
    EXPECT_TRUE(config.has_value()) << max << ": " << config.error().message;
  }
}

TEST_F(ConfigTest, TheBadOneOfRepeatedKeysIsPointedAt) {
  auto file = write(
      "cgroup = demo\n"
      "exempt = 10.96.0.10/32:53\n"
      "exempt = 10.0.0.0/8\n"
      "exempt = 10.0.0.1:99999\n");

  auto config = load({"--config", file});
  ASSERT_FALSE(config.has_value());
  EXPECT_THAT(config.error().message, HasSubstr(file + ":4:"));
  EXPECT_THAT(config.error().message, HasSubstr("10.0.0.1:99999"));
}

TEST_F(ConfigTest, ABadFlagIsNamedAsAFlag) {
  auto config = load({"--cgroup", "demo", "--mode", "bogus"});
  ASSERT_FALSE(config.has_value());
  EXPECT_EQ(config.error().code, Errc::kInvalidArgument);
  EXPECT_THAT(config.error().message, HasSubstr("--mode"));
  EXPECT_THAT(config.error().message, HasSubstr("bogus"));
}

TEST_F(ConfigTest, ABadFlagOverridingAGoodFileValueBlamesTheFlagNotTheFile) {
  auto file = write(
      "cgroup = demo\n"
      "mode = enforce\n");

  auto config = load({"--config", file, "--mode", "bogus"});
  ASSERT_FALSE(config.has_value());
  EXPECT_THAT(config.error().message, HasSubstr("--mode"));
  EXPECT_THAT(config.error().message, Not(HasSubstr(file + ":2:")))
      << "line 2 holds a valid mode; the bad value came from the command line";
}

TEST_F(ConfigTest, AMissingCgroupIsAnError) {
  auto file = write("mode = audit\n");
  auto config = load({"--config", file});
  ASSERT_FALSE(config.has_value());
  EXPECT_EQ(config.error().code, Errc::kInvalidArgument);
  EXPECT_THAT(config.error().message, HasSubstr("cgroup"));
  EXPECT_THAT(config.error().message, HasSubstr("required"));
  EXPECT_THAT(config.error().message, HasSubstr(file));
}

TEST_F(ConfigTest, AMissingCgroupWithoutAFileIsAnError) {
  auto config = load({});
  ASSERT_FALSE(config.has_value());
  EXPECT_THAT(config.error().message, HasSubstr("cgroup"));
}

TEST_F(ConfigTest, AMissingConfigFileIsNamed) {
  std::string missing = (dir_.path() / "absent.conf").string();
  auto config = load({"--config", missing, "--cgroup", "demo"});
  ASSERT_FALSE(config.has_value());
  EXPECT_EQ(config.error().code, Errc::kNotFound);
  EXPECT_THAT(config.error().message, HasSubstr(missing));
}

TEST_F(ConfigTest, AnUnreadableConfigFileIsNamed) {
  // A directory cannot be read as a file, even by root (who reads any mode).
  std::string directory = (dir_.path() / "conf.d").string();
  fs::create_directory(directory);
  auto config = load({"--config", directory, "--cgroup", "demo"});
  ASSERT_FALSE(config.has_value()) << "a directory was accepted as the config file";
  EXPECT_THAT(config.error().message, HasSubstr(directory));
  EXPECT_THAT(config.error().message, Not(HasSubstr("required")));
}

TEST_F(ConfigTest, AConfigFileWithoutReadPermissionIsNamed) {
  auto file = write("cgroup = demo\n");
  fs::permissions(file, fs::perms::none);
  // Root reads files of any mode: load as an unprivileged user, in a child.
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::geteuid() == 0 && ::setresuid(65534, 65534, 65534) != 0) ::_exit(3);
    auto config = load({"--config", file});
    bool named = !config.has_value() && config.error().code == Errc::kPermissionDenied &&
                 config.error().message.find(file) != std::string::npos;
    ::_exit(named ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the error did not name the file as unreadable; "
                                       "3: could not drop privileges";
}

TEST_F(ConfigTest, ClientPathsDefaultWithoutFlagOrFile) {
  auto paths = trustfence::config::load_client_paths({});
  ASSERT_TRUE(paths.has_value()) << paths.error().message;
  EXPECT_EQ(paths->pin_dir, "/sys/fs/bpf/trustfence");
  EXPECT_EQ(paths->api_socket, "/run/trustfence/api.sock");
}

TEST_F(ConfigTest, PinDirAloneIsReadFromTheFileIgnoringOtherKeysAndFlags) {
  auto file = write(
      "cgroup = demo\n"
      "pin-dir = /sys/fs/bpf/from-file\n"
      "mode = audit\n"
      "exempt = 10.0.0.0/8\n"
      "api-socket = /run/tf-test.sock\n");
  auto paths = trustfence::config::load_client_paths({"--json", "--config", file});
  ASSERT_TRUE(paths.has_value()) << paths.error().message;
  EXPECT_EQ(paths->pin_dir, "/sys/fs/bpf/from-file");
  EXPECT_EQ(paths->api_socket, "/run/tf-test.sock");
}

TEST_F(ConfigTest, PinDirAloneTakesTheFlagOverTheFile) {
  auto file = write("pin-dir = /sys/fs/bpf/from-file\n");
  auto pin_dir = trustfence::config::load_client_paths(
      {"--config", file, "--pin-dir", "/sys/fs/bpf/from-flag"});
  ASSERT_TRUE(pin_dir.has_value()) << pin_dir.error().message;
  EXPECT_EQ(pin_dir->pin_dir, "/sys/fs/bpf/from-flag");
}

TEST_F(ConfigTest, PinDirAloneNamesAMissingConfigFile) {
  std::string missing = (dir_.path() / "absent.conf").string();
  auto pin_dir = trustfence::config::load_client_paths({"--config", missing});
  ASSERT_FALSE(pin_dir.has_value()) << pin_dir->pin_dir;
  EXPECT_THAT(pin_dir.error().message, HasSubstr(missing));
}

TEST(ConfigKeys, DescribeEveryKey) {
  std::string help = trustfence::config::describe_keys();
  for (const char* key :
       {"cgroup", "pin-dir", "mode", "untracked-fallback", "exempt", "pending-rto-min-us",
        "max-connections", "listen", "peer", "peer-authentication", "attestation-timeout",
        "workload-id", "api-socket", "api-socket-group", "log-level"})
    EXPECT_THAT(help, HasSubstr(std::string("--") + key)) << key;
}

}  // namespace
