// SOCK_DESTROY over real loopback TCP: the destroyed end's owner sees
// ECONNABORTED at once, even when blocked in recv; the peer sees a reset; the
// cookie guards the tuple, so a wrong cookie or a gone socket destroys nothing.

#include "trustfence/datapath/sock_destroy.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <thread>

#include "support/kernel/assert_ok.hpp"
#include "support/kernel/socket.hpp"
#include "support/privileges.hpp"
#include "trustfence/datapath/host.hpp"

namespace trustfence::testing::kernel {
namespace {

using namespace std::chrono_literals;

// "Promptly": a destroyed socket's peer and owner learn of it well within
// this, where without the destroy they would wait forever.
constexpr milliseconds kPrompt = 2'000ms;

// The tuple as the socket itself sees it, in tf_tuple's byte orders.
tf_tuple tuple_of(const Endpoint& local, const Endpoint& remote) {
  tf_tuple tuple{};
  tuple.family = static_cast<__u8>(local.family);
  std::memcpy(tuple.local_addr, local.addr.data(), sizeof(tuple.local_addr));
  std::memcpy(tuple.remote_addr, remote.addr.data(), sizeof(tuple.remote_addr));
  tuple.local_port = local.port;
  tuple.remote_port = remote.port;
  return tuple;
}

// Waits until thread `tid` of this process sits in recvfrom, so a destroy
// really hits a blocked call rather than racing it.
Result<void> wait_until_blocked_in_recv(pid_t tid, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  const auto path = "/proc/self/task/" + std::to_string(tid) + "/syscall";
  while (Clock::now() < deadline) {
    std::ifstream in(path);
    long nr = -1;
    if (in >> nr && nr == SYS_recvfrom) return {};
    std::this_thread::sleep_for(2ms);
  }
  return fail(Errc::kIo, "the receiving thread never blocked in recvfrom");
}

// These tests need a kernel that destroys TCP sockets; without one, what
// the datapath does instead is asserted by
// KernelSupportTest.SockDestroyWorksIfTheProbeSaysSo.
#define TF_REQUIRE_SOCK_DESTROY()                                                        \
  do {                                                                                   \
    if (!datapath::kernel_features().sock_destroy)                                       \
      GTEST_SKIP() << "kernel lacks SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY, tcp_diag): " \
                      "the degraded behaviour is asserted by KernelSupportTest";         \
  } while (0)

class SockDestroyTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    TF_REQUIRE_ROOT();
    TF_REQUIRE_SOCK_DESTROY();
    TF_ASSERT_OK_AND_ASSIGN(listener_, listen_loopback(GetParam()));
    TF_ASSERT_OK_AND_ASSIGN(auto port, local_endpoint(listener_.get()));
    listen_port_ = port.port;
    TF_ASSERT_OK_AND_ASSIGN(pair_, connect_pair(GetParam(), listener_.get(), listen_port_));
  }

  tf_tuple server_tuple() const { return tuple_of(pair_.server_end, pair_.client_end); }
  tf_tuple client_tuple() const { return tuple_of(pair_.client_end, pair_.server_end); }

  // The pair still carries bytes both ways.
  void expect_connection_works() {
    TF_ASSERT_OK(send_all(pair_.client.get(), "ping"));
    TF_ASSERT_OK_AND_ASSIGN(auto ping, recv_text(pair_.server.get(), 4));
    EXPECT_EQ(ping, "ping");
    TF_ASSERT_OK(send_all(pair_.server.get(), "pong"));
    TF_ASSERT_OK_AND_ASSIGN(auto pong, recv_text(pair_.client.get(), 4));
    EXPECT_EQ(pong, "pong");
  }

  UniqueFd listener_;
  std::uint16_t listen_port_ = 0;
  ConnectedPair pair_;
};

TEST_P(SockDestroyTest, DestroyingTheServerSocketResetsTheClientAndFailsItsOwner) {
  TF_ASSERT_OK_AND_ASSIGN(bool destroyed,
                          datapath::destroy_socket(server_tuple(), pair_.server_cookie));
  ASSERT_TRUE(destroyed);

  TF_ASSERT_OK_AND_ASSIGN(int client_err, recv_failure_within(pair_.client.get(), kPrompt));
  EXPECT_TRUE(client_err == ECONNRESET || client_err == 0)
      << "client recv failed with " << std::strerror(client_err) << ", not a reset or EOF";

  TF_ASSERT_OK_AND_ASSIGN(int server_err, recv_failure_within(pair_.server.get(), kPrompt));
  EXPECT_EQ(server_err, ECONNABORTED) << std::strerror(server_err);
  ssize_t sent = ::send(pair_.server.get(), "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  EXPECT_LT(sent, 0) << "a destroyed socket still sends";
}

TEST_P(SockDestroyTest, DestroyWakesAServerBlockedInRecv) {
  // Bounds the blocked recv should the destroy not wake it.
  timeval limit{10, 0};
  ASSERT_EQ(::setsockopt(pair_.server.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit)), 0);
  std::promise<pid_t> tid_promise;
  auto tid_future = tid_promise.get_future();
  auto blocked = std::async(std::launch::async, [&, fd = pair_.server.get()] {
    tid_promise.set_value(static_cast<pid_t>(::syscall(SYS_gettid)));
    char byte = 0;
    ssize_t r = ::recvfrom(fd, &byte, 1, 0, nullptr, nullptr);
    return r < 0 ? errno : 0;
  });
  TF_ASSERT_OK(wait_until_blocked_in_recv(tid_future.get(), kIoTimeout));

  auto started = Clock::now();
  TF_ASSERT_OK_AND_ASSIGN(bool destroyed,
                          datapath::destroy_socket(server_tuple(), pair_.server_cookie));
  ASSERT_TRUE(destroyed);
  ASSERT_EQ(blocked.wait_for(kPrompt), std::future_status::ready)
      << "recv stayed blocked after the destroy";
  EXPECT_EQ(blocked.get(), ECONNABORTED);
  EXPECT_LT(Clock::now() - started, kPrompt);

  TF_ASSERT_OK_AND_ASSIGN(int client_err, recv_failure_within(pair_.client.get(), kPrompt));
  EXPECT_TRUE(client_err == ECONNRESET || client_err == 0) << std::strerror(client_err);
}

TEST_P(SockDestroyTest, DestroyingTheClientSocketResetsTheServer) {
  TF_ASSERT_OK_AND_ASSIGN(bool destroyed,
                          datapath::destroy_socket(client_tuple(), pair_.client_cookie));
  ASSERT_TRUE(destroyed);

  TF_ASSERT_OK_AND_ASSIGN(int server_err, recv_failure_within(pair_.server.get(), kPrompt));
  EXPECT_TRUE(server_err == ECONNRESET || server_err == 0) << std::strerror(server_err);
  TF_ASSERT_OK_AND_ASSIGN(int client_err, recv_failure_within(pair_.client.get(), kPrompt));
  EXPECT_EQ(client_err, ECONNABORTED) << std::strerror(client_err);
}

TEST_P(SockDestroyTest, AWrongCookieWithTheRightTupleDestroysNothing) {
  // The peer's cookie, and one no socket has: both name another socket.
  for (auto cookie : {pair_.client_cookie, pair_.server_cookie + 1}) {
    TF_ASSERT_OK_AND_ASSIGN(bool destroyed, datapath::destroy_socket(server_tuple(), cookie));
    EXPECT_FALSE(destroyed) << "cookie " << cookie;
  }
  expect_connection_works();
}

TEST_P(SockDestroyTest, ATupleOfNoSocketDestroysNothing) {
  // Only the listener matches the local end: the kernel's lookup falls back
  // to it, and the cookie keeps it alive.
  auto unknown_peer = server_tuple();
  unknown_peer.remote_port = static_cast<std::uint16_t>(pair_.client_end.port ^ 0x5a5a);
  TF_ASSERT_OK_AND_ASSIGN(bool a, datapath::destroy_socket(unknown_peer, pair_.server_cookie));
  EXPECT_FALSE(a);

  // Nothing at all on these ports.
  auto nothing = client_tuple();
  nothing.local_port = static_cast<std::uint16_t>(pair_.client_end.port ^ 0x5a5a);
  nothing.remote_port = static_cast<std::uint16_t>(listen_port_ ^ 0x5a5a);
  TF_ASSERT_OK_AND_ASSIGN(bool b, datapath::destroy_socket(nothing, pair_.client_cookie));
  EXPECT_FALSE(b);

  expect_connection_works();
  TF_ASSERT_OK_AND_ASSIGN(auto another, connect_loopback(GetParam(), listen_port_));
  TF_ASSERT_OK_AND_ASSIGN(auto accepted, accept_one(listener_.get()));
  EXPECT_TRUE(accepted.valid()) << "the listener stopped accepting";
}

TEST_P(SockDestroyTest, ASocketAlreadyClosedIsReportedGone) {
  auto tuple = server_tuple();
  auto cookie = pair_.server_cookie;
  TF_ASSERT_OK(set_linger_zero(pair_.server.get()));  // no TIME_WAIT left behind
  pair_.server.reset();
  TF_ASSERT_OK_AND_ASSIGN(bool destroyed, datapath::destroy_socket(tuple, cookie));
  EXPECT_FALSE(destroyed);
}

TEST_P(SockDestroyTest, WithoutCapNetAdminTheErrorNamesIt) {
  // A child drops CAP_NET_ADMIN from its effective set and tries; the exit
  // code carries the Errc back (fork: nothing here may outlive the child).
  const auto tuple = server_tuple();
  const auto cookie = pair_.server_cookie;
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &header, data) != 0) ::_exit(10);
    data[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
    if (::syscall(SYS_capset, &header, data) != 0) ::_exit(11);
    auto result = datapath::destroy_socket(tuple, cookie);
    if (result) ::_exit(12);
    bool named = result.error().message.find("CAP_NET_ADMIN") != std::string::npos;
    ::_exit(result.error().code == Errc::kPermissionDenied && named ? 0 : 13);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "10/11: capget/capset failed, 12: destroyed anyway, 13: wrong error";
  expect_connection_works();
}

// An AF_INET6 socket carrying IPv4 reports ::ffff:a.b.c.d addresses with
// family AF_INET6 (as sock_ops does); the kernel resolves those to the IPv4
// socket.
TEST(SockDestroy, FindsAnIpv4MappedSocketByItsMappedTuple) {
  TF_REQUIRE_ROOT();
  TF_REQUIRE_SOCK_DESTROY();
  auto mapped_loopback = [](std::uint16_t port) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port);
    sin6.sin6_addr.s6_addr[10] = 0xff;
    sin6.sin6_addr.s6_addr[11] = 0xff;
    sin6.sin6_addr.s6_addr[12] = 127;
    sin6.sin6_addr.s6_addr[15] = 1;
    return sin6;
  };
  UniqueFd listener(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(listener.valid()) << std::strerror(errno);
  int off = 0;
  ASSERT_EQ(::setsockopt(listener.get(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)), 0);
  auto addr = mapped_loopback(0);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << std::strerror(errno);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  TF_ASSERT_OK_AND_ASSIGN(auto bound, local_endpoint(listener.get()));

  UniqueFd client(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(client.valid()) << std::strerror(errno);
  auto server_addr = mapped_loopback(bound.port);
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&server_addr), sizeof(server_addr)),
            0)
      << std::strerror(errno);
  TF_ASSERT_OK_AND_ASSIGN(auto server, accept_one(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto local, local_endpoint(server.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto remote, peer_endpoint(server.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto cookie, socket_cookie(server.get()));
  ASSERT_EQ(local.family, AF_INET6);

  TF_ASSERT_OK_AND_ASSIGN(bool destroyed,
                          datapath::destroy_socket(tuple_of(local, remote), cookie));
  ASSERT_TRUE(destroyed);
  TF_ASSERT_OK_AND_ASSIGN(int client_err, recv_failure_within(client.get(), kPrompt));
  EXPECT_TRUE(client_err == ECONNRESET || client_err == 0) << std::strerror(client_err);
}

TEST(SockDestroy, RejectsAnUnknownFamily) {
  tf_tuple tuple{};
  tuple.family = AF_UNIX;
  auto result = datapath::destroy_socket(tuple, 1);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code, Errc::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(SockDestroy, SockDestroyTest, ::testing::Values(AF_INET, AF_INET6),
                         [](const auto& info) { return std::string(family_name(info.param)); });

}  // namespace
}  // namespace trustfence::testing::kernel
