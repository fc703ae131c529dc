#include "trustfence/runtime/acceptor.hpp"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <cerrno>
#include <cstring>

namespace trustfence::runtime {

Result<std::unique_ptr<Acceptor>> Acceptor::start(EventLoop& loop, UniqueFd listening,
                                                  std::string name, Admit admit) {
  std::unique_ptr<Acceptor> acceptor(
      new Acceptor(loop, std::move(listening), std::move(name), std::move(admit)));
  Acceptor* self = acceptor.get();
  if (auto ok = loop.add(self->fd(), EPOLLIN, [self](std::uint32_t) { self->on_ready(); }); !ok)
    return fail(ok.error().code, self->name_ + ": " + ok.error().message);
  return acceptor;
}

Acceptor::Acceptor(EventLoop& loop, UniqueFd listening, std::string name, Admit admit)
    : loop_(loop),
      listening_(std::move(listening)),
      name_(std::move(name)),
      admit_(std::move(admit)) {}

Acceptor::~Acceptor() {
  if (pause_) loop_.cancel(*pause_);
  loop_.remove(listening_.get());
}

void Acceptor::on_ready() {
  for (int i = 0; i < kAcceptBatch; ++i) {
    sockaddr_storage from{};
    socklen_t length = sizeof(from);
    int fd = ::accept4(listening_.get(), reinterpret_cast<sockaddr*>(&from), &length,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      admit_(UniqueFd(fd), from);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    spdlog::warn("accept on {}: {}; pausing for {} ms", name_, std::strerror(errno),
                 kAcceptPause.count());
    (void)loop_.modify(listening_.get(), 0);
    pause_ = loop_.after(kAcceptPause, [this] {
      pause_.reset();
      (void)loop_.modify(listening_.get(), EPOLLIN);
    });
    return;
  }
}

}  // namespace trustfence::runtime
