#include "trustfence/api/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "trustfence/common/unique_fd.hpp"
#include "unix_address.hpp"

namespace trustfence::api {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadChunk = 64 * 1024;

std::unexpected<Error> timed_out(const std::string& path, std::chrono::milliseconds timeout) {
  return fail(Errc::kIo, "no answer from the agent on " + path + " within " +
                             std::to_string(timeout.count()) + " ms");
}

// True when fd is ready for events before deadline.
Result<bool> wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1'000'000)));
    if (n > 0) return true;  // errors and hang-ups too: the next call reports them
    if (n < 0 && errno != EINTR) return fail_errno("poll", errno);
  }
}

Result<UniqueFd> connect_to(const std::string& path, std::chrono::milliseconds timeout) {
  auto addr = unix_address(path);
  if (!addr) return std::unexpected(addr.error());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket", errno);
  // A Unix connect waits only on a full backlog; SO_SNDTIMEO bounds that
  // wait, where a non-blocking connect would give up at once.
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
  timeval tv{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
  if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;  // zero would mean forever
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
    return fail_errno("setsockopt SO_SNDTIMEO", errno);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
    int err = errno;
    switch (err) {
      case ENOENT:
      case ECONNREFUSED:
        return fail(Errc::kNotFound,
                    "no agent is running on " + path + " (" + std::strerror(err) + ")");
      case EACCES:
      case EPERM:
        return fail(Errc::kPermissionDenied,
                    "permission denied on " + path +
                        ": run as root, as the agent's user or in its api-socket-group");
      case EAGAIN:
      case EINPROGRESS:
        return timed_out(path, timeout);
      default:
        return fail(Errc::kIo, describe_errno("connecting to " + path, err));
    }
  }
  if (::fcntl(fd.get(), F_SETFL, O_NONBLOCK) != 0) return fail_errno("fcntl O_NONBLOCK", errno);
  return fd;
}

// False when the agent closed its end early: it answered before reading
// everything (a refusal), and the answer is still there to read.
Result<bool> send_all(int fd, std::string_view data, Clock::time_point deadline,
                      const std::string& path, std::chrono::milliseconds timeout) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) return false;
    if (errno != EAGAIN) return fail(Errc::kIo, describe_errno("writing to " + path, errno));
    auto ready = wait_for(fd, POLLOUT, deadline);
    if (!ready) return std::unexpected(ready.error());
    if (!*ready) return timed_out(path, timeout);
  }
  return true;
}

// One line (without its '\n'), or everything up to EOF.
Result<std::string> read_reply(int fd, Clock::time_point deadline, const std::string& path,
                               std::chrono::milliseconds timeout) {
  std::string reply;
  std::string chunk(kReadChunk, '\0');
  for (;;) {
    ssize_t n = ::recv(fd, chunk.data(), chunk.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      auto ready = wait_for(fd, POLLIN, deadline);
      if (!ready) return std::unexpected(ready.error());
      if (!*ready) return timed_out(path, timeout);
      continue;
    }
    if (n < 0 && errno != ECONNRESET)
      return fail(Errc::kIo, describe_errno("reading from " + path, errno));
    if (n <= 0) {
      if (reply.empty()) return fail(Errc::kIo, "the agent on " + path + " closed without a reply");
      return reply;
    }
    std::size_t scanned = reply.size();
    reply.append(chunk.data(), static_cast<std::size_t>(n));
    if (auto newline = reply.find('\n', scanned); newline != std::string::npos) {
      reply.resize(newline);
      return reply;
    }
    if (reply.size() > kMaxReplyBytes)
      return fail(Errc::kIo, "the reply of the agent on " + path + " is over " +
                                 std::to_string(kMaxReplyBytes) + " bytes");
  }
}

Result<json> parse_reply(const std::string& text, const std::string& path) {
  bool too_deep = false;
  json reply = json::parse(
      text,
      [&too_deep](int depth, json::parse_event_t, json&) {
        if (depth > kMaxReplyDepth) too_deep = true;
        return !too_deep;
      },
      false);
  if (too_deep || reply.is_discarded())
    return fail(Errc::kIo, "the agent on " + path + " sent a reply that is not JSON");
  if (reply.is_object()) {
    if (auto error = reply.find("error"); error != reply.end()) {
      std::string message = error->is_string() ? error->get<std::string>() : error->dump();
      // The server's own refusal; anything else is the agent's answer.
      auto code = message.starts_with("permission denied") ? Errc::kPermissionDenied : Errc::kIo;
      return fail(code, message);
    }
  }
  return reply;
}

}  // namespace

Result<json> call(const std::string& socket_path, const json& request,
                  std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  auto fd = connect_to(socket_path, timeout);
  if (!fd) return std::unexpected(fd.error());
  std::string line;
  try {
    line = request.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  } catch (const json::exception& e) {
    return fail(Errc::kInvalidArgument, std::string("request: ") + e.what());
  }
  auto sent = send_all(fd->get(), line, deadline, socket_path, timeout);
  if (!sent) return std::unexpected(sent.error());
  auto text = read_reply(fd->get(), deadline, socket_path, timeout);
  if (!text) return std::unexpected(text.error());
  return parse_reply(*text, socket_path);
}

}  // namespace trustfence::api
