// The seed scenario end to end: three clusters as nodes of one topology,
// one agent each, real servers and clients in the nodes' cgroups.
//   cluster 1 team-a.gke.local, alias team-b.eks.local
//   cluster 2 team-b.eks.local, alias team-a.gke.local
//   cluster 3 team-c.local, no alias
// Every node holds every bundle (federation); policy decides.

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "support/e2e/cluster.hpp"
#include "support/kernel/assert_ok.hpp"
#include "support/kernel/checksum.hpp"
#include "support/privileges.hpp"
#include "support/process.hpp"

namespace trustfence::testing::e2e {
namespace {

using json = nlohmann::json;

constexpr std::uint16_t kHttpPort = 8000;
constexpr std::uint16_t kSocatPort = 9000;
// curl exit codes: the server reset the connection / the peer closed it.
constexpr int kCurlRecvFailure = 56;
constexpr int kCurlEmptyReply = 52;
constexpr int kCurlSendFailure = 55;
constexpr int kCurlConnectFailure = 7;

// How curl reports a connection the far end or our own agent cut: reset
// or aborted, never timed out (28). A reset that lands before curl has
// checked its non-blocking connect is reported as a failed connect.
bool cut_short(int curl_exit) {
  return curl_exit == kCurlRecvFailure || curl_exit == kCurlEmptyReply ||
         curl_exit == kCurlSendFailure || curl_exit == kCurlConnectFailure;
}

std::string sha256_file(const std::string& path) { return kernel::Sha256::of_file(path); }

std::vector<Cluster> make_clusters() {
  std::vector<Cluster> clusters;
  for (const char* td : {"team-a.gke.local", "team-b.eks.local", "team-c.local"})
    clusters.emplace_back(td);
  return clusters;
}

enum class Family { kIpv4, kIpv6 };

std::string family_name(const ::testing::TestParamInfo<Family>& info) {
  return info.param == Family::kIpv4 ? "IPv4" : "IPv6";
}

class SeedScenario : public ::testing::TestWithParam<Family> {
 protected:
  static constexpr std::size_t kNodes = 5;  // 3 clusters, a spoofer, a node without agent
  static constexpr std::size_t kSpoofer = 3;
  static constexpr std::size_t kNoAgent = 4;

  void SetUp() override {
    TF_REQUIRE_ROOT();
    TF_ASSERT_OK_AND_ASSIGN(auto topology, Topology::create(kNodes));
    topology_.emplace(std::move(topology));
    TF_ASSERT_OK_AND_ASSIGN(auto dir, TempDir::create());
    dir_.emplace(std::move(dir));
    payload_ = dir_->path() + "/payload.bin";
    std::mt19937_64 rng(42);
    std::string bytes(1 << 20, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    TF_ASSERT_OK(dir_->write("payload.bin", bytes));
  }

  std::string ip(std::size_t node) const {
    return GetParam() == Family::kIpv4 ? topology_->ipv4(node) : topology_->ipv6(node);
  }
  std::string url(std::size_t node, const std::string& file) const {
    return "http://" +
           (GetParam() == Family::kIpv4 ? topology_->ipv4_endpoint(node, kHttpPort)
                                        : topology_->ipv6_endpoint(node, kHttpPort)) +
           "/" + file;
  }

  AgentSpec spec(std::size_t cluster, std::vector<std::string> config = {}) const {
    AgentSpec s;
    s.name = "node" + std::to_string(cluster + 1);
    s.node = cluster;
    s.cluster = &clusters_[cluster];
    s.bundles = {&clusters_[0], &clusters_[1], &clusters_[2]};
    s.config = std::move(config);
    return s;
  }

  AgentNode& start(const AgentSpec& s) {
    auto node = AgentNode::start(*topology_, s, *dir_, TF_CLI_PATH);
    EXPECT_TRUE(node.has_value()) << node.error().message;
    if (!node) throw std::runtime_error(node.error().message);
    agents_.push_back(std::move(*node));
    return *agents_.back();
  }

  // The three clusters with their aliases.
  void start_clusters(std::vector<std::string> extra_cluster3 = {},
                      std::vector<std::string> extra_cluster1 = {}) {
    auto c1 = extra_cluster1;
    c1.push_back("trust-domain-alias = team-b.eks.local");
    start(spec(0, c1));
    start(spec(1, {"trust-domain-alias = team-a.gke.local"}));
    start(spec(2, extra_cluster3));
  }

  // python3 http.server serving dir_ in node's netns (and cgroup), on a
  // dual-stack socket: its IPv4 connections are reported v4-mapped, and
  // must still match the client's plain IPv4 socket.
  Child serve_http(const std::string& netns, const std::string& cgroup) {
    auto server = spawn(
        {.netns = netns,
         .cgroup = cgroup,
         .argv = {"python3", "-m", "http.server", std::to_string(kHttpPort), "--bind",
                  GetParam() == Family::kIpv4 ? "0.0.0.0" : "::", "--directory", dir_->path()}});
    EXPECT_TRUE(server.has_value()) << server.error().message;
    auto ready = wait_for_tcp_listen(netns, kHttpPort, kReadyTimeout, &*server);
    EXPECT_TRUE(ready.has_value()) << ready.error().message;
    return std::move(*server);
  }

  // curl of the payload from (netns, cgroup): exit code, and the checksum
  // of what arrived when it succeeded.
  std::pair<int, std::string> fetch(const std::string& netns, const std::string& cgroup,
                                    std::size_t server_node, const std::string& max_time = "10") {
    std::string out = dir_->path() + "/fetched-" + std::to_string(fetches_++) + ".bin";
    auto result = run_client(
        netns, cgroup,
        {"curl", "-sS", "-g", "--max-time", max_time, "-o", out, url(server_node, "payload.bin")});
    EXPECT_TRUE(result.has_value()) << result.error().message;
    if (!result) return {-1, ""};
    return {result->exit_code, result->exit_code == 0 ? sha256_file(out) : ""};
  }

  // The newest connection of node with peer, polled until it is decided.
  json decided_conn(const AgentNode& node, const std::string& direction, std::size_t peer_node,
                    std::uint16_t port) {
    json row;
    for (int i = 0; i < 100; ++i) {
      auto rows = node.conns();
      EXPECT_TRUE(rows.has_value()) << rows.error().message;
      if (!rows) return nullptr;
      row = find_conn(*rows, direction, ip(peer_node), port);
      if (!row.is_null() && row["verdict"] != "pending") return row;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    auto log = node.log();
    ADD_FAILURE() << node.name() << ": no decided " << direction << " connection with "
                  << ip(peer_node) << " port " << port << "; last row " << row.dump()
                  << "\nagent log:\n"
                  << (log ? *log : "");
    return nullptr;
  }

  static void expect_verdict(const json& row, const std::string& verdict, const std::string& reason,
                             const json& peer_id, const json& peer_trust_domain) {
    if (row.is_null()) return;  // already reported
    EXPECT_EQ(row["verdict"], verdict) << row.dump();
    EXPECT_EQ(row["reason"], reason) << row.dump();
    EXPECT_EQ(row["peer_id"], peer_id) << row.dump();
    EXPECT_EQ(row["peer_trust_domain"], peer_trust_domain) << row.dump();
  }

  std::string payload_sha() const { return sha256_file(payload_); }

  std::vector<Cluster> clusters_ = make_clusters();
  std::optional<Topology> topology_;
  std::optional<TempDir> dir_;
  std::string payload_;
  std::vector<std::unique_ptr<AgentNode>> agents_;
  int fetches_ = 0;
};

TEST_P(SeedScenario, AliasedClustersTalkBothWaysWithThePayloadIntact) {
  start_clusters();
  AgentNode& n1 = *agents_[0];
  AgentNode& n2 = *agents_[1];
  {
    auto server = serve_http(n2.netns(), n2.cgroup());
    auto [code, sha] = fetch(n1.netns(), n1.cgroup(), 1);
    EXPECT_EQ(code, 0);
    EXPECT_EQ(sha, payload_sha());
  }
  expect_verdict(decided_conn(n1, "outbound", 1, kHttpPort), "allow", "alias-domain",
                 clusters_[1].agent_id(), "team-b.eks.local");
  expect_verdict(decided_conn(n2, "inbound", 0, kHttpPort), "allow", "alias-domain",
                 clusters_[0].agent_id(), "team-a.gke.local");

  // The other way, with socat as server and client.
  std::string received = dir_->path() + "/received.bin";
  std::string listen = GetParam() == Family::kIpv4 ? "TCP4-LISTEN:" : "TCP6-LISTEN:";
  auto server = spawn({.netns = n1.netns(),
                       .cgroup = n1.cgroup(),
                       .argv = {"socat", "-u", listen + std::to_string(kSocatPort) + ",reuseaddr",
                                "OPEN:" + received + ",creat,trunc"}});
  ASSERT_TRUE(server.has_value()) << server.error().message;
  TF_ASSERT_OK(wait_for_tcp_listen(n1.netns(), kSocatPort, kReadyTimeout, &*server));
  std::string target = GetParam() == Family::kIpv4
                           ? "TCP4:" + topology_->ipv4_endpoint(0, kSocatPort)
                           : "TCP6:" + topology_->ipv6_endpoint(0, kSocatPort);
  auto sent = run_client(n2.netns(), n2.cgroup(), {"socat", "-u", "OPEN:" + payload_, target});
  ASSERT_TRUE(sent.has_value()) << sent.error().message;
  EXPECT_EQ(sent->exit_code, 0) << sent->err;
  auto server_exit = server->wait();
  ASSERT_TRUE(server_exit.has_value()) << server_exit.error().message;
  EXPECT_EQ(*server_exit, 0);
  EXPECT_EQ(sha256_file(received), payload_sha());
  expect_verdict(decided_conn(n2, "outbound", 0, kSocatPort), "allow", "alias-domain",
                 clusters_[0].agent_id(), "team-a.gke.local");
  expect_verdict(decided_conn(n1, "inbound", 1, kSocatPort), "allow", "alias-domain",
                 clusters_[1].agent_id(), "team-b.eks.local");
}

TEST_P(SeedScenario, AThirdDomainIsDeniedBothWaysAndTheClientFailsAtOnce) {
  start_clusters();
  AgentNode& n1 = *agents_[0];
  AgentNode& n3 = *agents_[2];
  {
    auto server = serve_http(n1.netns(), n1.cgroup());
    // A reset, not a timeout: the denied socket is destroyed at once.
    auto [code, sha] = fetch(n3.netns(), n3.cgroup(), 0, "3");
    EXPECT_TRUE(cut_short(code)) << "curl exit " << code;
  }
  expect_verdict(decided_conn(n1, "inbound", 2, kHttpPort), "deny", "domain-not-allowed",
                 clusters_[2].agent_id(), "team-c.local");
  expect_verdict(decided_conn(n3, "outbound", 0, kHttpPort), "deny", "domain-not-allowed",
                 clusters_[0].agent_id(), "team-a.gke.local");
  {
    auto server = serve_http(n3.netns(), n3.cgroup());
    auto [code, sha] = fetch(n1.netns(), n1.cgroup(), 2, "3");
    EXPECT_TRUE(cut_short(code)) << "curl exit " << code;
  }
  expect_verdict(decided_conn(n1, "outbound", 2, kHttpPort), "deny", "domain-not-allowed",
                 clusters_[2].agent_id(), "team-c.local");
  expect_verdict(decided_conn(n3, "inbound", 0, kHttpPort), "deny", "domain-not-allowed",
                 clusters_[0].agent_id(), "team-a.gke.local");
}

TEST_P(SeedScenario, SelectiveAccessLetsInOneIdentityOfAThirdDomain) {
  const std::string auth = "spiffe://team-c.local/ns/auth/sa/auth";
  const std::string web = "spiffe://team-c.local/ns/web/sa/web";
  auto c3 = spec(2, {"allow-id = spiffe://team-a.gke.local/*"});
  c3.workloads = {{"auth", auth}, {"web", web}};
  start(spec(0, {"trust-domain-alias = team-b.eks.local", "allow-id = " + auth}));
  start(spec(1, {"trust-domain-alias = team-a.gke.local"}));
  AgentNode& n1 = *agents_[0];
  AgentNode& n3 = start(c3);
  auto server = serve_http(n1.netns(), n1.cgroup());

  auto [ok_code, ok_sha] = fetch(n3.netns(), n3.cgroup("auth"), 0);
  EXPECT_EQ(ok_code, 0);
  EXPECT_EQ(ok_sha, payload_sha());
  expect_verdict(decided_conn(n1, "inbound", 2, kHttpPort), "allow", "allowed-id", auth,
                 "team-c.local");
  expect_verdict(decided_conn(n3, "outbound", 0, kHttpPort), "allow", "allowed-id",
                 clusters_[0].agent_id(), "team-a.gke.local");

  auto [denied_code, denied_sha] = fetch(n3.netns(), n3.cgroup("web"), 0, "3");
  EXPECT_TRUE(cut_short(denied_code)) << "curl exit " << denied_code;
  expect_verdict(decided_conn(n1, "inbound", 2, kHttpPort), "deny", "domain-not-allowed", web,
                 "team-c.local");
}

TEST_P(SeedScenario, ASpoofedIdentityIsDeniedAsABadChain) {
  start_clusters();
  AgentNode& n1 = *agents_[0];
  // Claims team-b (an alias of cluster 1) with a certificate team-a's CA
  // signed; its own config trusts that CA for team-b.
  AgentSpec spoofer = spec(1);
  spoofer.name = "spoofer";
  spoofer.node = kSpoofer;
  spoofer.svid_signer = &clusters_[0];
  spoofer.own_bundle = &clusters_[0];
  spoofer.config = {"trust-domain-alias = team-a.gke.local"};
  AgentNode& s = start(spoofer);
  auto server = serve_http(n1.netns(), n1.cgroup());
  auto [code, sha] = fetch(s.netns(), s.cgroup(), 0, "3");
  EXPECT_NE(code, 0);
  auto row = decided_conn(n1, "inbound", kSpoofer, kHttpPort);
  if (!row.is_null()) {
    EXPECT_EQ(row["verdict"], "deny") << row.dump();
    EXPECT_EQ(row["reason"], "bad-chain") << row.dump();
  }
}

TEST_P(SeedScenario, ANodeWithoutAnAgentIsDeniedWhenStrictAndAllowedWhenPermissive) {
  start(spec(0, {"trust-domain-alias = team-b.eks.local"}));
  AgentNode& n1 = *agents_[0];
  const std::string bare = topology_->node(kNoAgent);
  {
    auto server = serve_http(n1.netns(), n1.cgroup());
    auto [code, sha] = fetch(bare, "", 0, "3");
    EXPECT_TRUE(cut_short(code)) << "curl exit " << code;
    expect_verdict(decided_conn(n1, "inbound", kNoAgent, kHttpPort), "deny", "no-peer-agent",
                   nullptr, nullptr);
  }
  {
    auto server = serve_http(bare, "");
    auto [code, sha] = fetch(n1.netns(), n1.cgroup(), kNoAgent, "3");
    EXPECT_TRUE(cut_short(code)) << "curl exit " << code;
    expect_verdict(decided_conn(n1, "outbound", kNoAgent, kHttpPort), "deny", "no-peer-agent",
                   nullptr, nullptr);
  }

  TF_ASSERT_OK(n1.restart({"peer-authentication = permissive"}));
  {
    auto server = serve_http(n1.netns(), n1.cgroup());
    auto [code, sha] = fetch(bare, "", 0);
    EXPECT_EQ(code, 0);
    EXPECT_EQ(sha, payload_sha());
    expect_verdict(decided_conn(n1, "inbound", kNoAgent, kHttpPort), "allow",
                   "plaintext-permissive", nullptr, nullptr);
  }
  {
    auto server = serve_http(bare, "");
    auto [code, sha] = fetch(n1.netns(), n1.cgroup(), kNoAgent);
    EXPECT_EQ(code, 0);
    EXPECT_EQ(sha, payload_sha());
    expect_verdict(decided_conn(n1, "outbound", kNoAgent, kHttpPort), "allow",
                   "plaintext-permissive", nullptr, nullptr);
  }
}

// A peer that speaks TLS with a valid SVID on the agent port but never
// answers an attestation: the connection is denied at attestation-timeout,
// both when our client calls it and when its client calls us.
TEST_P(SeedScenario, APeerAgentThatNeverAnswersIsDeniedAtTheAttestationTimeout) {
  start(spec(0, {"trust-domain-alias = team-b.eks.local", "attestation-timeout = 1s"}));
  AgentNode& n1 = *agents_[0];
  const std::string mute = topology_->node(kNoAgent);
  auto svid = clusters_[1].issue(clusters_[1].agent_id());
  TF_ASSERT_OK(dir_->write("mute.pem", test::to_pem(svid.cert.get())));
  TF_ASSERT_OK(dir_->write("mute.key", test::to_pem(svid.key.get())));
  auto fake = spawn({.netns = mute,
                     .argv = {"openssl", "s_server", "-quiet", "-tls1_3", "-verify", "1", "-accept",
                              GetParam() == Family::kIpv4 ? "7400" : "[::]:7400", "-cert",
                              dir_->path() + "/mute.pem", "-key", dir_->path() + "/mute.key"}});
  ASSERT_TRUE(fake.has_value()) << fake.error().message;
  TF_ASSERT_OK(wait_for_tcp_listen(mute, 7400, kReadyTimeout, &*fake));
  {
    auto server = serve_http(mute, "");
    auto [code, sha] = fetch(n1.netns(), n1.cgroup(), kNoAgent, "5");
    EXPECT_TRUE(cut_short(code)) << "curl exit " << code;
    expect_verdict(decided_conn(n1, "outbound", kNoAgent, kHttpPort), "deny", "attestation-timeout",
                   nullptr, nullptr);
  }
  {
    auto server = serve_http(n1.netns(), n1.cgroup());
    auto [code, sha] = fetch(mute, "", 0, "5");
    EXPECT_TRUE(cut_short(code)) << "curl exit " << code;
    expect_verdict(decided_conn(n1, "inbound", kNoAgent, kHttpPort), "deny", "attestation-timeout",
                   nullptr, nullptr);
  }
}

// Hostile input on the agent port: many connections sending garbage or
// nothing at all. Each is closed and counted; attestation between the real
// clusters goes on meanwhile, and the denial of a third domain is logged
// once.
TEST_P(SeedScenario, GarbageAndStalledHandshakesDoNotStopAttestation) {
  start_clusters();
  AgentNode& n1 = *agents_[0];
  AgentNode& n2 = *agents_[1];
  const std::string target = ip(0);
  auto flood = spawn({.netns = topology_->node(kNoAgent),
                      .argv = {"python3", "-c", R"PY(
import socket, sys, time
conns = []
for i in range(150):
    try:
        s = socket.create_connection((sys.argv[1], 7400), timeout=2)
    except OSError:
        continue
    if i % 3 == 0:
        s.sendall(b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 4)
    elif i % 3 == 1:
        s.sendall(b"tfat" + b"\xff" * 64)
    conns.append(s)
time.sleep(6)
)PY",
                               target}});
  ASSERT_TRUE(flood.has_value()) << flood.error().message;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  {
    auto server = serve_http(n1.netns(), n1.cgroup());
    for (int i = 0; i < 5; ++i) {
      auto [code, sha] = fetch(n2.netns(), n2.cgroup(), 0);
      EXPECT_EQ(code, 0);
      EXPECT_EQ(sha, payload_sha());
    }
  }
  expect_verdict(decided_conn(n1, "inbound", 1, kHttpPort), "allow", "alias-domain",
                 clusters_[1].agent_id(), "team-b.eks.local");
  auto stats = run_command({TF_CLI_PATH, "stats", "--json", "--api-socket", n1.api_socket()});
  ASSERT_TRUE(stats.has_value()) << stats.error().message;
  auto parsed = json::parse(stats->out);
  const auto& attestation = parsed["attestation"];
  auto closes = attestation["channel_closes"];
  std::uint64_t hostile = attestation["handshakes_refused"].get<std::uint64_t>();
  for (const char* kind : {"handshake-failed", "timeout", "peer-closed"})
    hostile += closes.value(kind, std::uint64_t{0});
  EXPECT_GE(hostile, 50u) << parsed.dump(2);

  // One denial, one log line.
  auto third = serve_http(n1.netns(), n1.cgroup());
  AgentNode& n3 = *agents_[2];
  auto [code, sha] = fetch(n3.netns(), n3.cgroup(), 0, "3");
  EXPECT_TRUE(cut_short(code)) << "curl exit " << code;
  auto row = decided_conn(n1, "inbound", 2, kHttpPort);
  ASSERT_FALSE(row.is_null());
  auto log = n1.log();
  ASSERT_TRUE(log.has_value());
  std::string needle = "cookie=" + std::to_string(row["cookie"].get<std::uint64_t>()) + " ";
  std::size_t lines = 0;
  std::istringstream text(*log);
  for (std::string line; std::getline(text, line);)
    if (line.find("] deny ") != std::string::npos && line.find(needle) != std::string::npos)
      ++lines;
  EXPECT_EQ(lines, 1u) << *log;
}

INSTANTIATE_TEST_SUITE_P(Families, SeedScenario, ::testing::Values(Family::kIpv4, Family::kIpv6),
                         family_name);

}  // namespace
}  // namespace trustfence::testing::e2e
