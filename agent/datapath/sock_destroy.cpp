#include "trustfence/datapath/sock_destroy.hpp"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <vector>

#include "trustfence/common/unique_fd.hpp"
#include "trustfence/datapath/format.hpp"

namespace trustfence::datapath {
namespace {

using Clock = std::chrono::steady_clock;

// The kernel answers while handling sendto, so the ACK is normally queued
// already; the bound only guards against a reply that never comes.
constexpr std::chrono::milliseconds kAckTimeout{2'000};

struct DestroyRequest {
  nlmsghdr header;
  inet_diag_req_v2 body;
};

std::uint32_t next_sequence() {
  static std::atomic<std::uint32_t> sequence{1};
  return sequence.fetch_add(1, std::memory_order_relaxed);
}

std::string describe(const tf_tuple& tuple) {
  return "TCP socket " + local_endpoint(tuple) + " -> " + remote_endpoint(tuple);
}

DestroyRequest make_request(const tf_tuple& tuple, std::uint64_t cookie, std::uint32_t seq) {
  DestroyRequest req{};
  req.header.nlmsg_len = sizeof(req);
  req.header.nlmsg_type = SOCK_DESTROY;
  req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.header.nlmsg_seq = seq;
  req.body.sdiag_family = tuple.family;
  req.body.sdiag_protocol = IPPROTO_TCP;
  req.body.idiag_states = ~0u;
  // The kernel looks the socket up from its own side: src is local.
  req.body.id.idiag_sport = htons(tuple.local_port);
  req.body.id.idiag_dport = htons(tuple.remote_port);
  std::memcpy(req.body.id.idiag_src, tuple.local_addr, sizeof(req.body.id.idiag_src));
  std::memcpy(req.body.id.idiag_dst, tuple.remote_addr, sizeof(req.body.id.idiag_dst));
  // sock_diag_check_cookie compares word 0 with the low half of the cookie.
  req.body.id.idiag_cookie[0] = static_cast<std::uint32_t>(cookie);
  req.body.id.idiag_cookie[1] = static_cast<std::uint32_t>(cookie >> 32);
  return req;
}

Result<void> send_request(int fd, const DestroyRequest& req) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  for (;;) {
    ssize_t n = ::sendto(fd, &req, sizeof(req), 0, reinterpret_cast<const sockaddr*>(&kernel),
                         sizeof(kernel));
    if (n == static_cast<ssize_t>(sizeof(req))) return {};
    if (n < 0 && errno == EINTR) continue;
    return fail_errno("sending SOCK_DESTROY", n < 0 ? errno : EIO);
  }
}

// The errno the kernel put in the NLMSG_ERROR answering `seq` (0 = done).
Result<int> receive_ack(int fd, std::uint32_t seq) {
  auto deadline = Clock::now() + kAckTimeout;
  alignas(nlmsghdr) char buf[8192];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      return fail(Errc::kIo, "SOCK_DESTROY: no answer from the kernel within " +
                                 std::to_string(kAckTimeout.count()) + " ms");
    pollfd pfd{fd, POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) return fail_errno("poll on NETLINK_SOCK_DIAG", errno);
    if (ready <= 0) continue;

    sockaddr_nl from{};
    socklen_t from_len = sizeof(from);
    ssize_t n = ::recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from),
                           &from_len);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return fail_errno("receiving the SOCK_DESTROY answer", errno);
    }
    if (from.nl_pid != 0) continue;  // only the kernel answers requests

    auto len = static_cast<unsigned>(n);
    for (auto* msg = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(msg, len);
         msg = NLMSG_NEXT(msg, len)) {
      if (msg->nlmsg_seq != seq || msg->nlmsg_type != NLMSG_ERROR) continue;
      if (msg->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr)))
        return fail(Errc::kIo, "SOCK_DESTROY: truncated NLMSG_ERROR from the kernel");
      const auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(msg));
      return -err->error;
    }
  }
}

// One request on an open NETLINK_SOCK_DIAG socket, in the netns it was
// opened in.
Result<bool> destroy_on(int fd, const tf_tuple& tuple, std::uint64_t cookie) {
  const auto seq = next_sequence();
  if (auto sent = send_request(fd, make_request(tuple, cookie, seq)); !sent)
    return std::unexpected(sent.error());
  auto err = receive_ack(fd, seq);
  if (!err) return std::unexpected(err.error());

  switch (*err) {
    case 0:
      return true;
    case ENOENT:  // no socket with this tuple, or its cookie differs
    case ESTALE:  // cookie mismatch, on kernels that report it apart
      return false;
    case EPERM:
    case EACCES:
      return fail(Errc::kPermissionDenied,
                  "destroying " + describe(tuple) + " needs CAP_NET_ADMIN: " + std::strerror(*err));
    case EOPNOTSUPP:
      return fail(Errc::kUnsupported, "destroying " + describe(tuple) +
                                          ": the kernel lacks CONFIG_INET_DIAG_DESTROY (" +
                                          std::strerror(*err) + ")");
    default:
      return fail_errno("destroying " + describe(tuple), *err);
  }
}

Result<UniqueFd> open_sock_diag() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd) return fail_errno("opening a NETLINK_SOCK_DIAG socket", errno);
  return fd;
}

}  // namespace

Result<bool> destroy_socket(const tf_tuple& tuple, std::uint64_t cookie) {
  if (tuple.family != AF_INET && tuple.family != AF_INET6)
    return fail(Errc::kInvalidArgument, "destroying a socket: address family " +
                                            std::to_string(tuple.family) +
                                            " is neither AF_INET nor AF_INET6");
  auto fd = open_sock_diag();
  if (!fd) return std::unexpected(fd.error());
  return destroy_on(fd->get(), tuple, cookie);
}

Result<bool> destroy_socket(NetnsResolver& netns, std::uint64_t cookie, const tf_conn& conn) {
  // The agent's own netns first: the fast path, and today's behaviour.
  auto here = destroy_socket(conn.tuple, cookie);
  if (!here || *here) return here;
  std::vector<NetnsIno> tried;
  std::optional<Error> failed;  // the first netns that could not be entered
  auto where = netns.locate(conn.cgroup_id);
  for (int round = 0; round < 2; ++round) {
    for (const auto& member : where.foreign) {
      if (std::find(tried.begin(), tried.end(), member.ino) != tried.end()) continue;
      auto diag = netns.make_in(member, open_sock_diag);
      if (!diag) {
        // Gone (kNotFound): listed afresh below. Anything else: try the others.
        if (diag.error().code != Errc::kNotFound && !failed) failed = diag.error();
        continue;
      }
      tried.push_back(member.ino);
      auto destroyed = destroy_on(diag->get(), conn.tuple, cookie);
      if (!destroyed) return destroyed;
      if (!*destroyed) continue;
      netns.count_foreign_destroyed();
      return true;
    }
    // A process may have moved, or a pid been reused, since the cgroup was
    // listed: list it again (at most once a second per cgroup).
    if (round == 0) where = netns.locate(conn.cgroup_id, NetnsResolver::Freshness::kRefresh);
  }
  if (failed) return std::unexpected(*failed);
  if (where.unknown()) netns.count_unresolved();
  return false;
}

}  // namespace trustfence::datapath
