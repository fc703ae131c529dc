// Live reload: a configuration change re-decides every open connection.
// Removing an alias cuts exactly the connections from that domain (revoked)
// while the others keep streaming byte-exact; an invalid configuration is
// refused and everything keeps running on the old one.

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <thread>

#include "support/e2e/cluster.hpp"
#include "support/e2e/slowdown.hpp"
#include "support/kernel/assert_ok.hpp"
#include "support/kernel/checksum.hpp"
#include "support/privileges.hpp"

namespace trustfence::testing::e2e {
namespace {

using json = nlohmann::json;

std::string sha256_file(const std::string& path) { return kernel::Sha256::of_file(path); }

// Streams FILE to HOST:PORT in 32 KiB chunks over about four seconds; given
// a STOP path, streams FILE over and over until STOP exists (however long a
// reload takes to land), then ends the same way.
constexpr const char* kSlowSender = R"PY(
import os, socket, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
stop = sys.argv[4] if len(sys.argv) > 4 else None
data = open(path, "rb").read()
s = socket.create_connection((host, port), timeout=10)
while True:
    for i in range(0, len(data), 32768):
        s.sendall(data[i:i + 32768])
        time.sleep(0.03)
        if stop and os.path.exists(stop):
            break
    if not stop or os.path.exists(stop):
        break
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
)PY";

class Reload : public ::testing::Test {
 protected:
  void SetUp() override {
    TF_REQUIRE_ROOT();
    TF_ASSERT_OK_AND_ASSIGN(auto topology, Topology::create(3));
    topology_.emplace(std::move(topology));
    TF_ASSERT_OK_AND_ASSIGN(auto dir, TempDir::create());
    dir_.emplace(std::move(dir));
    std::mt19937_64 rng(7);
    std::string bytes(4 << 20, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    TF_ASSERT_OK(dir_->write("stream.bin", bytes));
    for (const char* td : {"team-a.gke.local", "team-b.eks.local", "team-c.local"})
      clusters_.emplace_back(td);
  }

  AgentSpec spec(std::size_t i, std::vector<std::string> config) {
    AgentSpec s;
    s.name = "node" + std::to_string(i + 1);
    s.node = i;
    s.cluster = &clusters_[i];
    s.bundles = {&clusters_[0], &clusters_[1], &clusters_[2]};
    s.config = std::move(config);
    return s;
  }

  std::unique_ptr<AgentNode> start(const AgentSpec& s) {
    auto node = AgentNode::start(*topology_, s, *dir_, TF_CLI_PATH);
    if (!node) throw std::runtime_error(node.error().message);
    return std::move(*node);
  }

  // socat in node 0 writing what arrives on port into a file.
  Child sink(const AgentNode& server, std::uint16_t port, const std::string& out) {
    auto child = spawn({.netns = server.netns(),
                        .cgroup = server.cgroup(),
                        .argv = {"socat", "-u", "TCP-LISTEN:" + std::to_string(port) + ",reuseaddr",
                                 "OPEN:" + out + ",creat,trunc"}});
    if (!child) throw std::runtime_error(child.error().message);
    auto ready = wait_for_tcp_listen(server.netns(), port, kReadyTimeout, &*child);
    if (!ready) throw std::runtime_error(ready.error().message);
    return std::move(*child);
  }

  // The whole file once, or (given stop) until stop exists.
  Child sender(const AgentNode& client, const std::string& workload, std::uint16_t port,
               const std::string& stop = "") {
    std::vector<std::string> argv = {"python3",
                                     "-c",
                                     kSlowSender,
                                     topology_->ipv4(0),
                                     std::to_string(port),
                                     dir_->path() + "/stream.bin"};
    if (!stop.empty()) argv.push_back(stop);
    auto child = spawn(
        {.netns = client.netns(), .cgroup = client.cgroup(workload), .argv = std::move(argv)});
    if (!child) throw std::runtime_error(child.error().message);
    return std::move(*child);
  }

  json conn_from(const AgentNode& node, std::size_t peer, std::uint16_t port) {
    auto rows = node.conns();
    if (!rows) return nullptr;
    return find_conn(*rows, "inbound", topology_->ipv4(peer), port);
  }

  std::vector<Cluster> clusters_;
  std::optional<Topology> topology_;
  std::optional<TempDir> dir_;
};

TEST_F(Reload, RemovingAnAliasRevokesExactlyThatDomainsConnections) {
  const std::string auth = "spiffe://team-c.local/ns/auth/sa/auth";
  std::vector<std::string> n1_config = {"trust-domain-alias = team-b.eks.local",
                                        "allow-id = " + auth};
  auto n1 = start(spec(0, n1_config));
  auto n2 = start(spec(1, {"trust-domain-alias = team-a.gke.local"}));
  auto c3 = spec(2, {"allow-id = spiffe://team-a.gke.local/*"});
  c3.workloads = {{"auth", auth}};
  auto n3 = start(c3);

  std::string from_b = dir_->path() + "/from-b.bin";
  std::string from_c = dir_->path() + "/from-c.bin";
  auto sink_b = sink(*n1, 9001, from_b);
  auto sink_c = sink(*n1, 9002, from_c);
  auto send_b = sender(*n2, "", 9001);
  auto send_c = sender(*n3, "auth", 9002);

  // Both streams allowed and flowing.
  for (int i = 0; i < 100; ++i) {
    auto b = conn_from(*n1, 1, 9001), c = conn_from(*n1, 2, 9002);
    if (!b.is_null() && !c.is_null() && b["verdict"] == "allow" && c["verdict"] == "allow") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(conn_from(*n1, 1, 9001).value("verdict", ""), "allow");
  ASSERT_EQ(conn_from(*n1, 2, 9002).value("verdict", ""), "allow");

  // The alias goes; the file watch reloads the agent.
  TF_ASSERT_OK(n1->update_config({"allow-id = " + auth}));

  auto b_exit = send_b.wait();
  ASSERT_TRUE(b_exit.has_value()) << b_exit.error().message;
  EXPECT_NE(*b_exit, 0) << "the team-b stream should have been cut";
  auto c_exit = send_c.wait();
  ASSERT_TRUE(c_exit.has_value()) << c_exit.error().message;
  EXPECT_EQ(*c_exit, 0) << "the team-c stream should have survived";
  auto sunk = sink_c.wait();
  ASSERT_TRUE(sunk.has_value());
  EXPECT_EQ(sha256_file(from_c), sha256_file(dir_->path() + "/stream.bin"));

  auto revoked = conn_from(*n1, 1, 9001);
  ASSERT_FALSE(revoked.is_null());
  EXPECT_EQ(revoked["verdict"], "deny") << revoked.dump();
  EXPECT_EQ(revoked["reason"], "revoked") << revoked.dump();
  EXPECT_EQ(revoked["peer_trust_domain"], "team-b.eks.local") << revoked.dump();
  auto kept = conn_from(*n1, 2, 9002);
  ASSERT_FALSE(kept.is_null());
  EXPECT_EQ(kept["verdict"], "allow") << kept.dump();
  EXPECT_EQ(kept["generation"], 2) << kept.dump();
  auto stats = n1->stats();
  ASSERT_TRUE(stats.has_value()) << stats.error().message;
  EXPECT_EQ((*stats)["config"]["generation"], 2) << stats->dump(2);
}

// team-b's CA is replaced in node 1's bundle: node 2's agent no longer
// verifies, so its stream is revoked; a deny-id on the surviving domain's
// identity revokes that one too.
TEST_F(Reload, ADroppedCaAndAnAddedDenyIdRevokeTheirConnections) {
  const std::string auth = "spiffe://team-c.local/ns/auth/sa/auth";
  auto n1 = start(spec(0, {"trust-domain-alias = team-b.eks.local", "allow-id = " + auth}));
  auto n2 = start(spec(1, {"trust-domain-alias = team-a.gke.local"}));
  auto c3 = spec(2, {"allow-id = spiffe://team-a.gke.local/*"});
  c3.workloads = {{"auth", auth}};
  auto n3 = start(c3);
  auto sink_b = sink(*n1, 9001, dir_->path() + "/from-b.bin");
  auto sink_c = sink(*n1, 9002, dir_->path() + "/from-c.bin");
  // Both stream until the test stops them: each must be cut by its reload,
  // however long that takes to land.
  const std::string stop = dir_->path() + "/stop";
  auto send_b = sender(*n2, "", 9001, stop);
  auto send_c = sender(*n3, "auth", 9002, stop);
  for (int i = 0; i < 100; ++i) {
    auto b = conn_from(*n1, 1, 9001), c = conn_from(*n1, 2, 9002);
    if (!b.is_null() && !c.is_null() && b["verdict"] == "allow" && c["verdict"] == "allow") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(conn_from(*n1, 1, 9001).value("verdict", ""), "allow");
  ASSERT_EQ(conn_from(*n1, 2, 9002).value("verdict", ""), "allow");

  Cluster rotated("team-b.eks.local");  // a CA node 2's SVID does not chain to
  TF_ASSERT_OK(n1->replace_bundle("team-b.eks.local", rotated));
  auto b_exit = send_b.wait(slowed(kReadyTimeout));
  if (!b_exit) std::ofstream(stop).put('\n');
  ASSERT_TRUE(b_exit.has_value()) << "the team-b stream was not cut: " << b_exit.error().message;
  EXPECT_NE(*b_exit, 0) << "the team-b stream should have been cut";
  auto revoked_b = conn_from(*n1, 1, 9001);
  ASSERT_FALSE(revoked_b.is_null());
  EXPECT_EQ(revoked_b["verdict"], "deny") << revoked_b.dump();
  EXPECT_EQ(revoked_b["reason"], "revoked") << revoked_b.dump();
  auto still = conn_from(*n1, 2, 9002);
  ASSERT_FALSE(still.is_null());
  EXPECT_EQ(still["verdict"], "allow") << "the team-c stream must not be touched: " << still.dump();
  ASSERT_TRUE(send_c.running()) << "the team-c stream ended before the deny-id reload: exit "
                                << send_c.exit_code().value_or(-1) << " "
                                << send_c.read_stderr().value_or("");

  TF_ASSERT_OK(n1->update_config(
      {"allow-id = " + auth, "deny-id = " + auth, "trust-domain-alias = team-b.eks.local"}));
  auto c_exit = send_c.wait(slowed(kReadyTimeout));
  std::ofstream(stop).put('\n');
  ASSERT_TRUE(c_exit.has_value()) << "the team-c stream was not cut: " << c_exit.error().message;
  EXPECT_NE(*c_exit, 0) << "the team-c stream should have been cut by deny-id";
  auto revoked_c = conn_from(*n1, 2, 9002);
  ASSERT_FALSE(revoked_c.is_null());
  EXPECT_EQ(revoked_c["reason"], "revoked") << revoked_c.dump();
}

TEST_F(Reload, AnInvalidConfigurationKeepsEverythingRunning) {
  auto n1 = start(spec(0, {"trust-domain-alias = team-b.eks.local"}));
  auto n2 = start(spec(1, {"trust-domain-alias = team-a.gke.local"}));
  std::string from_b = dir_->path() + "/from-b.bin";
  auto sink_b = sink(*n1, 9001, from_b);
  auto send_b = sender(*n2, "", 9001);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  TF_ASSERT_OK(n1->write_raw_config("cgroup = /nowhere\ntrust-domain = NOT A DOMAIN\n"));
  TF_ASSERT_OK(n1->send_sighup());

  auto exit = send_b.wait();
  ASSERT_TRUE(exit.has_value()) << exit.error().message;
  EXPECT_EQ(*exit, 0);
  ASSERT_TRUE(sink_b.wait().has_value());
  EXPECT_EQ(sha256_file(from_b), sha256_file(dir_->path() + "/stream.bin"));
  auto stats = n1->stats();
  ASSERT_TRUE(stats.has_value()) << stats.error().message;
  const auto& config = (*stats)["config"];
  EXPECT_EQ(config["generation"], 1) << stats->dump(2);
  EXPECT_GE(config["reload_failures"].get<int>(), 1) << stats->dump(2);
  EXPECT_NE(config["last_reload_error"].get<std::string>().find("trust-domain"), std::string::npos)
      << stats->dump(2);
  auto row = conn_from(*n1, 1, 9001);
  ASSERT_FALSE(row.is_null());
  EXPECT_EQ(row["verdict"], "allow") << row.dump();
}

}  // namespace
}  // namespace trustfence::testing::e2e
