// The worker processes (worker.hpp): forking them into a node, the line
// protocol, and the two connection holders.

#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <unordered_set>

#include "support.hpp"
#include "support/e2e/netns.hpp"
#include "worker.hpp"

namespace trustfence::bench::scale {

// --- Worker ------------------------------------------------------------------

Result<Worker> Worker::start(std::string name, const std::string& netns, const std::string& cgroup,
                             Body body) {
  UniqueFd ns;
  if (!netns.empty()) {
    auto fd = testing::e2e::open_netns(netns);
    if (!fd) return std::unexpected(fd.error());
    ns = std::move(*fd);
  }
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    return fail_errno("socketpair", errno);
  UniqueFd parent_end(pair[0]), child_end(pair[1]);
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno("fork", errno);
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    parent_end = UniqueFd();
    auto die = [&](const std::string& why) {
      answer(child_end.get(), "err " + name + ": " + why);
      ::_exit(1);
    };
    if (ns && ::setns(ns.get(), CLONE_NEWNET) != 0) die("setns: " + std::string(strerror(errno)));
    if (!cgroup.empty()) {
      std::ofstream procs(cgroup + "/cgroup.procs");
      procs << "0" << std::flush;
      if (!procs) die("cannot join cgroup " + cgroup);
    }
    ::_exit(body(child_end.get()));
  }
  return Worker(std::move(name), pid, std::move(parent_end));
}

Worker::Worker(Worker&& other) noexcept
    : name_(std::move(other.name_)),
      pid_(std::exchange(other.pid_, -1)),
      control_(std::move(other.control_)),
      buffer_(std::move(other.buffer_)) {}

Worker::~Worker() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

Result<std::string> Worker::ask(const std::string& command, std::chrono::milliseconds timeout) {
  if (auto ok = send(command); !ok) return std::unexpected(ok.error());
  return reply(command, timeout);
}

Result<void> Worker::send(const std::string& command) {
  std::string line = command + "\n";
  if (::write(control_.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    return fail_errno(name_ + ": sending '" + command + "'", errno);
  return {};
}

Result<std::string> Worker::reply(const std::string& command, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
      std::string reply = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (reply == "ok") return std::string();
      if (reply.starts_with("ok ")) return reply.substr(3);
      return fail(Errc::kIo, name_ + " (" + command + "): " + reply);
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || stop_requested())
      return fail(Errc::kIo, name_ + ": no answer to '" + command + "' within " +
                                 std::to_string(timeout.count()) + " ms");
    pollfd p{control_.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::min<long>(left.count(), 200))) <= 0) continue;
    char chunk[512];
    ssize_t n = ::read(control_.get(), chunk, sizeof(chunk));
    if (n <= 0) return fail(Errc::kIo, name_ + " exited (answering '" + command + "')");
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

std::string read_command(int control) {
  std::string line;
  char c = 0;
  while (::read(control, &c, 1) == 1) {
    if (c == '\n') return line;
    line += c;
  }
  return {};
}

void answer(int control, const std::string& line) {
  std::string out = line + "\n";
  (void)!::write(control, out.data(), out.size());
}

double field(const std::string& answer, const std::string& key, double fallback) {
  auto at = answer.find(key + "=");
  if (at == std::string::npos || (at > 0 && answer[at - 1] != ' ')) return fallback;
  return std::strtod(answer.c_str() + at + key.size() + 1, nullptr);
}

// --- pairs -------------------------------------------------------------------

int pairs_main(int control) {
  auto listener = listen_loopback(4096);
  if (!listener) {
    answer(control, "err " + listener.error().message);
    return 1;
  }
  std::vector<UniqueFd> fds;
  fds.reserve(2 * kPairsPerWorker);
  for (;;) {
    std::string command = read_command(control);
    if (command.empty() || command == "quit") return 0;
    if (command == "close") {
      fds.clear();
      answer(control, "ok");
      continue;
    }
    if (command.starts_with("drop ")) {
      std::uint64_t n = std::strtoull(command.c_str() + 5, nullptr, 10);
      fds.resize(fds.size() - std::min<std::size_t>(fds.size(), 2 * n));
      answer(control, "ok total=" + std::to_string(fds.size() / 2));
      continue;
    }
    if (!command.starts_with("open ")) {
      answer(control, "err unknown command " + command);
      continue;
    }
    std::uint64_t n = std::strtoull(command.c_str() + 5, nullptr, 10);
    if (fds.size() / 2 + n > kPairsPerWorker) {
      answer(control, "err more than " + std::to_string(kPairsPerWorker) + " connections");
      continue;
    }
    std::string error;
    for (std::uint64_t i = 0; i < n && error.empty(); ++i) {
      auto client = tcp_socket();
      if (!client) {
        error = client.error().message;
        break;
      }
      // A reset on close: no TIME_WAIT left behind.
      if (auto ok = set_abortive_close(client->get()); !ok) error = ok.error().message;
      if (auto ok = connect_loopback(client->get(), listener->port); !ok) {
        error = ok.error().message;
        break;
      }
      auto server = accept_within(listener->fd.get(), 5000);
      if (!server) {
        error = server.error().message;
        break;
      }
      fds.push_back(std::move(*client));
      fds.push_back(std::move(*server));
    }
    answer(control, error.empty() ? "ok total=" + std::to_string(fds.size() / 2) : "err " + error);
  }
}

// --- server ------------------------------------------------------------------

int server_main(int control, std::uint16_t port) {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (!listener || ::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener.get(), 4096) != 0) {
    answer(control, "err listen on port " + std::to_string(port) + ": " + strerror(errno));
    return 1;
  }
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listener.get();
  ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, listener.get(), &ev);
  ev.data.fd = control;
  ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, control, &ev);
  answer(control, "ok");
  std::unordered_set<int> open;
  std::uint64_t accepted = 0;
  epoll_event ready[256];
  for (;;) {
    int n = ::epoll_wait(epoll.get(), ready, 256, 1000);
    for (int i = 0; i < n; ++i) {
      int fd = ready[i].data.fd;
      if (fd == listener.get()) {
        for (;;) {
          int conn = ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (conn < 0) break;
          ++accepted;
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLRDHUP;
          cev.data.fd = conn;
          ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, conn, &cev);
          open.insert(conn);
        }
      } else if (fd == control) {
        std::string command = read_command(control);
        if (command.empty() || command == "quit") return 0;
        answer(control,
               "ok open=" + std::to_string(open.size()) + " accepted=" + std::to_string(accepted));
      } else {
        char buf[256];
        ssize_t got = ::read(fd, buf, sizeof(buf));
        if (got > 0) continue;
        if (got < 0 && errno == EAGAIN) continue;
        ::close(fd);  // also leaves the epoll set
        open.erase(fd);
      }
    }
  }
}

}  // namespace trustfence::bench::scale
