// The main job on one machine: three clusters (and a spoofer, and a node
// without an agent) as network namespaces, one trustfence agent each, real
// traffic between real programs, and each node's verdict table.
//
//   cluster 1 team-a.gke.local  alias team-b.eks.local
//             allow-id spiffe://team-c.local/ns/auth/sa/auth
//   cluster 2 team-b.eks.local  alias team-a.gke.local
//   cluster 3 team-c.local      no alias; workloads auth and web
//   spoofer   claims team-b.eks.local with a certificate of team-a's CA
//   bare      no agent at all
//
// Usage: tf_demo PATH_TO_TRUSTFENCE

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "support/e2e/cluster.hpp"

namespace e2e = trustfence::testing::e2e;

namespace {

constexpr std::uint16_t kPort = 8000;

struct Case {
  std::string what;
  std::string netns;
  std::string cgroup;
  std::size_t server;
};

int run(const std::string& binary) {
  auto topology = e2e::Topology::create(5);
  if (!topology) {
    std::cerr << "demo: " << topology.error().message << "\n";
    return 1;
  }
  auto dir = e2e::TempDir::create();
  if (!dir) {
    std::cerr << "demo: " << dir.error().message << "\n";
    return 1;
  }
  (void)dir->write("index.html", "hello from a trustfence demo server\n");
  std::vector<e2e::Cluster> clusters;
  for (const char* td : {"team-a.gke.local", "team-b.eks.local", "team-c.local"})
    clusters.emplace_back(td);
  auto all = std::vector<const e2e::Cluster*>{&clusters[0], &clusters[1], &clusters[2]};
  const std::string auth = "spiffe://team-c.local/ns/auth/sa/auth";
  std::vector<e2e::AgentSpec> specs(4);
  specs[0] = {.name = "cluster1",
              .node = 0,
              .cluster = &clusters[0],
              .bundles = all,
              .config = {"trust-domain-alias = team-b.eks.local", "allow-id = " + auth}};
  specs[1] = {.name = "cluster2",
              .node = 1,
              .cluster = &clusters[1],
              .bundles = all,
              .config = {"trust-domain-alias = team-a.gke.local"}};
  specs[2] = {.name = "cluster3",
              .node = 2,
              .cluster = &clusters[2],
              .bundles = all,
              .config = {"allow-id = spiffe://team-a.gke.local/*"},
              .workloads = {{"auth", auth}, {"web", "spiffe://team-c.local/ns/web/sa/web"}}};
  specs[3] = {.name = "spoofer",
              .node = 3,
              .cluster = &clusters[1],
              .bundles = all,
              .config = {"trust-domain-alias = team-a.gke.local"},
              .svid_signer = &clusters[0],
              .own_bundle = &clusters[0]};
  std::vector<std::unique_ptr<e2e::AgentNode>> nodes;
  for (const auto& spec : specs) {
    auto node = e2e::AgentNode::start(*topology, spec, *dir, binary);
    if (!node) {
      std::cerr << "demo: " << node.error().message << "\n";
      return 1;
    }
    std::printf("started %-9s %-18s on %s / %s\n", spec.name.c_str(),
                spec.cluster->trust_domain().c_str(), topology->ipv4(spec.node).c_str(),
                topology->ipv6(spec.node).c_str());
    nodes.push_back(std::move(*node));
  }

  std::vector<e2e::Child> servers;
  for (std::size_t i : {0, 1, 2}) {
    auto server = e2e::spawn({.netns = topology->node(i),
                              .cgroup = nodes[i]->cgroup(),
                              .argv = {"python3", "-m", "http.server", std::to_string(kPort),
                                       "--bind", "::", "--directory", dir->path()}});
    if (!server ||
        !e2e::wait_for_tcp_listen(topology->node(i), kPort, e2e::kReadyTimeout, &*server)) {
      std::cerr << "demo: the http server of node " << i << " did not start\n";
      return 1;
    }
    servers.push_back(std::move(*server));
  }

  std::vector<Case> cases = {
      {"cluster1 -> cluster2 (alias)", topology->node(0), nodes[0]->cgroup(), 1},
      {"cluster2 -> cluster1 (alias)", topology->node(1), nodes[1]->cgroup(), 0},
      {"cluster3/web -> cluster1 (third domain)", topology->node(2), nodes[2]->cgroup("web"), 0},
      {"cluster3/auth -> cluster1 (allow-id)", topology->node(2), nodes[2]->cgroup("auth"), 0},
      {"cluster1 -> cluster3 (third domain)", topology->node(0), nodes[0]->cgroup(), 2},
      {"spoofer -> cluster1 (team-b ID, team-a CA)", topology->node(3), nodes[3]->cgroup(), 0},
      {"bare node -> cluster1 (no agent, strict)", topology->node(4), "", 0},
  };
  std::printf("\n%-46s %-8s %s\n", "CONNECTION (IPv4, then IPv6)", "RESULT", "CLIENT SAYS");
  for (bool v6 : {false, true}) {
    for (const auto& c : cases) {
      auto endpoint =
          v6 ? topology->ipv6_endpoint(c.server, kPort) : topology->ipv4_endpoint(c.server, kPort);
      auto result = e2e::run_client(c.netns, c.cgroup,
                                    {"curl", "-sS", "-g", "--max-time", "3", "-o", "/dev/null",
                                     "-w", "HTTP %{http_code}", "http://" + endpoint + "/"});
      std::string said = !result                  ? result.error().message
                         : result->exit_code == 0 ? result->out
                                                  : result->err;
      while (!said.empty() && (said.back() == '\n' || said.back() == '\r')) said.pop_back();
      std::printf("%-46s %-8s %s\n", c.what.c_str(),
                  result && result->exit_code == 0 ? "ok" : "refused", said.c_str());
    }
  }
  for (const auto& node : nodes) {
    auto table = node->conns_table();
    std::printf("\n=== %s: trustfence conns --closed\n%s", node->name().c_str(),
                table ? table->c_str() : table.error().message.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: tf_demo PATH_TO_TRUSTFENCE\n";
    return 2;
  }
  if (::geteuid() != 0) {
    std::cerr << "tf_demo: needs root (network namespaces, cgroups, BPF)\n";
    return 1;
  }
  return run(argv[1]);
}
