// The attestation and API keys of the config (listen, peer,
// peer-authentication, attestation-timeout, workload-id, api-socket,
// api-socket-group) and the CLI's load_client_paths: good values, defaults,
// and errors that name the key and, from a file, its line.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/un.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "support/test_ca.hpp"
#include "trustfence/config/config.hpp"

namespace trustfence::config {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kTeamA = "team-a.gke.local";

class AttestationConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "tf-attestation-config-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    team_a_ = write("team-a.pem", test::TestCa::root(kTeamA).pem());
    team_b_ = write("team-b.pem", test::TestCa::root("team-b.eks.local").pem());
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  std::string write(const std::string& name, const std::string& text) {
    auto path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }
  // Three lines (cgroup, trust-domain, its bundle), then the given ones
  // from line 4 on.
  std::string identity_lines() const {
    return "cgroup = demo\ntrust-domain = team-a.gke.local\n"
           "trust-bundle = team-a.gke.local:" +
           team_a_ + "\n";
  }
  std::string conf(const std::string& lines) {
    return write("agent.conf", identity_lines() + lines);
  }
  Result<Config> load_conf(const std::string& lines) { return load({"--config", conf(lines)}); }

  fs::path dir_;
  std::string team_a_, team_b_;
};

TEST_F(AttestationConfigTest, DefaultsWithoutTheKeys) {
  auto config = load({"--cgroup", "demo"});
  ASSERT_TRUE(config.has_value()) << config.error().message;
  const auto& a = config->attestation;
  EXPECT_EQ(a.listen.str(), "[::]:7400");
  EXPECT_EQ(a.listen.port(), kDefaultListenPort);
  EXPECT_FALSE(a.listen.ip().is_v4());
  EXPECT_TRUE(a.peers.empty());
  EXPECT_EQ(a.peer_authentication, PeerAuthentication::kStrict);
  EXPECT_EQ(a.timeout, kDefaultAttestationTimeout);
  EXPECT_EQ(a.timeout, 2s);
  EXPECT_TRUE(a.workloads.empty());
  EXPECT_EQ(config->api.socket, kDefaultApiSocket);
  EXPECT_EQ(config->api.socket, "/run/trustfence/api.sock");
  EXPECT_EQ(config->api.group, "");
}

TEST_F(AttestationConfigTest, EveryKeyIsRead) {
  auto config = load_conf(
      "listen = 10.0.0.5:7401\n"
      "peer = 10.8.0.0/24:10.0.0.5:7400\n"
      "peer = fd00:8::/64:[fd00::5]:7400\n"
      "peer-authentication = permissive\n"
      "attestation-timeout = 500ms\n"
      "workload-id = /kubepods/pod1:spiffe://team-a.gke.local/ns/web/sa/curl\n"
      "workload-id = kubepods/pod2:spiffe://team-a.gke.local/ns/api/sa/srv\n"
      "api-socket = /run/tf-test/api.sock\n"
      "api-socket-group = trustfence\n");
  ASSERT_TRUE(config.has_value()) << config.error().message;
  const auto& a = config->attestation;
  EXPECT_EQ(a.listen.str(), "10.0.0.5:7401");
  ASSERT_EQ(a.peers.size(), 2u);
  EXPECT_EQ(a.peers[0].text, "10.8.0.0/24:10.0.0.5:7400");
  EXPECT_EQ(a.peers[1].text, "fd00:8::/64:[fd00::5]:7400");
  EXPECT_EQ(a.peer_authentication, PeerAuthentication::kPermissive);
  EXPECT_EQ(a.timeout, 500ms);
  ASSERT_EQ(a.workloads.size(), 2u);
  EXPECT_EQ(a.workloads[0].cgroup, "/kubepods/pod1");
  EXPECT_EQ(a.workloads[0].id.str(), "spiffe://team-a.gke.local/ns/web/sa/curl");
  EXPECT_EQ(a.workloads[1].cgroup, "kubepods/pod2");
  EXPECT_EQ(a.workloads[1].id.str(), "spiffe://team-a.gke.local/ns/api/sa/srv");
  EXPECT_EQ(config->api.socket, "/run/tf-test/api.sock");
  EXPECT_EQ(config->api.group, "trustfence");
}

TEST_F(AttestationConfigTest, FlagsOverrideTheFile) {
  auto file = conf(
      "listen = 10.0.0.5:7401\n"
      "peer-authentication = permissive\n"
      "attestation-timeout = 500ms\n"
      "api-socket = /run/from-file.sock\n"
      "api-socket-group = from-file\n");
  auto config = load({"--config", file, "--listen", "[fd00::5]:7402", "--peer-authentication",
                      "strict", "--attestation-timeout=3s", "--api-socket", "/run/from-flag.sock",
                      "--api-socket-group", "from-flag"});
  ASSERT_TRUE(config.has_value()) << config.error().message;
  EXPECT_EQ(config->attestation.listen.str(), "[fd00::5]:7402");
  EXPECT_EQ(config->attestation.peer_authentication, PeerAuthentication::kStrict);
  EXPECT_EQ(config->attestation.timeout, 3s);
  EXPECT_EQ(config->api.socket, "/run/from-flag.sock");
  EXPECT_EQ(config->api.group, "from-flag");
}

// --- good values --------------------------------------------------------------------

struct GoodValue {
  const char* name;
  std::string key;
  std::string value;
  std::function<void(const Config&)> check;
};

void PrintTo(const GoodValue& c, std::ostream* os) { *os << c.key << " = " << c.value; }

class AttestationConfigAccepts : public AttestationConfigTest,
                                 public ::testing::WithParamInterface<GoodValue> {};

TEST_P(AttestationConfigAccepts, TheValue) {
  const GoodValue& c = GetParam();
  auto from_file = load_conf(c.key + " = " + c.value + "\n");
  ASSERT_TRUE(from_file.has_value()) << from_file.error().message;
  c.check(*from_file);
  // The same as a flag, with the identity from the file.
  auto from_flag = load({"--config", conf(""), "--" + c.key, c.value});
  ASSERT_TRUE(from_flag.has_value()) << from_flag.error().message;
  c.check(*from_flag);
}

std::function<void(const Config&)> listens_on(const char* expected) {
  return [expected](const Config& c) { EXPECT_EQ(c.attestation.listen.str(), expected); };
}
std::function<void(const Config&)> times_out_after(std::chrono::milliseconds expected) {
  return [expected](const Config& c) { EXPECT_EQ(c.attestation.timeout, expected); };
}
std::function<void(const Config&)> api_socket_is(std::string expected) {
  return [expected](const Config& c) { EXPECT_EQ(c.api.socket, expected); };
}

INSTANTIATE_TEST_SUITE_P(
    Table, AttestationConfigAccepts,
    ::testing::Values(
        GoodValue{"listen_v4", "listen", "10.0.0.5:7400", listens_on("10.0.0.5:7400")},
        GoodValue{"listen_any_v4", "listen", "0.0.0.0:7400", listens_on("0.0.0.0:7400")},
        GoodValue{"listen_v6", "listen", "[fd00::5]:1", listens_on("[fd00::5]:1")},
        GoodValue{"listen_top_port", "listen", "[::]:65535", listens_on("[::]:65535")},
        GoodValue{"strict", "peer-authentication", "strict",
                  [](const Config& c) {
                    EXPECT_EQ(c.attestation.peer_authentication, PeerAuthentication::kStrict);
                  }},
        GoodValue{"permissive", "peer-authentication", "permissive",
                  [](const Config& c) {
                    EXPECT_EQ(c.attestation.peer_authentication, PeerAuthentication::kPermissive);
                  }},
        GoodValue{"timeout_floor", "attestation-timeout", "100ms", times_out_after(100ms)},
        GoodValue{"timeout_ms", "attestation-timeout", "500ms", times_out_after(500ms)},
        GoodValue{"timeout_s", "attestation-timeout", "2s", times_out_after(2s)},
        GoodValue{"timeout_ceiling_s", "attestation-timeout", "60s", times_out_after(60s)},
        GoodValue{"timeout_ceiling_ms", "attestation-timeout", "60000ms", times_out_after(60s)},
        GoodValue{"api_socket", "api-socket", "/tmp/tf.sock", api_socket_is("/tmp/tf.sock")},
        // sun_path holds 108 bytes with the terminating NUL.
        GoodValue{"api_socket_longest", "api-socket", "/" + std::string(106, 's'),
                  api_socket_is("/" + std::string(106, 's'))},
        GoodValue{"api_socket_group", "api-socket-group", "trustfence",
                  [](const Config& c) { EXPECT_EQ(c.api.group, "trustfence"); }},
        GoodValue{"workload_id_nested_cgroup", "workload-id",
                  "/kubepods/burstable/pod-1:spiffe://team-a.gke.local/ns/web/sa/curl",
                  [](const Config& c) {
                    ASSERT_EQ(c.attestation.workloads.size(), 1u);
                    EXPECT_EQ(c.attestation.workloads[0].cgroup, "/kubepods/burstable/pod-1");
                  }},
        // The ID starts at ":spiffe://": a cgroup name may hold a colon.
        GoodValue{"workload_id_cgroup_with_colon", "workload-id",
                  "/kubepods/a:b:spiffe://team-a.gke.local/ns/web/sa/curl",
                  [](const Config& c) {
                    ASSERT_EQ(c.attestation.workloads.size(), 1u);
                    EXPECT_EQ(c.attestation.workloads[0].cgroup, "/kubepods/a:b");
                    EXPECT_EQ(c.attestation.workloads[0].id.str(),
                              "spiffe://team-a.gke.local/ns/web/sa/curl");
                  }}),
    [](const auto& info) { return std::string(info.param.name); });

// --- peer routes --------------------------------------------------------------------

struct Route {
  const char* name;
  std::string text;
  const char* cidr;   // host bits cleared
  const char* agent;  // canonical
  const char* inside;
  const char* outside;
};

void PrintTo(const Route& c, std::ostream* os) { *os << c.text; }

class PeerRoutes : public AttestationConfigTest, public ::testing::WithParamInterface<Route> {};

TEST_P(PeerRoutes, ParseIntoCidrAndAgent) {
  const Route& c = GetParam();
  auto config = load({"--cgroup", "demo", "--peer", c.text});
  ASSERT_TRUE(config.has_value()) << config.error().message;
  ASSERT_EQ(config->attestation.peers.size(), 1u);
  const PeerRoute& route = config->attestation.peers[0];
  EXPECT_EQ(route.text, c.text);
  EXPECT_EQ(route.cidr.str(), c.cidr);
  EXPECT_EQ(route.agent.str(), c.agent);
  EXPECT_TRUE(route.cidr.contains(net::IpAddress::parse(c.inside).value())) << c.inside;
  EXPECT_FALSE(route.cidr.contains(net::IpAddress::parse(c.outside).value())) << c.outside;
}

INSTANTIATE_TEST_SUITE_P(
    Table, PeerRoutes,
    ::testing::Values(Route{"v4_to_v4", "10.8.0.0/24:10.0.0.5:7400", "10.8.0.0/24", "10.0.0.5:7400",
                            "10.8.0.255", "10.8.1.0"},
                      Route{"v4_host_bits_cleared", "10.8.0.7/24:10.0.0.5:7400", "10.8.0.0/24",
                            "10.0.0.5:7400", "10.8.0.1", "10.9.0.1"},
                      Route{"v4_single_host", "10.8.0.7/32:10.0.0.5:7400", "10.8.0.7/32",
                            "10.0.0.5:7400", "10.8.0.7", "10.8.0.8"},
                      Route{"v4_everything", "0.0.0.0/0:10.0.0.5:7400", "0.0.0.0/0",
                            "10.0.0.5:7400", "192.168.1.1", "fd00::1"},
                      Route{"v6_to_v6", "fd00:8::/64:[fd00::5]:7400", "fd00:8::/64",
                            "[fd00::5]:7400", "fd00:8::ffff", "fd00:9::1"},
                      Route{"v6_single_host", "fd00:8::1/128:[fd00::5]:7400", "fd00:8::1/128",
                            "[fd00::5]:7400", "fd00:8::1", "fd00:8::2"},
                      Route{"v6_to_v4", "fd00:8::/64:10.0.0.5:7400", "fd00:8::/64", "10.0.0.5:7400",
                            "fd00:8::1", "10.0.0.5"},
                      Route{"v4_to_v6", "10.8.0.0/16:[fd00::5]:7401", "10.8.0.0/16",
                            "[fd00::5]:7401", "10.8.255.1", "fd00::5"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(AttestationConfigTest, PeerRoutesKeepTheirOrderFromFileAndFlags) {
  auto config = load({"--cgroup", "demo", "--peer", "10.8.0.0/24:10.0.0.5:7400", "--peer",
                      "10.0.0.0/8:10.0.0.6:7400"});
  ASSERT_TRUE(config.has_value()) << config.error().message;
  std::vector<std::string> texts;
  for (const auto& route : config->attestation.peers) texts.push_back(route.text);
  EXPECT_THAT(texts, ElementsAre("10.8.0.0/24:10.0.0.5:7400", "10.0.0.0/8:10.0.0.6:7400"));

  auto from_file = load_conf(
      "peer = 10.8.0.0/24:10.0.0.5:7400\n"
      "peer = 10.0.0.0/8:10.0.0.6:7400\n"
      "peer = fd00::/8:[fd00::6]:7400\n");
  ASSERT_TRUE(from_file.has_value()) << from_file.error().message;
  texts.clear();
  for (const auto& route : from_file->attestation.peers) texts.push_back(route.text);
  EXPECT_THAT(texts, ElementsAre("10.8.0.0/24:10.0.0.5:7400", "10.0.0.0/8:10.0.0.6:7400",
                                 "fd00::/8:[fd00::6]:7400"));
}

// --- bad values ---------------------------------------------------------------------

struct BadValue {
  const char* name;
  std::string key;
  std::string value;
  const char* why;  // part of the message
};

void PrintTo(const BadValue& c, std::ostream* os) { *os << c.key << " = " << c.value; }

class AttestationConfigRejects : public AttestationConfigTest,
                                 public ::testing::WithParamInterface<BadValue> {};

TEST_P(AttestationConfigRejects, NamingKeyFileAndLine) {
  const BadValue& c = GetParam();
  auto file = conf(c.key + " = " + c.value + "\n");
  auto config = load({"--config", file});
  ASSERT_FALSE(config.has_value()) << c.key << " = " << c.value << " was accepted";
  EXPECT_EQ(config.error().code, Errc::kInvalidArgument);
  EXPECT_THAT(config.error().message, HasSubstr(file + ":4: "));
  EXPECT_THAT(config.error().message, HasSubstr(c.key + " = " + c.value));
  EXPECT_THAT(config.error().message, HasSubstr(c.why));
}

TEST_P(AttestationConfigRejects, NamingTheFlag) {
  const BadValue& c = GetParam();
  auto config = load({"--config", conf(""), "--" + c.key, c.value});
  ASSERT_FALSE(config.has_value()) << "--" << c.key << " " << c.value << " was accepted";
  EXPECT_THAT(config.error().message, HasSubstr("--" + c.key + ": "));
  EXPECT_THAT(config.error().message, HasSubstr(c.why));
}

INSTANTIATE_TEST_SUITE_P(
    Table, AttestationConfigRejects,
    ::testing::Values(
        BadValue{"listen_port_only", "listen", "7400", "HOST:PORT"},
        BadValue{"listen_v6_without_brackets", "listen", "fd00::1:7400", "brackets"},
        BadValue{"listen_port_zero", "listen", "10.0.0.1:0", "port must be 1..65535"},
        BadValue{"listen_port_too_big", "listen", "10.0.0.1:65536", "port must be 1..65535"},
        BadValue{"listen_hostname", "listen", "localhost:7400", "not an IPv4 or IPv6 address"},
        BadValue{"listen_v6_without_port", "listen", "[::]", "[IPv6]:PORT"},
        BadValue{"peer_without_agent", "peer", "10.8.0.0/24", "CIDR:HOST:PORT"},
        BadValue{"peer_without_prefix", "peer", "10.8.0.1:10.0.0.5:7400", "CIDR:HOST:PORT"},
        BadValue{"peer_prefix_too_long", "peer", "10.8.0.0/33:10.0.0.5:7400", "0..32"},
        BadValue{"peer_v6_prefix_too_long", "peer", "fd00::/129:[fd00::5]:7400", "0..128"},
        BadValue{"peer_agent_without_port", "peer", "10.8.0.0/24:10.0.0.5", "HOST:PORT"},
        BadValue{"peer_agent_port_zero", "peer", "10.8.0.0/24:10.0.0.5:0", "port must be 1..65535"},
        BadValue{"peer_agent_v6_without_brackets", "peer", "10.8.0.0/24:fd00::5:7400", "brackets"},
        BadValue{"peer_agent_hostname", "peer", "10.8.0.0/24:agent-2.local:7400",
                 "not an IPv4 or IPv6 address"},
        BadValue{"peer_authentication_case", "peer-authentication", "Strict",
                 "strict or permissive"},
        BadValue{"peer_authentication_other", "peer-authentication", "off", "strict or permissive"},
        BadValue{"timeout_below_floor", "attestation-timeout", "99ms", "100ms to 60s"},
        BadValue{"timeout_zero", "attestation-timeout", "0s", "100ms to 60s"},
        BadValue{"timeout_above_ceiling", "attestation-timeout", "61s", "100ms to 60s"},
        BadValue{"timeout_above_ceiling_ms", "attestation-timeout", "60001ms", "100ms to 60s"},
        BadValue{"timeout_without_unit", "attestation-timeout", "2", "100ms to 60s"},
        BadValue{"timeout_minutes", "attestation-timeout", "1m", "100ms to 60s"},
        BadValue{"timeout_microseconds", "attestation-timeout", "500000us", "100ms to 60s"},
        BadValue{"timeout_fraction", "attestation-timeout", "1.5s", "100ms to 60s"},
        BadValue{"timeout_negative", "attestation-timeout", "-1s", "100ms to 60s"},
        BadValue{"timeout_unit_only", "attestation-timeout", "ms", "100ms to 60s"},
        BadValue{"timeout_upper_case", "attestation-timeout", "2S", "100ms to 60s"},
        BadValue{"timeout_space", "attestation-timeout", "2 s", "100ms to 60s"},
        // 2^32 + 1000: must not wrap into range.
        BadValue{"timeout_wrapping", "attestation-timeout", "4294968296ms", "100ms to 60s"},
        BadValue{"workload_other_domain", "workload-id",
                 "/kubepods/pod1:spiffe://team-b.eks.local/ns/web/sa/curl",
                 "its own trust domain team-a.gke.local"},
        BadValue{"workload_lookalike_domain", "workload-id",
                 "/kubepods/pod1:spiffe://team-a.gke.local.evil.com/ns/web/sa/curl",
                 "its own trust domain"},
        BadValue{"workload_without_cgroup", "workload-id",
                 ":spiffe://team-a.gke.local/ns/web/sa/curl", "CGROUP_PATH:spiffe://"},
        BadValue{"workload_without_id", "workload-id", "/kubepods/pod1", "CGROUP_PATH:spiffe://"},
        BadValue{"workload_not_spiffe", "workload-id",
                 "/kubepods/pod1:https://team-a.gke.local/ns/web", "CGROUP_PATH:spiffe://"},
        BadValue{"workload_malformed_id", "workload-id",
                 "/kubepods/pod1:spiffe://team-a.gke.local/ns//web", "workload-id"},
        BadValue{"workload_domain_only", "workload-id", "/kubepods/pod1:spiffe://team-a.gke.local",
                 "workload-id"},
        BadValue{"api_socket_relative", "api-socket", "run/api.sock", "absolute path"},
        BadValue{"api_socket_too_long", "api-socket", "/" + std::string(107, 's'),
                 "longer than a Unix socket path"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(AttestationConfigTest, TheBadOneOfRepeatedPeersIsPointedAt) {
  auto file = conf(
      "peer = 10.8.0.0/24:10.0.0.5:7400\n"
      "peer = fd00::/8:[fd00::6]:7400\n"
      "peer = 10.9.0.0/24:10.0.0.7\n");
  auto config = load({"--config", file});
  ASSERT_FALSE(config.has_value());
  EXPECT_THAT(config.error().message, HasSubstr(file + ":6: peer = 10.9.0.0/24:10.0.0.7"));
}

// An agent vouches for workloads of its own domain only, not an alias's.
TEST_F(AttestationConfigTest, WorkloadIdOfAnAliasDomainIsRefused) {
  auto file = conf(
      "trust-domain-alias = team-b.eks.local\n"
      "trust-bundle = team-b.eks.local:" +
      team_b_ +
      "\n"
      "workload-id = /kubepods/pod1:spiffe://team-b.eks.local/ns/web/sa/curl\n");
  auto config = load({"--config", file});
  ASSERT_FALSE(config.has_value());
  EXPECT_THAT(config.error().message, HasSubstr(file + ":6: workload-id = "));
  EXPECT_THAT(config.error().message, HasSubstr("own trust domain team-a.gke.local"));
}

TEST_F(AttestationConfigTest, WorkloadIdNeedsTrustDomain) {
  auto file = write("agent.conf",
                    "cgroup = demo\n"
                    "workload-id = /kubepods/pod1:spiffe://team-a.gke.local/ns/web/sa/curl\n");
  auto config = load({"--config", file});
  ASSERT_FALSE(config.has_value()) << "a workload-id without trust-domain was accepted";
  EXPECT_THAT(config.error().message, HasSubstr(file + ":2: workload-id = "));
  EXPECT_THAT(config.error().message, HasSubstr("needs trust-domain"));

  auto flag = load({"--cgroup", "demo", "--workload-id",
                    "/kubepods/pod1:spiffe://team-a.gke.local/ns/web/sa/curl"});
  ASSERT_FALSE(flag.has_value());
  EXPECT_THAT(flag.error().message, HasSubstr("--workload-id: "));
  EXPECT_THAT(flag.error().message, HasSubstr("needs trust-domain"));
}

TEST_F(AttestationConfigTest, ABadFlagOverridingAGoodFileValueBlamesTheFlag) {
  auto file = conf("attestation-timeout = 2s\n");
  auto config = load({"--config", file, "--attestation-timeout", "2h"});
  ASSERT_FALSE(config.has_value());
  EXPECT_THAT(config.error().message, HasSubstr("--attestation-timeout: "));
  EXPECT_THAT(config.error().message, Not(HasSubstr(file + ":4:")));
}

// --- load_client_paths --------------------------------------------------------------

struct ClientPathsCase {
  const char* name;
  std::optional<std::string> file;  // the config file's text, if any
  std::vector<std::string> args;    // after --config FILE, if any
  const char* pin_dir;
  const char* api_socket;
};

void PrintTo(const ClientPathsCase& c, std::ostream* os) { *os << c.name; }

class ClientPathsLoading : public AttestationConfigTest,
                           public ::testing::WithParamInterface<ClientPathsCase> {};

// A flag wins over the file, the file over the default; everything else
// in the file or on the command line is not the CLI's business.
TEST_P(ClientPathsLoading, FlagOverFileOverDefault) {
  const ClientPathsCase& c = GetParam();
  std::vector<std::string> args;
  if (c.file) args = {"--config", write("agent.conf", *c.file)};
  args.insert(args.end(), c.args.begin(), c.args.end());
  auto paths = load_client_paths(args);
  ASSERT_TRUE(paths.has_value()) << paths.error().message;
  EXPECT_EQ(paths->pin_dir, c.pin_dir);
  EXPECT_EQ(paths->api_socket, c.api_socket);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ClientPathsLoading,
    ::testing::Values(
        ClientPathsCase{
            "defaults", std::nullopt, {}, "/sys/fs/bpf/trustfence", "/run/trustfence/api.sock"},
        ClientPathsCase{"flags_alone",
                        std::nullopt,
                        {"--pin-dir", "/sys/fs/bpf/flag", "--api-socket=/run/flag.sock"},
                        "/sys/fs/bpf/flag",
                        "/run/flag.sock"},
        ClientPathsCase{"file_alone",
                        "cgroup = demo\npin-dir = /sys/fs/bpf/file\napi-socket = /run/file.sock\n",
                        {},
                        "/sys/fs/bpf/file",
                        "/run/file.sock"},
        ClientPathsCase{"flags_over_file",
                        "pin-dir = /sys/fs/bpf/file\napi-socket = /run/file.sock\n",
                        {"--api-socket", "/run/flag.sock", "--pin-dir", "/sys/fs/bpf/flag"},
                        "/sys/fs/bpf/flag",
                        "/run/flag.sock"},
        ClientPathsCase{"flag_for_one_file_for_the_other",
                        "pin-dir = /sys/fs/bpf/file\napi-socket = /run/file.sock\n",
                        {"--api-socket", "/run/flag.sock"},
                        "/sys/fs/bpf/file",
                        "/run/flag.sock"},
        ClientPathsCase{"file_for_one_default_for_the_other",
                        "api-socket = /run/file.sock\n",
                        {},
                        "/sys/fs/bpf/trustfence",
                        "/run/file.sock"},
        ClientPathsCase{"other_keys_and_flags_ignored",
                        "cgroup = demo\nmode = audit\nlisten = 10.0.0.1:7400\n"
                        "peer = 10.8.0.0/24:10.0.0.5:7400\nunknown-key = 1\n"
                        "api-socket = /run/file.sock\n",
                        {"--json", "--mode=audit"},
                        "/sys/fs/bpf/trustfence",
                        "/run/file.sock"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(AttestationConfigTest, ClientPathsNameAMalformedFileLine) {
  auto file = write("agent.conf", "api-socket = /run/file.sock\n[section]\n");
  auto paths = load_client_paths({"--config", file});
  ASSERT_FALSE(paths.has_value()) << paths->api_socket;
  EXPECT_THAT(paths.error().message, HasSubstr(file + ":2: "));
}

TEST_F(AttestationConfigTest, ClientPathsNameAMissingFile) {
  auto missing = (dir_ / "absent.conf").string();
  auto paths = load_client_paths({"--api-socket", "/run/flag.sock", "--config", missing});
  ASSERT_FALSE(paths.has_value()) << paths->api_socket;
  EXPECT_EQ(paths.error().code, Errc::kNotFound);
  EXPECT_THAT(paths.error().message, HasSubstr(missing));
}

}  // namespace
}  // namespace trustfence::config
