// `trustfence cert check`: the verdict the agent would give a peer chain,
// through the built binary. Three clusters, each with its own CA minted here.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "support/run_cli.hpp"
#include "support/test_ca.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using trustfence::test::TestCa;
using trustfence::testing::run_cli;

class CertCheck : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("tf-cert-check-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    team_a_ = new TestCa(TestCa::root("team-a.gke.local"));
    team_b_ = new TestCa(TestCa::root("team-b.eks.local"));
    team_c_ = new TestCa(TestCa::root("team-c.local"));
    write("team-a.pem", team_a_->pem());
    write("team-b.pem", team_b_->pem());
    write("team-c.pem", team_c_->pem());
    // Cluster 1: team-a, alias team-b, team-c's bundle known but not allowed
    // except one identity; one team-b namespace denied.
    write("agent.conf",
          "cgroup = demo\n"
          "trust-domain = team-a.gke.local\n"
          "trust-domain-alias = team-b.eks.local\n"
          "trust-bundle = team-a.gke.local:" +
              path("team-a.pem") + "\n" + "trust-bundle = team-b.eks.local:" + path("team-b.pem") +
              "\n" + "trust-bundle = team-c.local:" + path("team-c.pem") + "\n" +
              "allow-id = spiffe://team-c.local/ns/auth/sa/auth\n"
              "deny-id = spiffe://team-b.eks.local/ns/legacy/*\n");
    write("no-c.conf",
          "cgroup = demo\n"
          "trust-domain = team-a.gke.local\n"
          "trust-bundle = team-a.gke.local:" +
              path("team-a.pem") + "\n");
  }
  static void TearDownTestSuite() {
    fs::remove_all(dir_);
    delete team_a_;
    delete team_b_;
    delete team_c_;
  }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }
  static void write(const std::string& name, const std::string& text) {
    std::ofstream(path(name)) << text;
  }
  // A leaf for id issued by ca (through an intermediate), written as PEM.
  static std::string chain(const TestCa& ca, const std::string& id, const std::string& name) {
    auto intermediate = ca.intermediate();
    auto leaf = intermediate.issue(trustfence::test::leaf_spec(id));
    write(name, leaf.pem() + intermediate.pem());
    return path(name);
  }
  static trustfence::testing::CliRun check(const std::string& chain_path,
                                           const std::string& conf = "agent.conf") {
    return run_cli({"cert", "check", "--config", path(conf), "--chain", chain_path, "--json"});
  }

  static inline fs::path dir_;
  static inline TestCa* team_a_ = nullptr;
  static inline TestCa* team_b_ = nullptr;
  static inline TestCa* team_c_ = nullptr;
};

struct Expect {
  int exit_code;
  const char* verdict;
  const char* reason;
};

void expect(const trustfence::testing::CliRun& run, Expect want) {
  ASSERT_EQ(run.exit_code, want.exit_code) << run.out;
  auto out = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_FALSE(out.is_discarded()) << run.out;
  EXPECT_EQ(out["verdict"], want.verdict) << run.out;
  EXPECT_EQ(out["reason"], want.reason) << run.out;
}

TEST_F(CertCheck, LocalDomainIsAllowed) {
  auto run = check(chain(*team_a_, "spiffe://team-a.gke.local/ns/web/sa/web", "a.pem"));
  expect(run, {0, "allow", "local-domain"});
  EXPECT_THAT(run.out, HasSubstr("\"peer_trust_domain\": \"team-a.gke.local\""));
}

TEST_F(CertCheck, AliasDomainIsAllowed) {
  expect(check(chain(*team_b_, "spiffe://team-b.eks.local/ns/web/sa/web", "b.pem")),
         {0, "allow", "alias-domain"});
}

TEST_F(CertCheck, DenyIdWinsOverTheAlias) {
  auto run = check(chain(*team_b_, "spiffe://team-b.eks.local/ns/legacy/sa/old", "b-legacy.pem"));
  expect(run, {1, "deny", "id-denied"});
  EXPECT_THAT(run.out, HasSubstr("deny-id = spiffe://team-b.eks.local/ns/legacy/*"));
}

TEST_F(CertCheck, AThirdDomainIsDeniedEvenWithAValidCertificate) {
  expect(check(chain(*team_c_, "spiffe://team-c.local/ns/web/sa/web", "c.pem")),
         {1, "deny", "domain-not-allowed"});
}

TEST_F(CertCheck, AnAllowedIdOfTheThirdDomainIsAllowed) {
  expect(check(chain(*team_c_, "spiffe://team-c.local/ns/auth/sa/auth", "c-auth.pem")),
         {0, "allow", "allowed-id"});
}

TEST_F(CertCheck, TeamACaClaimingATeamBIdentityIsASpoof) {
  expect(check(chain(*team_a_, "spiffe://team-b.eks.local/ns/web/sa/web", "spoof.pem")),
         {1, "deny", "bad-chain"});
}

TEST_F(CertCheck, ADomainWithoutABundleIsNoBundle) {
  expect(check(chain(*team_c_, "spiffe://team-c.local/ns/web/sa/web", "c2.pem"), "no-c.conf"),
         {1, "deny", "no-bundle"});
}

TEST_F(CertCheck, BadInputExitsTwoAndSaysWhy) {
  write("garbage.pem", "not a certificate at all\n");
  auto garbage =
      run_cli({"cert", "check", "--config", path("agent.conf"), "--chain", path("garbage.pem")});
  EXPECT_EQ(garbage.exit_code, 2) << garbage.out;
  EXPECT_THAT(garbage.out, HasSubstr(path("garbage.pem")));

  auto missing =
      run_cli({"cert", "check", "--config", path("agent.conf"), "--chain", path("absent.pem")});
  EXPECT_EQ(missing.exit_code, 2) << missing.out;
  EXPECT_THAT(missing.out, HasSubstr(path("absent.pem")));

  auto no_chain = run_cli({"cert", "check", "--config", path("agent.conf")});
  EXPECT_EQ(no_chain.exit_code, 2) << no_chain.out;

  auto bad_config =
      run_cli({"cert", "check", "--config", path("absent.conf"), "--chain", path("garbage.pem")});
  EXPECT_EQ(bad_config.exit_code, 2) << bad_config.out;
  EXPECT_THAT(bad_config.out, HasSubstr("absent.conf"));
}

TEST_F(CertCheck, HumanOutputNamesVerdictReasonAndPeer) {
  auto run = run_cli({"cert", "check", "--config", path("agent.conf"), "--chain",
                      chain(*team_b_, "spiffe://team-b.eks.local/ns/web/sa/web", "b2.pem")});
  EXPECT_EQ(run.exit_code, 0) << run.out;
  EXPECT_THAT(run.out, HasSubstr("verdict: allow"));
  EXPECT_THAT(run.out, HasSubstr("reason: alias-domain"));
  EXPECT_THAT(run.out, HasSubstr("peer: spiffe://team-b.eks.local/ns/web/sa/web"));
}

}  // namespace
