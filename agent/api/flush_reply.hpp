#pragma once

// Writing a reply to a non-blocking client socket of the event loop, for the
// query API and the metrics server.

#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <string_view>

#include "trustfence/runtime/event_loop.hpp"

namespace trustfence::api {

enum class Flushed {
  kDone,     // everything sent
  kBlocked,  // the socket is full: the loop now waits for EPOLLOUT
  kGone,     // the client left (or the loop could not watch it): close it
};

// Sends out[sent..] as far as the socket takes it, advancing sent. The first
// time the socket is full it switches fd's watch to EPOLLOUT and sets
// waiting_writable.
inline Flushed flush_reply(runtime::EventLoop& loop, int fd, std::string_view out,
                           std::size_t& sent, bool& waiting_writable) {
  while (sent < out.size()) {
    ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (waiting_writable) return Flushed::kBlocked;
      waiting_writable = true;
      return loop.modify(fd, EPOLLOUT) ? Flushed::kBlocked : Flushed::kGone;
    }
    if (n < 0) return Flushed::kGone;
    sent += static_cast<std::size_t>(n);
  }
  return Flushed::kDone;
}

}  // namespace trustfence::api
