// The e2e harness itself: nodes as network namespaces on one bridge, real
// programs spawned inside a node and a cgroup, talking over IPv4 and IPv6,
// and nothing left behind.

#include "support/e2e/topology.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "support/e2e/child.hpp"
#include "support/e2e/netns.hpp"
#include "support/e2e/temp_dir.hpp"
#include "support/kernel/assert_ok.hpp"
#include "support/kernel/cgroup.hpp"
#include "support/kernel/socket.hpp"
#include "support/privileges.hpp"

namespace trustfence::testing::e2e {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr std::uint16_t kHttpPort = 8080;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Same inode: the process lives in that named netns.
bool in_named_netns(pid_t pid, const std::string& netns) {
  struct stat ns {
  }, own{};
  auto proc = "/proc/" + std::to_string(pid) + "/ns/net";
  auto named = std::string(kNetnsDir) + "/" + netns;
  return ::stat(proc.c_str(), &own) == 0 && ::stat(named.c_str(), &ns) == 0 &&
         own.st_ino == ns.st_ino && own.st_dev == ns.st_dev;
}

// curl from a node, the body into `body_path`; prints "<local ip> <remote ip>".
SpawnOptions curl(const std::string& netns, const std::string& url, const std::string& body_path) {
  return {.netns = netns,
          .argv = {"curl", "--silent", "--show-error", "--fail", "--globoff", "--noproxy", "*",
                   "--max-time", "20", "--output", body_path, "--write-out",
                   "%{local_ip} %{remote_ip}", url}};
}

TEST(Topology, TwoNodesServeAFileFromACgroupOverIpv4AndIpv6) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK_AND_ASSIGN(auto www, TempDir::create());
  auto bytes = kernel::random_bytes(256 * 1024, 7);
  const std::string payload(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  TF_ASSERT_OK(www.write("payload.bin", payload));
  TF_ASSERT_OK_AND_ASSIGN(auto downloads, TempDir::create());

  TF_ASSERT_OK_AND_ASSIGN(auto topology, Topology::create(2));
  TF_ASSERT_OK_AND_ASSIGN(auto cgroup, kernel::TestCgroup::create(kE2ePrefix));
  // "::" with IPV6_V6ONLY off (http.server's default): IPv4 and IPv6 alike.
  TF_ASSERT_OK_AND_ASSIGN(auto server,
                          spawn({.netns = topology.node(1),
                                 .cgroup = cgroup.path(),
                                 .argv = {"python3", "-m", "http.server", std::to_string(kHttpPort),
                                          "--bind", "::", "--directory", www.path()}}));
  TF_ASSERT_OK(wait_for_tcp_listen(topology.node(1), kHttpPort, kReadyTimeout, &server));

  EXPECT_THAT(slurp("/proc/" + std::to_string(server.pid()) + "/cgroup"),
              HasSubstr("0::/" + cgroup.relative_path() + "\n"));
  EXPECT_TRUE(in_named_netns(server.pid(), topology.node(1)));
  EXPECT_FALSE(in_named_netns(::getpid(), topology.node(1)));

  struct Case {
    const char* family;
    std::string url;
    std::string expected_ips;
  };
  const Case cases[] = {
      {"IPv4", "http://" + topology.ipv4_endpoint(1, kHttpPort) + "/payload.bin",
       topology.ipv4(0) + " " + topology.ipv4(1)},
      {"IPv6", "http://" + topology.ipv6_endpoint(1, kHttpPort) + "/payload.bin",
       topology.ipv6(0) + " " + topology.ipv6(1)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.family);
    auto body = downloads.file(std::string(c.family) + ".bin");
    TF_ASSERT_OK_AND_ASSIGN(auto fetched, run_in(curl(topology.node(0), c.url, body)));
    ASSERT_EQ(fetched.exit_code, 0) << c.url << ": " << fetched.err;
    EXPECT_EQ(fetched.out, c.expected_ips) << "local and remote address as curl saw them";
    auto got = slurp(body);
    EXPECT_EQ(got.size(), payload.size());
    EXPECT_TRUE(got == payload) << "served bytes differ";
  }

  server.terminate();
  EXPECT_EQ(server.exit_code(), 128 + SIGTERM);
  TF_EXPECT_OK(cgroup.remove());
}

TEST(Topology, NodesHaveUsableAddressesAndNoRouteOut) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK_AND_ASSIGN(auto topology, Topology::create(3));
  ASSERT_EQ(topology.size(), 3u);
  for (std::size_t i = 0; i < topology.size(); ++i) {
    SCOPED_TRACE(topology.node(i));
    TF_ASSERT_OK_AND_ASSIGN(
        auto addrs,
        run_in({.netns = topology.node(i), .argv = {"ip", "-o", "addr", "show", "dev", "eth0"}}));
    ASSERT_EQ(addrs.exit_code, 0) << addrs.err;
    EXPECT_THAT(addrs.out, HasSubstr("inet " + topology.ipv4(i) + "/24"));
    EXPECT_THAT(addrs.out, HasSubstr("inet6 " + topology.ipv6(i) + "/64"));
    EXPECT_THAT(addrs.out, Not(HasSubstr("tentative"))) << "DAD still pending";

    // Only the node subnets: no default route to this host or beyond.
    for (const char* outside : {"192.0.2.1", "2001:db8::1"}) {
      TF_ASSERT_OK_AND_ASSIGN(
          auto route, run_in({.netns = topology.node(i), .argv = {"ip", "route", "get", outside}}));
      EXPECT_NE(route.exit_code, 0) << outside << " is routable: " << route.out;
    }
  }

  // Node 2 to node 0 over IPv6, through the bridge, with socat.
  TF_ASSERT_OK_AND_ASSIGN(
      auto echo, spawn({.netns = topology.node(0),
                        .argv = {"socat", "TCP6-LISTEN:7000,reuseaddr", "SYSTEM:echo hello"}}));
  TF_ASSERT_OK(wait_for_tcp_listen(topology.node(0), 7000, kReadyTimeout, &echo));
  TF_ASSERT_OK_AND_ASSIGN(
      auto hello,
      run_in({.netns = topology.node(2),
              .argv = {"socat", "-T", "10", "-", "TCP6:" + topology.ipv6_endpoint(0, 7000)}}));
  EXPECT_EQ(hello.exit_code, 0) << hello.err;
  EXPECT_EQ(hello.out, "hello\n");
}

TEST(Topology, IsGoneAfterDestruction) {
  TF_REQUIRE_ROOT();
  std::string name;
  {
    TF_ASSERT_OK_AND_ASSIGN(auto built, Topology::create(2));
    auto topology = std::move(built);  // the moved-from one deletes nothing
    name = topology.name();
    TF_ASSERT_OK_AND_ASSIGN(auto listed, list_netns());
    for (const auto& netns : {topology.node(0), topology.node(1), topology.switch_netns()})
      EXPECT_NE(std::find(listed.begin(), listed.end(), netns), listed.end()) << netns;
  }
  TF_ASSERT_OK_AND_ASSIGN(auto listed, list_netns());
  for (const auto& netns : listed) EXPECT_FALSE(netns.starts_with(name)) << netns << " is left";
}

TEST(Spawn, ReportsTheStepThatFailed) {
  TF_REQUIRE_ROOT();
  auto no_netns = spawn({.netns = "tf-e2e-no-such-netns", .argv = {"true"}});
  ASSERT_FALSE(no_netns.has_value());
  EXPECT_THAT(no_netns.error().message, HasSubstr("tf-e2e-no-such-netns"));

  auto no_program = spawn({.argv = {"tf-e2e-no-such-program"}});
  ASSERT_FALSE(no_program.has_value());
  EXPECT_THAT(no_program.error().message, HasSubstr("not found in PATH"));

  auto no_cgroup = spawn({.cgroup = "/nonexistent/tf-e2e-cgroup", .argv = {"true"}});
  ASSERT_FALSE(no_cgroup.has_value());
  EXPECT_THAT(no_cgroup.error().message, HasSubstr("cgroup.procs"));

  // Fails in the child, after fork: the step comes back through the pipe.
  auto no_dir = spawn({.argv = {"true"}, .working_directory = "/nonexistent/tf-e2e-dir"});
  ASSERT_FALSE(no_dir.has_value());
  EXPECT_THAT(no_dir.error().message, HasSubstr("changing the working directory"));
}

TEST(Spawn, RunInReportsExitCodeAndOutputAndKillsAtTheTimeout) {
  TF_ASSERT_OK_AND_ASSIGN(auto run, run_in({.argv = {"sh", "-c", "echo out; echo err >&2; exit 3"},
                                            .env = {{"TF_E2E_PROBE", "x"}}}));
  EXPECT_EQ(run.exit_code, 3);
  EXPECT_EQ(run.out, "out\n");
  EXPECT_EQ(run.err, "err\n");

  TF_ASSERT_OK_AND_ASSIGN(auto env, run_in({.argv = {"sh", "-c", "printf %s \"$TF_E2E_PROBE\""},
                                            .env = {{"TF_E2E_PROBE", "from the test"}}}));
  EXPECT_EQ(env.out, "from the test");

  auto started = kernel::Clock::now();
  auto slow = run_in({.argv = {"sleep", "30"}}, 300ms);
  ASSERT_FALSE(slow.has_value());
  EXPECT_THAT(slow.error().message, HasSubstr("still running"));
  EXPECT_LT(kernel::Clock::now() - started, 10s);
}

TEST(Spawn, TerminateStopsTheWholeProcessGroup) {
  // sh waits on a sleep it started; both must go.
  TF_ASSERT_OK_AND_ASSIGN(auto child, spawn({.argv = {"sh", "-c", "sleep 60 & echo $!; wait"}}));
  std::string grandchild;
  for (auto deadline = kernel::Clock::now() + 10s;
       grandchild.empty() && kernel::Clock::now() < deadline; std::this_thread::sleep_for(10ms)) {
    auto out = child.read_stdout();
    if (out && out->ends_with('\n')) grandchild = out->substr(0, out->size() - 1);
  }
  ASSERT_FALSE(grandchild.empty()) << "the shell never printed its child's pid";
  EXPECT_TRUE(child.running());
  child.terminate(2s);
  EXPECT_FALSE(child.running());
  // The sleep is gone (or a zombie awaiting its new parent's reaping).
  auto state = slurp("/proc/" + grandchild + "/stat");
  EXPECT_TRUE(state.empty() || state.find(") Z") != std::string::npos) << state;
}

}  // namespace
}  // namespace trustfence::testing::e2e
