#pragma once

// TCP over loopback (127.0.0.1 and ::1 only) for the kernel tier. Every
// wait is bounded: operations poll with a deadline and never block on the
// socket itself.

#include <netinet/in.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"

namespace trustfence::testing::kernel {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Generous: a loaded 2-core CI machine must never trip these on a pass.
inline constexpr milliseconds kIoTimeout{10'000};
inline constexpr milliseconds kStreamTimeout{60'000};

const char* family_name(int family);  // "IPv4" / "IPv6"

// One end of a connection. addr in network byte order (IPv4 in the first
// four bytes, the rest zero, as in tf_tuple); port in host byte order.
struct Endpoint {
  int family = 0;
  std::array<std::uint8_t, 16> addr{};
  std::uint16_t port = 0;
};

Endpoint loopback(int family, std::uint16_t port = 0);
Result<Endpoint> local_endpoint(int fd);
Result<Endpoint> peer_endpoint(int fd);

// A listening socket on the family's loopback address, port chosen by the
// kernel.
Result<UniqueFd> listen_loopback(int family, int backlog = 4096);
Result<UniqueFd> connect_loopback(int family, std::uint16_t port,
                                  milliseconds timeout = kIoTimeout);
Result<UniqueFd> accept_one(int listen_fd, milliseconds timeout = kIoTimeout);

// The socket cookie, the key of tf_conns.
Result<std::uint64_t> socket_cookie(int fd);

// Writes all of data, waiting for room with poll until the deadline.
Result<void> send_all(int fd, std::span<const std::byte> data, milliseconds timeout = kIoTimeout);
Result<void> send_all(int fd, std::string_view text, milliseconds timeout = kIoTimeout);
// Reads exactly n bytes; EOF or the deadline first is an error.
Result<std::vector<std::byte>> recv_exact(int fd, std::size_t n, milliseconds timeout = kIoTimeout);
Result<std::string> recv_text(int fd, std::size_t n, milliseconds timeout = kIoTimeout);
// Reads until EOF, handing each chunk to sink; returns the byte count.
Result<std::size_t> recv_until_eof(int fd,
                                   const std::function<void(std::span<const std::byte>)>& sink,
                                   milliseconds timeout = kStreamTimeout);
// True as soon as payload is readable (peeked, not consumed) within
// timeout, false if none arrived; EOF or a reset is an error.
Result<bool> data_arrives_within(int fd, milliseconds timeout);
// Waits for the peer's reset: true when recv fails with ECONNRESET.
Result<bool> reset_arrives_within(int fd, milliseconds timeout);
// The errno the next recv fails with, 0 for EOF, waiting up to timeout;
// an error if data arrives or nothing happens.
Result<int> recv_failure_within(int fd, milliseconds timeout);

// close() then sends RST instead of FIN, and leaves no TIME_WAIT.
Result<void> set_linger_zero(int fd);

// Whether /proc/net/tcp{,6} lists a TIME_WAIT socket with these ports.
Result<bool> time_wait_listed(int family, std::uint16_t local_port, std::uint16_t remote_port);

// Both ends of one connection over loopback, with their cookies.
struct ConnectedPair {
  UniqueFd client;
  UniqueFd server;
  std::uint64_t client_cookie = 0;
  std::uint64_t server_cookie = 0;
  Endpoint client_end;  // the client's local address and port
  Endpoint server_end;  // the server's local address and port
};
Result<ConnectedPair> connect_pair(int family, int listen_fd, std::uint16_t port,
                                   milliseconds timeout = kIoTimeout);

// n pseudo-random bytes from a fixed seed (reproducible runs).
std::vector<std::byte> random_bytes(std::size_t n, std::uint64_t seed);

}  // namespace trustfence::testing::kernel
