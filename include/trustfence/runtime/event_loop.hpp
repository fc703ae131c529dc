#pragma once

// The agent's one event loop: epoll over file descriptors plus one-shot
// timers, all callbacks on the calling thread. Callbacks may add, modify
// and remove descriptors and timers, including their own.

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"

namespace trustfence::runtime {

using SteadyClock = std::chrono::steady_clock;

class EventLoop {
 public:
  using FdCallback = std::function<void(std::uint32_t events)>;  // EPOLLIN, EPOLLOUT, ...
  using Callback = std::function<void()>;
  using TimerId = std::uint64_t;

  static Result<EventLoop> create();

  EventLoop(EventLoop&&) noexcept = default;
  EventLoop& operator=(EventLoop&&) noexcept = default;

  // The loop watches fd (it does not own it) until remove(fd).
  Result<void> add(int fd, std::uint32_t events, FdCallback callback);
  Result<void> modify(int fd, std::uint32_t events);
  // Safe for the descriptor being dispatched; call before closing fd.
  void remove(int fd);

  // Runs callback once, delay from now. Ids are never reused.
  TimerId after(std::chrono::milliseconds delay, Callback callback);
  void cancel(TimerId id);

  // Runs after every round of ready descriptors and due timers: for work
  // batched across callbacks (verdicts written in one go).
  void on_round_end(Callback callback) { round_end_.push_back(std::move(callback)); }

  // Dispatches until stop(); a round waits at most max_wait.
  Result<void> run(std::chrono::milliseconds max_wait);
  void stop() { stopping_ = true; }

  std::size_t watched() const { return fds_.size(); }
  std::size_t timers() const { return timers_.size(); }

 private:
  EventLoop() = default;
  void run_due_timers();
  int next_timeout_ms(std::chrono::milliseconds max_wait) const;

  struct Watch {
    std::uint64_t generation;  // tells a removed-then-reused fd from the original
    std::shared_ptr<FdCallback> callback;
  };
  UniqueFd epoll_;
  std::unordered_map<int, Watch> fds_;
  std::uint64_t next_generation_ = 1;
  std::map<std::pair<SteadyClock::time_point, TimerId>, Callback> timers_;
  std::unordered_map<TimerId, SteadyClock::time_point> timer_deadlines_;
  TimerId next_timer_ = 1;
  std::vector<Callback> round_end_;
  bool stopping_ = false;
};

}  // namespace trustfence::runtime
