#pragma once

#include <sys/socket.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"
#include "trustfence/runtime/event_loop.hpp"

namespace trustfence::runtime {

// Per wake-up, so a flood of connects cannot starve the rest of the loop.
inline constexpr int kAcceptBatch = 64;
// Out of descriptors (or any other accept error): stop accepting for a
// while instead of spinning on a level-triggered listening socket that
// cannot be drained.
inline constexpr std::chrono::milliseconds kAcceptPause{100};

// Accepts the connections of a listening socket on the event loop and hands
// each, non-blocking and close-on-exec, to `admit` with the caller's address.
// Owns the listening socket. Every server of the agent (attestation channels,
// the query API, metrics) accepts through one.
class Acceptor {
 public:
  using Admit = std::function<void(UniqueFd connection, const sockaddr_storage& from)>;

  // `name` says which listener in log lines ("api-socket /run/x.sock").
  // loop must outlive the acceptor.
  static Result<std::unique_ptr<Acceptor>> start(EventLoop& loop, UniqueFd listening,
                                                 std::string name, Admit admit);

  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;
  ~Acceptor();  // stops watching and closes the listening socket

  int fd() const { return listening_.get(); }
  bool paused() const { return pause_.has_value(); }

 private:
  Acceptor(EventLoop& loop, UniqueFd listening, std::string name, Admit admit);
  void on_ready();

  EventLoop& loop_;
  UniqueFd listening_;
  std::string name_;
  Admit admit_;
  std::optional<EventLoop::TimerId> pause_;
};

}  // namespace trustfence::runtime
