// Sockets in another network namespace, as a pod's are while the agent runs
// with hostNetwork: the datapath stays in this netns; a client and a server
// run in a netns the test makes (its own loopback), in the enforced cgroup,
// with a process of that netns left in the cgroup as a pod has. SOCK_DESTROY
// and the tf_resend_held iterator only reach the netns they are made in, so
// a denial resets these sockets, and an ALLOW pushes their held first
// segment, only when the agent acts from the sockets' own netns.

#include "trustfence/datapath/netns.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <thread>

#include "support/kernel/assert_ok.hpp"
#include "support/kernel/socket.hpp"
#include "support/kernel/test_datapath.hpp"
#include "support/privileges.hpp"
#include "trustfence/datapath/sock_destroy.hpp"

namespace trustfence::testing::kernel {
namespace {

using namespace std::chrono_literals;

// A reset or a failed read "promptly": where nothing reaches the socket
// they never come at all.
constexpr milliseconds kPrompt = 2'000ms;
// A pushed segment is there within this once the push is done. Without the
// push it waits on TCP's probe timer: ~200 ms after the held send, which the
// ALLOW follows by a few ms here.
constexpr milliseconds kPushed = 100ms;

Result<void> set_loopback_up() {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket for SIOCSIFFLAGS", errno);
  ifreq req{};
  std::strncpy(req.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(fd.get(), SIOCGIFFLAGS, &req) != 0) return fail_errno("SIOCGIFFLAGS lo", errno);
  req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP);
  if (::ioctl(fd.get(), SIOCSIFFLAGS, &req) != 0) return fail_errno("SIOCSIFFLAGS lo up", errno);
  return {};
}

// A "pod": a child process alone in a fresh netns, moved into a cgroup,
// where it waits until killed. Its netns outlives it while this holds it.
class PodNetns {
 public:
  static Result<PodNetns> start(const TestCgroup& cgroup) {
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) return fail_errno("pipe2", errno);
    UniqueFd read_end(ready[0]), write_end(ready[1]);
    pid_t pid = ::fork();
    if (pid < 0) return fail_errno("fork", errno);
    if (pid == 0) {  // async-signal-safe calls only
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      char ok = ::unshare(CLONE_NEWNET) == 0 ? 1 : 0;
      (void)::write(write_end.get(), &ok, 1);
      for (;;) ::pause();
    }
    PodNetns pod(pid);
    write_end.reset();
    pollfd pfd{read_end.get(), POLLIN, 0};
    char ok = 0;
    if (::poll(&pfd, 1, static_cast<int>(kIoTimeout.count())) != 1 ||
        ::read(read_end.get(), &ok, 1) != 1 || ok != 1)
      return fail(Errc::kIo, "the pod process could not unshare its netns");
    auto ns_path = "/proc/" + std::to_string(pid) + "/ns/net";
    pod.netns_.reset(::open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!pod.netns_) return fail_errno("opening " + ns_path, errno);
    auto procs = cgroup.path() + "/cgroup.procs";
    UniqueFd procs_fd(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
    auto text = std::to_string(pid);
    if (!procs_fd || ::write(procs_fd.get(), text.data(), text.size()) < 0)
      return fail_errno("moving the pod process into " + cgroup.path(), errno);
    if (auto up = pod.run(set_loopback_up); !up) return std::unexpected(up.error());
    return pod;
  }

  PodNetns(PodNetns&& other) noexcept
      : pid_(std::exchange(other.pid_, 0)), netns_(std::move(other.netns_)) {}
  PodNetns& operator=(PodNetns&&) = delete;
  ~PodNetns() { kill(); }

  // Runs fn on a thread that entered the netns; sockets it makes stay there.
  Result<void> run(const std::function<Result<void>()>& fn) const {
    Result<void> result;
    std::thread worker([&] {
      if (::setns(netns_.get(), CLONE_NEWNET) != 0)
        result = fail_errno("entering the pod netns", errno);
      else
        result = fn();
    });
    worker.join();
    return result;
  }

  // The process exits; the netns lives on in the sockets made in it.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

 private:
  explicit PodNetns(pid_t pid) : pid_(pid) {}

  pid_t pid_ = 0;
  UniqueFd netns_;
};

class NetnsTest : public TestDatapath, public ::testing::WithParamInterface<int> {
 protected:
  void TearDown() override {
    pod_.reset();  // out of the cgroup, so the fixture can remove it
    pair_ = {};
    TestDatapath::TearDown();
  }

  // A tracked, PENDING connection inside the pod's netns.
  void connect_in_pod() {
    TF_ASSERT_OK(open());
    TF_ASSERT_OK_AND_ASSIGN(auto pod, PodNetns::start(cgroup()));
    pod_.emplace(std::move(pod));
    TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
    TF_ASSERT_OK(pod_->run([&]() -> Result<void> {
      auto listener = listen_loopback(GetParam());
      if (!listener) return std::unexpected(listener.error());
      auto port = local_endpoint(listener->get());
      if (!port) return std::unexpected(port.error());
      auto pair = connect_pair(GetParam(), listener->get(), port->port);
      if (!pair) return std::unexpected(pair.error());
      pair_ = std::move(*pair);
      return {};
    }));
    TF_ASSERT_OK(inside.leave());
    TF_ASSERT_OK_AND_ASSIGN(auto server, conns().lookup(pair_.server_cookie));
    ASSERT_TRUE(server.has_value()) << "the pod's server socket is not tracked";
    server_conn_ = *server;
    ASSERT_EQ(server_conn_.cgroup_id, cgroup().id());
  }

  std::optional<PodNetns> pod_;
  ConnectedPair pair_;
  tf_conn server_conn_{};
};

TEST_P(NetnsTest, ADeniedSocketInAPodNetnsIsResetAtOnce) {
  TF_REQUIRE_ROOT();
  connect_in_pod();
  if (HasFatalFailure()) return;
  TF_ASSERT_OK_AND_ASSIGN(bool denied, deny(pair_.server_cookie));
  ASSERT_TRUE(denied);

  // From the agent's netns alone the socket does not exist.
  TF_ASSERT_OK_AND_ASSIGN(bool from_host,
                          datapath::destroy_socket(server_conn_.tuple, pair_.server_cookie));
  EXPECT_FALSE(from_host);

  const auto before = dp().netns().counters();
  TF_ASSERT_OK_AND_ASSIGN(
      bool destroyed, datapath::destroy_socket(dp().netns(), pair_.server_cookie, server_conn_));
  ASSERT_TRUE(destroyed) << "the denied socket in the pod's netns was not destroyed";
  const auto after = dp().netns().counters();
  EXPECT_EQ(after.foreign_destroyed, before.foreign_destroyed + 1);

  TF_ASSERT_OK_AND_ASSIGN(bool reset, reset_arrives_within(pair_.client.get(), kPrompt));
  EXPECT_TRUE(reset) << "the client saw no reset";
  TF_ASSERT_OK_AND_ASSIGN(int server_err, recv_failure_within(pair_.server.get(), kPrompt));
  EXPECT_EQ(server_err, ECONNABORTED) << std::strerror(server_err);
}

TEST_P(NetnsTest, AnAllowPushesTheHeldFirstSegmentFromThePodNetns) {
  TF_REQUIRE_ROOT();
  connect_in_pod();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(dp().resend_supported()) << "this kernel has no setsockopt from TCP iterators";
  auto held_drops = [&] {
    auto s = stats();
    return s ? s->packets[TF_PACKET_EGRESS][TF_ACTION_DROP][TF_REASON_PENDING] : 0;
  };
  const auto drops_before = held_drops();
  TF_ASSERT_OK(send_all(pair_.client.get(), "first segment"));
  ASSERT_TRUE(wait_until([&] { return held_drops() > drops_before; }, kIoTimeout))
      << "the first segment was not held at the client's egress";
  TF_ASSERT_OK_AND_ASSIGN(bool early, data_arrives_within(pair_.server.get(), 0ms));
  ASSERT_FALSE(early) << "payload of a PENDING connection got through";

  const auto before = dp().netns().counters();
  const auto allowed_at = Clock::now();
  TF_ASSERT_OK_AND_ASSIGN(bool server_allowed, allow(pair_.server_cookie));
  ASSERT_TRUE(server_allowed);
  TF_ASSERT_OK_AND_ASSIGN(bool client_allowed, allow(pair_.client_cookie));
  ASSERT_TRUE(client_allowed);
  dp().wait_for_resends();
  const auto pushed_at = Clock::now();
  // The mechanism: a walk made in the pod's netns met the client socket.
  const auto after = dp().netns().counters();
  EXPECT_GE(after.foreign_walks, before.foreign_walks + 1);
  EXPECT_EQ(after.foreign_pushed, before.foreign_pushed + 1);

  TF_ASSERT_OK_AND_ASSIGN(bool arrived, data_arrives_within(pair_.server.get(), kPushed));
  auto waited = std::chrono::duration<double, std::milli>(Clock::now() - allowed_at).count();
  EXPECT_TRUE(arrived) << "the held segment was not pushed: nothing " << kPushed.count()
                       << " ms after the push (TCP's probe timer resends it ~200 ms after the "
                          "held send)";
  std::printf("[ netns    ] %s first byte %.1f ms after ALLOW (pushed after %.1f ms)\n",
              family_name(GetParam()), waited,
              std::chrono::duration<double, std::milli>(pushed_at - allowed_at).count());
  TF_ASSERT_OK_AND_ASSIGN(auto text, recv_text(pair_.server.get(), 13));
  EXPECT_EQ(text, "first segment");
}

TEST_P(NetnsTest, WithThePodProcessGoneItFallsBackToTheAgentNetnsAndCountsIt) {
  TF_REQUIRE_ROOT();
  connect_in_pod();
  if (HasFatalFailure()) return;
  pod_->kill();  // the cgroup is empty now; the sockets keep the netns
  const auto before = dp().netns().counters();
  TF_ASSERT_OK_AND_ASSIGN(
      bool destroyed, datapath::destroy_socket(dp().netns(), pair_.server_cookie, server_conn_));
  EXPECT_FALSE(destroyed);
  const auto after = dp().netns().counters();
  EXPECT_EQ(after.unresolved, before.unresolved + 1);
  EXPECT_EQ(after.foreign_destroyed, before.foreign_destroyed);
}

// Today's behaviour, and what the push above is measured against: with no
// process of the pod left to enter its netns by, the walk in the agent's
// netns misses the socket and the held segment waits for TCP's probe timer,
// armed at the send with a 200 ms floor. (A slow run only delays it more.)
constexpr milliseconds kProbeFloorLessSlack = 150ms;

TEST_P(NetnsTest, WithThePodProcessGoneTheHeldSegmentWaitsForTcpsTimer) {
  TF_REQUIRE_ROOT();
  connect_in_pod();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(dp().resend_supported());
  auto held_drops = [&] {
    auto s = stats();
    return s ? s->packets[TF_PACKET_EGRESS][TF_ACTION_DROP][TF_REASON_PENDING] : 0;
  };
  const auto drops_before = held_drops();
  const auto sent_at = Clock::now();
  TF_ASSERT_OK(send_all(pair_.client.get(), "first segment"));
  ASSERT_TRUE(wait_until([&] { return held_drops() > drops_before; }, kIoTimeout));
  pod_->kill();

  const auto before = dp().netns().counters();
  TF_ASSERT_OK_AND_ASSIGN(bool server_allowed, allow(pair_.server_cookie));
  ASSERT_TRUE(server_allowed);
  TF_ASSERT_OK_AND_ASSIGN(bool client_allowed, allow(pair_.client_cookie));
  ASSERT_TRUE(client_allowed);
  dp().wait_for_resends();
  const auto after = dp().netns().counters();
  EXPECT_GT(after.unresolved, before.unresolved);
  EXPECT_EQ(after.foreign_pushed, before.foreign_pushed);

  TF_ASSERT_OK_AND_ASSIGN(bool arrived, data_arrives_within(pair_.server.get(), kIoTimeout));
  ASSERT_TRUE(arrived) << "TCP never resent the held segment";
  const auto after_send = std::chrono::duration<double, std::milli>(Clock::now() - sent_at);
  EXPECT_GE(after_send, kProbeFloorLessSlack) << "arrived before TCP's timer could send it";
  TF_ASSERT_OK_AND_ASSIGN(auto text, recv_text(pair_.server.get(), 13));
  EXPECT_EQ(text, "first segment");
  std::printf("[ netns    ] %s without a push: first byte %.1f ms after the send\n",
              family_name(GetParam()), after_send.count());
}

TEST_P(NetnsTest, SocketsOfTheAgentNetnsStayOnTheFastPath) {
  TF_REQUIRE_ROOT();
  TF_ASSERT_OK(open());
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(GetParam()));
  TF_ASSERT_OK_AND_ASSIGN(auto port, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto pair, connect_pair(GetParam(), listener.get(), port.port));
  // This process stays in the cgroup: its netns is the agent's.
  TF_ASSERT_OK_AND_ASSIGN(auto conn, conns().lookup(pair.server_cookie));
  ASSERT_TRUE(conn.has_value());
  auto where = dp().netns().locate(conn->cgroup_id);
  EXPECT_TRUE(where.own);
  EXPECT_TRUE(where.foreign.empty());
  TF_ASSERT_OK(inside.leave());

  TF_ASSERT_OK_AND_ASSIGN(bool denied, deny(pair.server_cookie));
  ASSERT_TRUE(denied);
  const auto before = dp().netns().counters();
  TF_ASSERT_OK_AND_ASSIGN(bool destroyed,
                          datapath::destroy_socket(dp().netns(), pair.server_cookie, *conn));
  EXPECT_TRUE(destroyed);
  const auto after = dp().netns().counters();
  EXPECT_EQ(after.entered, before.entered) << "entered another netns for a socket of this one";
  TF_ASSERT_OK_AND_ASSIGN(bool reset, reset_arrives_within(pair.client.get(), kPrompt));
  EXPECT_TRUE(reset);
}

INSTANTIATE_TEST_SUITE_P(Netns, NetnsTest, ::testing::Values(AF_INET, AF_INET6),
                         [](const auto& info) { return std::string(family_name(info.param)); });

}  // namespace
}  // namespace trustfence::testing::kernel
