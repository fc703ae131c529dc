// The accept loop every server of the agent shares, over real loopback
// sockets: connections are handed over with the caller's address, and an
// accept error pauses accepting instead of spinning, then resumes on its own.

#include "trustfence/runtime/acceptor.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <vector>

#include "trustfence/common/unique_fd.hpp"

namespace trustfence::runtime {
namespace {

using namespace std::chrono_literals;

// A loopback listener on an ephemeral port.
UniqueFd listen_loopback(sockaddr_in& bound) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  EXPECT_EQ(::listen(fd.get(), 16), 0);
  socklen_t length = sizeof(bound);
  EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &length), 0);
  return fd;
}

UniqueFd connect_to(const sockaddr_in& address) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0);
  return fd;
}

// Runs the loop until `done` or a deadline.
void run_until(EventLoop& loop, const std::function<bool()>& done,
               std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    loop.after(10ms, [&loop] { loop.stop(); });
    ASSERT_TRUE(loop.run(10ms));
  }
}

TEST(Acceptor, HandsOverEachConnectionWithTheCallersAddress) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  sockaddr_in bound{};
  std::vector<UniqueFd> accepted;
  std::vector<std::uint16_t> ports;
  auto acceptor =
      Acceptor::start(*loop, listen_loopback(bound), "test listener",
                      [&](UniqueFd fd, const sockaddr_storage& from) {
                        ASSERT_EQ(from.ss_family, AF_INET);
                        ports.push_back(ntohs(reinterpret_cast<const sockaddr_in&>(from).sin_port));
                        accepted.push_back(std::move(fd));
                      });
  ASSERT_TRUE(acceptor) << acceptor.error().message;
  auto first = connect_to(bound);
  auto second = connect_to(bound);
  run_until(
      *loop, [&] { return accepted.size() == 2; }, 2s);
  ASSERT_EQ(accepted.size(), 2U);
  for (std::size_t i = 0; i < 2; ++i) {
    sockaddr_in local{};
    socklen_t length = sizeof(local);
    const auto& client = i == 0 ? first : second;
    ASSERT_EQ(::getsockname(client.get(), reinterpret_cast<sockaddr*>(&local), &length), 0);
    EXPECT_EQ(ports[i], ntohs(local.sin_port));
  }
  EXPECT_FALSE(acceptor.value()->paused());
}

// Any accept error pauses (EMFILE is the one met in practice; exhausting
// descriptors here would also starve the sanitizers' own checks, so the
// error comes from a listener shut down under the acceptor: EINVAL).
TEST(Acceptor, AnAcceptErrorPausesThenResumes) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  sockaddr_in bound{};
  int admitted = 0;
  auto acceptor = Acceptor::start(*loop, listen_loopback(bound), "test listener",
                                  [&](UniqueFd, const sockaddr_storage&) { ++admitted; });
  ASSERT_TRUE(acceptor);
  const int fd = acceptor.value()->fd();

  ASSERT_EQ(::shutdown(fd, SHUT_RDWR), 0);
  run_until(
      *loop, [&] { return acceptor.value()->paused(); }, 1s);
  ASSERT_TRUE(acceptor.value()->paused()) << "an accept error must pause the listener";

  // Listening again on the same socket: the waiting connection is taken
  // once the pause ends.
  ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&bound), sizeof(bound)), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  auto client = connect_to(bound);
  run_until(
      *loop, [&] { return admitted == 1; }, 2s);
  EXPECT_EQ(admitted, 1);
  EXPECT_FALSE(acceptor.value()->paused());
}

TEST(Acceptor, ClosesTheListeningSocketWhenDestroyed) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  sockaddr_in bound{};
  auto acceptor = Acceptor::start(*loop, listen_loopback(bound), "test listener",
                                  [](UniqueFd, const sockaddr_storage&) {});
  ASSERT_TRUE(acceptor);
  EXPECT_EQ(loop->watched(), 1U);
  acceptor->reset();
  EXPECT_EQ(loop->watched(), 0U);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_NE(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&bound), sizeof(bound)), 0);
  EXPECT_EQ(errno, ECONNREFUSED);
}

}  // namespace
}  // namespace trustfence::runtime
