// Operating a running agent: the query API behind the CLI (a connection
// by cookie and by its endpoints, a non-root caller refused), the live
// stream of verdicts, and the audit rollout (denials counted per trust
// domain while traffic flows, then enforce at runtime).

#include <gtest/gtest.h>

#include <sstream>
#include <thread>

#include "support/e2e/cluster.hpp"
#include "support/kernel/assert_ok.hpp"
#include "support/privileges.hpp"
#include "support/process.hpp"

namespace trustfence::testing::e2e {
namespace {

using json = nlohmann::json;
constexpr std::uint16_t kPort = 8000;

class Operations : public ::testing::Test {
 protected:
  void SetUp() override {
    TF_REQUIRE_ROOT();
    TF_ASSERT_OK_AND_ASSIGN(auto topology, Topology::create(3));
    topology_.emplace(std::move(topology));
    TF_ASSERT_OK_AND_ASSIGN(auto dir, TempDir::create());
    dir_.emplace(std::move(dir));
    TF_ASSERT_OK(dir_->write("index.html", "hello\n"));
    for (const char* td : {"team-a.gke.local", "team-b.eks.local", "team-c.local"})
      clusters_.emplace_back(td);
  }

  std::unique_ptr<AgentNode> start(std::size_t i, std::vector<std::string> config) {
    AgentSpec s;
    s.name = "node" + std::to_string(i + 1);
    s.node = i;
    s.cluster = &clusters_[i];
    s.bundles = {&clusters_[0], &clusters_[1], &clusters_[2]};
    s.config = std::move(config);
    auto node = AgentNode::start(*topology_, s, *dir_, TF_CLI_PATH);
    if (!node) throw std::runtime_error(node.error().message);
    return std::move(*node);
  }

  Child serve(const AgentNode& node) {
    auto server = spawn({.netns = node.netns(),
                         .cgroup = node.cgroup(),
                         .argv = {"python3", "-m", "http.server", std::to_string(kPort), "--bind",
                                  "::", "--directory", dir_->path()}});
    if (!server) throw std::runtime_error(server.error().message);
    auto ready = wait_for_tcp_listen(node.netns(), kPort, kReadyTimeout, &*server);
    if (!ready) throw std::runtime_error(ready.error().message);
    return std::move(*server);
  }

  // curl from node to node 0: its exit code.
  int fetch(const AgentNode& client) {
    auto result = run_client(client.netns(), client.cgroup(),
                             {"curl", "-sS", "--max-time", "3", "-o", "/dev/null",
                              "http://" + topology_->ipv4_endpoint(0, kPort) + "/index.html"});
    EXPECT_TRUE(result.has_value()) << result.error().message;
    return result ? result->exit_code : -1;
  }

  static std::uint64_t decisions(const json& stats, const std::string& verdict,
                                 const std::string& td) {
    std::uint64_t n = 0;
    for (const auto& d : stats["decisions"])
      if (d["verdict"] == verdict && d["peer_trust_domain"] == td)
        n += d["count"].get<std::uint64_t>();
    return n;
  }

  std::vector<Cluster> clusters_;
  std::optional<Topology> topology_;
  std::optional<TempDir> dir_;
};

TEST_F(Operations, TheCliFindsAConnectionByCookieAndByEndpointsAndRefusesOtherUsers) {
  auto n1 = start(0, {"trust-domain-alias = team-b.eks.local"});
  auto n2 = start(1, {"trust-domain-alias = team-a.gke.local"});
  auto server = serve(*n1);
  ASSERT_EQ(fetch(*n2), 0);
  json row;
  for (int i = 0; i < 50 && row.is_null(); ++i) {
    auto rows = n1->conns();
    ASSERT_TRUE(rows.has_value()) << rows.error().message;
    row = find_conn(*rows, "inbound", topology_->ipv4(1), kPort);
    if (row.is_null()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(row.is_null());
  auto by_cookie =
      run_command({TF_CLI_PATH, "conn", std::to_string(row["cookie"].get<std::uint64_t>()),
                   "--json", "--api-socket", n1->api_socket()});
  ASSERT_TRUE(by_cookie.has_value());
  ASSERT_EQ(by_cookie->exit_code, 0) << by_cookie->err;
  EXPECT_EQ(json::parse(by_cookie->out)["peer_id"], clusters_[1].agent_id());
  auto by_tuple =
      run_command({TF_CLI_PATH, "conn", row["local"].get<std::string>(),
                   row["remote"].get<std::string>(), "--json", "--api-socket", n1->api_socket()});
  ASSERT_TRUE(by_tuple.has_value());
  ASSERT_EQ(by_tuple->exit_code, 0) << by_tuple->err;
  EXPECT_EQ(json::parse(by_tuple->out)["cookie"], row["cookie"]);

  // Another user may not ask (the socket is 0600, root's).
  auto nobody = run_command({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             TF_CLI_PATH, "conns", "--json", "--api-socket", n1->api_socket(),
                             "--pin-dir", n1->pin_dir()});
  ASSERT_TRUE(nobody.has_value()) << nobody.error().message;
  EXPECT_NE(nobody->exit_code, 0) << nobody->out;
  EXPECT_EQ(nobody->out.find("team-b"), std::string::npos) << nobody->out;
}

TEST_F(Operations, WatchStreamsVerdictsAsTheyAreMade) {
  auto n1 = start(0, {"trust-domain-alias = team-b.eks.local"});
  auto n2 = start(1, {"trust-domain-alias = team-a.gke.local"});
  auto n3 = start(2, {});
  auto server = serve(*n1);
  std::string out = dir_->path() + "/watch.out";
  auto watch = spawn({.argv = {TF_CLI_PATH, "watch", "--json", "--denials", "--count", "1",
                               "--api-socket", n1->api_socket()},
                      .stdout_path = out});
  ASSERT_TRUE(watch.has_value()) << watch.error().message;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // its first poll
  EXPECT_EQ(fetch(*n2), 0);                                     // allowed: not a denial
  EXPECT_NE(fetch(*n3), 0);                                     // denied
  auto exit = watch->wait();
  ASSERT_TRUE(exit.has_value()) << exit.error().message;
  EXPECT_EQ(*exit, 0);
  auto printed = watch->read_stdout();
  ASSERT_TRUE(printed.has_value());
  auto event = json::parse(printed->substr(0, printed->find('\n')));
  EXPECT_EQ(event["verdict"], "deny") << event.dump();
  EXPECT_EQ(event["reason"], "domain-not-allowed") << event.dump();
  EXPECT_EQ(event["peer_trust_domain"], "team-c.local") << event.dump();
  EXPECT_EQ(event["direction"], "inbound") << event.dump();
}

TEST_F(Operations, AuditCountsWouldBeDenialsThenEnforceCutsThem) {
  auto n1 = start(0, {"trust-domain-alias = team-b.eks.local", "mode = audit"});
  auto n3 = start(2, {"allow-id = spiffe://team-a.gke.local/*"});
  auto server = serve(*n1);
  // Audit: the third domain gets through, and is counted as a denial.
  EXPECT_EQ(fetch(*n3), 0);
  EXPECT_EQ(fetch(*n3), 0);
  auto stats = n1->stats();
  ASSERT_TRUE(stats.has_value()) << stats.error().message;
  EXPECT_EQ(decisions(*stats, "deny", "team-c.local"), 2u) << stats->dump(2);
  EXPECT_EQ((*stats)["config"]["mode"], "audit");

  // A long-lived connection denied while auditing, then enforce at runtime.
  auto held = spawn(
      {.netns = n3->netns(),
       .cgroup = n3->cgroup(),
       .argv = {"socat", "-u", "EXEC:sleep 30", "TCP:" + topology_->ipv4_endpoint(0, kPort)}});
  ASSERT_TRUE(held.has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  TF_ASSERT_OK(n1->update_config({"trust-domain-alias = team-b.eks.local", "mode = enforce"}));
  for (int i = 0; i < 100; ++i) {
    auto now = n1->stats();
    if (now && (*now)["config"]["mode"] == "enforce") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto after = n1->stats();
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ((*after)["config"]["mode"], "enforce") << after->dump(2);
  EXPECT_NE(fetch(*n3), 0) << "enforce must cut the third domain";
  auto rows = n1->conns();
  ASSERT_TRUE(rows.has_value());
  for (const auto& row : *rows) {
    if (row.value("state", "") == "open") {
      EXPECT_NE(row["verdict"], "deny") << "a denied connection is still open: " << row.dump();
    }
  }
}

// The value of the sample whose line starts with prefix (name and labels).
std::optional<double> sample(const std::string& text, const std::string& prefix) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with(prefix + " ")) return std::stod(line.substr(prefix.size() + 1));
  return std::nullopt;
}

TEST_F(Operations, MetricsOverHttpReflectTheTraffic) {
  auto n1 = start(0, {"trust-domain-alias = team-b.eks.local", "metrics = 127.0.0.1:9464"});
  auto n2 = start(1, {"trust-domain-alias = team-a.gke.local"});
  auto n3 = start(2, {});
  auto server = serve(*n1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(fetch(*n2), 0);
  for (int i = 0; i < 2; ++i) EXPECT_NE(fetch(*n3), 0);
  auto get = [&](const std::string& path) {
    auto r = run_client(n1->netns(), "",
                        {"curl", "-sS", "-w", "\n%{http_code}", "http://127.0.0.1:9464" + path});
    EXPECT_TRUE(r.has_value());
    return r ? r->out : std::string();
  };
  EXPECT_TRUE(get("/healthz").ends_with("\n200"));
  EXPECT_TRUE(get("/readyz").ends_with("\n200"));
  std::string text;
  std::optional<double> denied;
  for (int i = 0; i < 50; ++i) {  // the denials' verdicts land within a round
    text = get("/metrics");
    denied = sample(
        text,
        R"(trustfence_decisions_total{verdict="deny",reason="domain-not-allowed",peer_trust_domain="team-c.local"})");
    if (denied && *denied >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(denied, 2.0) << text;
  EXPECT_EQ(
      sample(
          text,
          R"(trustfence_decisions_total{verdict="allow",reason="alias-domain",peer_trust_domain="team-b.eks.local"})"),
      3.0)
      << text;
  EXPECT_EQ(sample(text, "trustfence_attestation_latency_seconds_count"), 5.0) << text;
  EXPECT_EQ(sample(text, "trustfence_config_generation"), 1.0) << text;
  EXPECT_EQ(sample(text, "trustfence_pending_connections"), 0.0) << text;
  EXPECT_TRUE(sample(
      text,
      R"(trustfence_svid_expiry_timestamp_seconds{spiffe_id="spiffe://team-a.gke.local/ns/trustfence/sa/agent"})"))
      << text;
  EXPECT_TRUE(
      sample(text, R"(trustfence_bundle_expiry_timestamp_seconds{trust_domain="team-c.local"})"))
      << text;
  EXPECT_NE(text.find("# TYPE trustfence_attestation_latency_seconds histogram"),
            std::string::npos);
}

}  // namespace
}  // namespace trustfence::testing::e2e
