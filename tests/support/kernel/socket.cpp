#include "support/kernel/socket.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

namespace trustfence::testing::kernel {
namespace {

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// Waits for events on fd until the deadline; 0 revents means it passed.
Result<short> wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd pfd{fd, events, 0};
    int n = ::poll(&pfd, 1, remaining_ms(deadline));
    if (n > 0) return pfd.revents;
    if (n == 0) return static_cast<short>(0);
    if (errno != EINTR) return fail_errno("poll", errno);
  }
}

sockaddr_storage to_sockaddr(const Endpoint& end, socklen_t& len) {
  sockaddr_storage ss{};
  if (end.family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(end.port);
    std::memcpy(&sin->sin_addr, end.addr.data(), 4);
    len = sizeof(sockaddr_in);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(end.port);
    std::memcpy(&sin6->sin6_addr, end.addr.data(), 16);
    len = sizeof(sockaddr_in6);
  }
  return ss;
}

Endpoint from_sockaddr(const sockaddr_storage& ss) {
  Endpoint end;
  end.family = ss.ss_family;
  if (ss.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    std::memcpy(end.addr.data(), &sin->sin_addr, 4);
    end.port = ntohs(sin->sin_port);
  } else {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    std::memcpy(end.addr.data(), &sin6->sin6_addr, 16);
    end.port = ntohs(sin6->sin6_port);
  }
  return end;
}

Result<UniqueFd> tcp_socket(int family) {
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket", errno);
  return fd;
}

Result<Endpoint> endpoint_of(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return fail_errno(peer ? "getpeername" : "getsockname", errno);
  return from_sockaddr(ss);
}

}  // namespace

const char* family_name(int family) { return family == AF_INET ? "IPv4" : "IPv6"; }

Endpoint loopback(int family, std::uint16_t port) {
  Endpoint end;
  end.family = family;
  end.port = port;
  if (family == AF_INET) {
    in_addr a{htonl(INADDR_LOOPBACK)};
    std::memcpy(end.addr.data(), &a, 4);
  } else {
    std::memcpy(end.addr.data(), &in6addr_loopback, 16);
  }
  return end;
}

Result<Endpoint> local_endpoint(int fd) { return endpoint_of(fd, false); }
Result<Endpoint> peer_endpoint(int fd) { return endpoint_of(fd, true); }

Result<UniqueFd> listen_loopback(int family, int backlog) {
  auto fd = tcp_socket(family);
  if (!fd) return fd;
  socklen_t len = 0;
  auto addr = to_sockaddr(loopback(family), len);
  if (::bind(fd->get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
    return fail_errno("bind to loopback", errno);
  if (::listen(fd->get(), backlog) != 0) return fail_errno("listen", errno);
  return fd;
}

Result<UniqueFd> connect_loopback(int family, std::uint16_t port, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return fail_errno("socket", errno);
  socklen_t len = 0;
  auto addr = to_sockaddr(loopback(family, port), len);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    if (errno != EINPROGRESS) return fail_errno("connect", errno);
    auto revents = wait_for(fd.get(), POLLOUT, deadline);
    if (!revents) return std::unexpected(revents.error());
    if (*revents == 0) return fail(Errc::kIo, "connect: no handshake within the timeout");
    int err = 0;
    socklen_t err_len = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &err_len);
    if (err != 0) return fail_errno("connect", err);
  }
  // Back to blocking mode; every operation below passes MSG_DONTWAIT.
  int flags = ::fcntl(fd.get(), F_GETFL);
  ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

Result<UniqueFd> accept_one(int listen_fd, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto revents = wait_for(listen_fd, POLLIN, deadline);
    if (!revents) return std::unexpected(revents.error());
    if (*revents == 0) return fail(Errc::kIo, "accept: no connection within the timeout");
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      int flags = ::fcntl(fd, F_GETFL);
      ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
      return UniqueFd(fd);
    }
    if (errno != EAGAIN && errno != EINTR) return fail_errno("accept", errno);
  }
}

Result<std::uint64_t> socket_cookie(int fd) {
  std::uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0)
    return fail_errno("getsockopt SO_COOKIE", errno);
  return cookie;
}

Result<void> send_all(int fd, std::span<const std::byte> data, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  std::size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return fail_errno("send", errno);
    auto revents = wait_for(fd, POLLOUT, deadline);
    if (!revents) return std::unexpected(revents.error());
    if (*revents == 0)
      return fail(Errc::kIo, "send: " + std::to_string(sent) + " of " +
                                 std::to_string(data.size()) + " bytes sent before the timeout");
  }
  return {};
}

Result<void> send_all(int fd, std::string_view text, milliseconds timeout) {
  return send_all(fd, std::as_bytes(std::span(text.data(), text.size())), timeout);
}

Result<std::vector<std::byte>> recv_exact(int fd, std::size_t n, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  std::vector<std::byte> out(n);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, out.data() + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
      continue;
    }
    if (r == 0)
      return fail(Errc::kIo,
                  "recv: EOF after " + std::to_string(got) + " of " + std::to_string(n) + " bytes");
    if (errno != EAGAIN && errno != EINTR) return fail_errno("recv", errno);
    auto revents = wait_for(fd, POLLIN, deadline);
    if (!revents) return std::unexpected(revents.error());
    if (*revents == 0)
      return fail(Errc::kIo, "recv: " + std::to_string(got) + " of " + std::to_string(n) +
                                 " bytes arrived before the timeout");
  }
  return out;
}

Result<std::string> recv_text(int fd, std::size_t n, milliseconds timeout) {
  auto bytes = recv_exact(fd, n, timeout);
  if (!bytes) return std::unexpected(bytes.error());
  return std::string(reinterpret_cast<const char*>(bytes->data()), bytes->size());
}

Result<std::size_t> recv_until_eof(int fd,
                                   const std::function<void(std::span<const std::byte>)>& sink,
                                   milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  std::vector<std::byte> buf(256 * 1024);
  std::size_t total = 0;
  for (;;) {
    ssize_t r = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (r > 0) {
      total += static_cast<std::size_t>(r);
      sink(std::span(buf.data(), static_cast<std::size_t>(r)));
      continue;
    }
    if (r == 0) return total;
    if (errno != EAGAIN && errno != EINTR) return fail_errno("recv", errno);
    auto revents = wait_for(fd, POLLIN, deadline);
    if (!revents) return std::unexpected(revents.error());
    if (*revents == 0)
      return fail(Errc::kIo,
                  "recv: no EOF before the timeout, " + std::to_string(total) + " bytes read");
  }
}

Result<bool> data_arrives_within(int fd, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    std::byte b{};
    ssize_t r = ::recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK);
    if (r > 0) return true;
    if (r == 0) return fail(Errc::kIo, "recv: EOF while waiting for data");
    if (errno != EAGAIN && errno != EINTR) return fail_errno("recv", errno);
    auto revents = wait_for(fd, POLLIN, deadline);
    if (!revents) return std::unexpected(revents.error());
    if (*revents == 0) return false;
  }
}

Result<bool> reset_arrives_within(int fd, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    std::byte b{};
    ssize_t r = ::recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK);
    if (r < 0 && errno == ECONNRESET) return true;
    if (r >= 0)
      return fail(Errc::kIo, r == 0 ? "recv: EOF, not a reset" : "recv: data, not a reset");
    if (errno != EAGAIN && errno != EINTR) return fail_errno("recv", errno);
    auto revents = wait_for(fd, POLLIN, deadline);
    if (!revents) return std::unexpected(revents.error());
    if (*revents == 0) return false;
  }
}

Result<int> recv_failure_within(int fd, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    std::byte b{};
    ssize_t r = ::recv(fd, &b, 1, MSG_DONTWAIT);
    if (r == 0) return 0;
    if (r > 0) return fail(Errc::kIo, "recv: data where a failure was expected");
    if (errno != EAGAIN && errno != EINTR) return errno;
    auto revents = wait_for(fd, POLLIN, deadline);
    if (!revents) return std::unexpected(revents.error());
    if (*revents == 0) return fail(Errc::kIo, "recv: still open after the timeout");
  }
}

Result<void> set_linger_zero(int fd) {
  linger lg{1, 0};
  if (::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) != 0)
    return fail_errno("setsockopt SO_LINGER", errno);
  return {};
}

Result<bool> time_wait_listed(int family, std::uint16_t local_port, std::uint16_t remote_port) {
  const char* path = family == AF_INET ? "/proc/net/tcp" : "/proc/net/tcp6";
  std::ifstream in(path);
  if (!in) return fail_errno(std::string("reading ") + path, errno);
  constexpr unsigned kTimeWait = 0x06;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    if (!(fields >> slot >> local >> remote >> state)) continue;
    auto port_of = [](const std::string& addr) {
      return static_cast<std::uint16_t>(std::stoul(addr.substr(addr.find(':') + 1), nullptr, 16));
    };
    if (std::stoul(state, nullptr, 16) == kTimeWait && port_of(local) == local_port &&
        port_of(remote) == remote_port)
      return true;
  }
  return false;
}

Result<ConnectedPair> connect_pair(int family, int listen_fd, std::uint16_t port,
                                   milliseconds timeout) {
  ConnectedPair pair;
  auto client = connect_loopback(family, port, timeout);
  if (!client) return std::unexpected(client.error());
  auto server = accept_one(listen_fd, timeout);
  if (!server) return std::unexpected(server.error());
  pair.client = std::move(*client);
  pair.server = std::move(*server);
  auto client_cookie = socket_cookie(pair.client.get());
  if (!client_cookie) return std::unexpected(client_cookie.error());
  auto server_cookie = socket_cookie(pair.server.get());
  if (!server_cookie) return std::unexpected(server_cookie.error());
  pair.client_cookie = *client_cookie;
  pair.server_cookie = *server_cookie;
  auto client_end = local_endpoint(pair.client.get());
  if (!client_end) return std::unexpected(client_end.error());
  auto server_end = local_endpoint(pair.server.get());
  if (!server_end) return std::unexpected(server_end.error());
  pair.client_end = *client_end;
  pair.server_end = *server_end;
  auto server_peer = peer_endpoint(pair.server.get());
  if (!server_peer) return std::unexpected(server_peer.error());
  if (server_peer->port != pair.client_end.port)
    return fail(Errc::kIo, "accept returned another connection than the one just made");
  return pair;
}

std::vector<std::byte> random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> out(n);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t word = rng();
    std::memcpy(out.data() + i, &word, 8);
  }
  for (; i < n; ++i) out[i] = static_cast<std::byte>(rng());
  return out;
}

}  // namespace trustfence::testing::kernel
