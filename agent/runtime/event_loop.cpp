#include "trustfence/runtime/event_loop.hpp"

#include <cerrno>

namespace trustfence::runtime {

Result<EventLoop> EventLoop::create() {
  EventLoop loop;
  loop.epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!loop.epoll_) return fail_errno("epoll_create1", errno);
  return loop;
}

Result<void> EventLoop::add(int fd, std::uint32_t events, FdCallback callback) {
  std::uint64_t generation = next_generation_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = (generation << 32) | static_cast<std::uint32_t>(fd);
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return fail_errno("epoll_ctl add", errno);
  fds_[fd] = Watch{generation, std::make_shared<FdCallback>(std::move(callback))};
  return {};
}

Result<void> EventLoop::modify(int fd, std::uint32_t events) {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return fail(Errc::kNotFound, "event loop: fd not watched");
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = (it->second.generation << 32) | static_cast<std::uint32_t>(fd);
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0)
    return fail_errno("epoll_ctl mod", errno);
  return {};
}

void EventLoop::remove(int fd) {
  if (fds_.erase(fd) == 0) return;
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

EventLoop::TimerId EventLoop::after(std::chrono::milliseconds delay, Callback callback) {
  TimerId id = next_timer_++;
  auto deadline = SteadyClock::now() + delay;
  timers_.emplace(std::pair{deadline, id}, std::move(callback));
  timer_deadlines_.emplace(id, deadline);
  return id;
}

void EventLoop::cancel(TimerId id) {
  auto it = timer_deadlines_.find(id);
  if (it == timer_deadlines_.end()) return;
  timers_.erase({it->second, id});
  timer_deadlines_.erase(it);
}

void EventLoop::run_due_timers() {
  auto now = SteadyClock::now();
  // Timers added by a callback with no delay wait for the next round, so a
  // callback re-arming itself cannot starve the descriptors.
  while (!timers_.empty() && timers_.begin()->first.first <= now && !stopping_) {
    auto node = timers_.extract(timers_.begin());
    timer_deadlines_.erase(node.key().second);
    node.mapped()();
  }
}

int EventLoop::next_timeout_ms(std::chrono::milliseconds max_wait) const {
  if (timers_.empty()) return static_cast<int>(max_wait.count());
  auto until = std::chrono::ceil<std::chrono::milliseconds>(timers_.begin()->first.first -
                                                            SteadyClock::now());
  if (until.count() < 0) return 0;
  return static_cast<int>(std::min(until, max_wait).count());
}

Result<void> EventLoop::run(std::chrono::milliseconds max_wait) {
  constexpr int kMaxReady = 64;
  epoll_event ready[kMaxReady];
  stopping_ = false;
  while (!stopping_) {
    int n = epoll_wait(epoll_.get(), ready, kMaxReady, next_timeout_ms(max_wait));
    if (n < 0 && errno != EINTR) return fail_errno("epoll_wait", errno);
    for (int i = 0; i < n && !stopping_; ++i) {
      int fd = static_cast<int>(ready[i].data.u64 & 0xffffffffu);
      std::uint64_t generation = ready[i].data.u64 >> 32;
      auto it = fds_.find(fd);
      // Removed (or removed and re-added) by an earlier callback this round.
      if (it == fds_.end() || it->second.generation != generation) continue;
      auto callback = it->second.callback;  // survives remove() from inside
      (*callback)(ready[i].events);
    }
    run_due_timers();
    for (auto& hook : round_end_) hook();
  }
  return {};
}

}  // namespace trustfence::runtime
