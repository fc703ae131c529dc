// The identity and policy keys of the config: validated once, with errors
// that name the key, the file and the line.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "support/test_ca.hpp"
#include "trustfence/config/config.hpp"

namespace trustfence::config {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class IdentityConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tf-identity-config-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    team_a_ = write("team-a.pem", test::TestCa::root("team-a.gke.local").pem());
    team_b_ = write("team-b.pem", test::TestCa::root("team-b.eks.local").pem());
    team_c_ = write("team-c.pem", test::TestCa::root("team-c.local").pem());
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    auto path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }
  // A config file: cgroup plus the given lines.
  std::string conf(const std::string& lines) {
    return write("agent.conf", "cgroup = demo\n" + lines);
  }
  Result<Config> load_conf(const std::string& lines) { return load({"--config", conf(lines)}); }

  fs::path dir_;
  std::string team_a_, team_b_, team_c_;
};

TEST_F(IdentityConfigTest, WithoutTrustDomainThereIsNoIdentity) {
  auto config = load_conf("");
  ASSERT_TRUE(config.has_value()) << config.error().message;
  EXPECT_FALSE(config->identity.has_value());
}

TEST_F(IdentityConfigTest, EveryKeyIsRead) {
  auto config = load_conf(
      "trust-domain = team-a.gke.local\n"
      "trust-domain-alias = team-b.eks.local\n"
      "trust-bundle = team-a.gke.local:" +
      team_a_ + "\n" + "trust-bundle = team-b.eks.local:" + team_b_ + "\n" +
      "trust-bundle = team-c.local:" + team_c_ + "\n" +
      "allow-id = spiffe://team-c.local/ns/auth/sa/auth\n"
      "allow-id = spiffe://team-c.local/ns/shared/*\n"
      "deny-id = spiffe://team-b.eks.local/ns/legacy/*\n");
  ASSERT_TRUE(config.has_value()) << config.error().message;
  ASSERT_TRUE(config->identity.has_value());
  const auto& rules = config->identity->rules;
  EXPECT_EQ(rules.trust_domain.name(), "team-a.gke.local");
  ASSERT_EQ(rules.aliases.size(), 1u);
  EXPECT_EQ(rules.aliases[0].name(), "team-b.eks.local");
  ASSERT_EQ(rules.allow.size(), 2u);
  EXPECT_EQ(rules.allow[1].text(), "spiffe://team-c.local/ns/shared/*");
  ASSERT_EQ(rules.deny.size(), 1u);
  ASSERT_EQ(config->identity->bundles.size(), 3u);
  EXPECT_EQ(config->identity->bundles[1].path, team_b_);

  auto bundles = load_bundles(*config->identity);
  ASSERT_TRUE(bundles.has_value()) << bundles.error().message;
  EXPECT_EQ(bundles->size(), 3u);
}

struct BadIdentity {
  const char* name;
  std::string lines;  // {A} {B} {C}: bundle paths; {MISSING}: a path that is not there
  const char* key;    // the key the error must name
  int line;           // the file line it must name (cgroup is line 1)
  const char* why;
};

class IdentityConfigRejects : public IdentityConfigTest,
                              public ::testing::WithParamInterface<BadIdentity> {};

TEST_P(IdentityConfigRejects, NamingKeyFileAndLine) {
  auto lines = GetParam().lines;
  auto replace = [&](const std::string& from, const std::string& to) {
    for (auto at = lines.find(from); at != std::string::npos; at = lines.find(from))
      lines.replace(at, from.size(), to);
  };
  replace("{A}", team_a_);
  replace("{B}", team_b_);
  replace("{C}", team_c_);
  replace("{MISSING}", (dir_ / "missing.pem").string());
  auto file = conf(lines);
  auto config = load({"--config", file});
  ASSERT_FALSE(config.has_value()) << GetParam().name;
  EXPECT_THAT(config.error().message,
              HasSubstr(file + ":" + std::to_string(GetParam().line) + ": "));
  EXPECT_THAT(config.error().message, HasSubstr(GetParam().key));
  EXPECT_THAT(config.error().message, HasSubstr(GetParam().why));
}

INSTANTIATE_TEST_SUITE_P(
    Table, IdentityConfigRejects,
    ::testing::Values(
        BadIdentity{"uppercase_domain", "trust-domain = Team-A.local\n", "trust-domain", 2,
                    "Team-A.local"},
        BadIdentity{"alias_without_domain", "trust-domain-alias = team-b.eks.local\n",
                    "trust-domain-alias", 2, "needs trust-domain"},
        BadIdentity{"alias_without_bundle",
                    "trust-domain = team-a.gke.local\ntrust-domain-alias = team-b.eks.local\n"
                    "trust-bundle = team-a.gke.local:{A}\n",
                    "trust-domain-alias", 3, "no trust-bundle for team-b.eks.local"},
        BadIdentity{"local_without_bundle", "trust-domain = team-a.gke.local\n", "trust-domain", 2,
                    "no trust-bundle for team-a.gke.local"},
        BadIdentity{"allow_id_domain_without_bundle",
                    "trust-domain = team-a.gke.local\ntrust-bundle = team-a.gke.local:{A}\n"
                    "allow-id = spiffe://team-c.local/ns/auth/sa/auth\n",
                    "allow-id", 4, "no trust-bundle for team-c.local"},
        BadIdentity{"missing_bundle_file",
                    "trust-domain = team-a.gke.local\ntrust-bundle = team-a.gke.local:{MISSING}\n",
                    "trust-bundle", 3, "missing.pem"},
        BadIdentity{"bundle_without_domain_part",
                    "trust-domain = team-a.gke.local\ntrust-bundle = {A}\n", "trust-bundle", 3,
                    "TRUST_DOMAIN:PATH"},
        BadIdentity{"second_bundle_for_a_domain",
                    "trust-domain = team-a.gke.local\ntrust-bundle = team-a.gke.local:{A}\n"
                    "trust-bundle = team-a.gke.local:{B}\n",
                    "trust-bundle", 4, "a second bundle"},
        BadIdentity{"malformed_allow_id",
                    "trust-domain = team-a.gke.local\ntrust-bundle = team-a.gke.local:{A}\n"
                    "allow-id = spiffe://team-c.local/ns//x\n",
                    "allow-id", 4, "allow-id = spiffe://team-c.local/ns//x"},
        BadIdentity{"malformed_deny_id",
                    "trust-domain = team-a.gke.local\ntrust-bundle = team-a.gke.local:{A}\n"
                    "deny-id = http://team-a.gke.local/x\n",
                    "deny-id", 4, "deny-id = http://team-a.gke.local/x"},
        BadIdentity{"alias_is_local",
                    "trust-domain = team-a.gke.local\n"
                    "trust-domain-alias = team-a.gke.local\n",
                    "trust-domain-alias", 3, "local trust domain itself"},
        BadIdentity{"cert_without_key",
                    "trust-domain = team-a.gke.local\ntrust-bundle = team-a.gke.local:{A}\n"
                    "svid-cert = {A}\n",
                    "svid-cert", 4, "go together"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace trustfence::config

namespace trustfence::config {
namespace {

// Lines Boost.Program_options must never see: it would loop forever
// formatting an error about a key that contains one of its placeholders
// (found by fuzz/config_fuzz.cpp).
TEST_F(IdentityConfigTest, MalformedLinesAreRejectedWithTheirLine) {
  struct Row {
    const char* line;
    const char* why;
  };
  for (const Row& row :
       {Row{"option '%canonical_option%' = 1", "not a configuration key"},
        Row{"[section]", "expected `key = value`"}, Row{"cgroup demo", "expected `key = value`"},
        Row{"Mode = audit", "not a configuration key"}}) {
    auto file = conf(std::string(row.line) + "\n");
    auto config = load({"--config", file});
    ASSERT_FALSE(config.has_value()) << row.line;
    EXPECT_THAT(config.error().message, HasSubstr(file + ":2: ")) << row.line;
    EXPECT_THAT(config.error().message, HasSubstr(row.why)) << row.line;
  }
  auto flag = load({"--%canonical_option%", "x", "--cgroup", "demo"});
  ASSERT_FALSE(flag.has_value());
  EXPECT_THAT(flag.error().message, HasSubstr("unknown option"));
}

}  // namespace
}  // namespace trustfence::config
