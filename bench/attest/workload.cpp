#include "workload.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "support.hpp"
#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"

namespace trustfence::bench::attest {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double micros_since(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

Result<std::uint64_t> parse_number(const std::string& text, const char* what) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    return fail(Errc::kInvalidArgument, std::string(what) + " '" + text + "' is not a number");
  return value;
}

// "10.231.0.2:9000"
Result<sockaddr_in> parse_endpoint(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos)
    return fail(Errc::kInvalidArgument, "endpoint '" + text + "' is not IPV4:PORT");
  auto port = parse_number(text.substr(colon + 1), "port");
  if (!port || *port == 0 || *port > 65535)
    return fail(Errc::kInvalidArgument, "endpoint '" + text + "' has no valid port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(*port));
  if (::inet_pton(AF_INET, text.substr(0, colon).c_str(), &addr.sin_addr) != 1)
    return fail(Errc::kInvalidArgument, "endpoint '" + text + "' has no IPv4 address");
  return addr;
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 2;
}

// --- server ----------------------------------------------------------------

Result<UniqueFd> listen_any(std::uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket", errno);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return fail_errno("bind 0.0.0.0:" + std::to_string(port), errno);
  if (::listen(fd.get(), 4096) != 0) return fail_errno("listen", errno);
  return fd;
}

// One epoll loop: the listener and every accepted connection, all
// non-blocking, so a slow connection never delays another.
class Server {
 public:
  static Result<Server> open(std::uint16_t port) {
    auto listener = listen_any(port);
    if (!listener) return std::unexpected(listener.error());
    UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll) return fail_errno("epoll_create1", errno);
    Server server(std::move(*listener), std::move(epoll));
    if (auto ok = server.watch(server.listener_.get()); !ok) return std::unexpected(ok.error());
    return server;
  }

  Result<void> run() {
    epoll_event events[256];
    for (;;) {
      int n = ::epoll_wait(epoll_.get(), events, 256, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail_errno("epoll_wait", errno);
      }
      for (int i = 0; i < n; ++i) {
        if (events[i].data.fd == listener_.get())
          accept_all();
        else
          answer(events[i].data.fd);
      }
    }
  }

 private:
  Server(UniqueFd listener, UniqueFd epoll)
      : listener_(std::move(listener)), epoll_(std::move(epoll)) {}

  Result<void> watch(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
      return fail_errno("epoll_ctl", errno);
    return {};
  }

  void accept_all() {
    for (;;) {
      UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) return;  // EAGAIN, or an aborted connection: next round
      int one = 1;
      ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      int raw = fd.get();
      if (!watch(raw)) continue;
      conns_.emplace(raw, std::move(fd));
      answer(raw);  // the request may be there already
    }
  }

  // Reads the 1-byte request, writes the 1-byte reply, closes.
  void answer(int fd) {
    char byte = 0;
    ssize_t got = ::recv(fd, &byte, 1, 0);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (got == 1) (void)::send(fd, &byte, 1, MSG_NOSIGNAL);
    conns_.erase(fd);  // close() also drops it from the epoll set
  }

  UniqueFd listener_;
  UniqueFd epoll_;
  std::unordered_map<int, UniqueFd> conns_;
};

// --- HTTP responder --------------------------------------------------------

constexpr std::string_view kHttpOk =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
constexpr std::string_view kHttpBad =
    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
// A request's headers must fit; a longer one is answered 400 and closed.
constexpr std::size_t kHttpRequestMax = 8192;

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// One connection, blocking: reads requests, answers each complete one (all
// the requests a read brought, pipelined or not, in one send), until the
// peer closes or sends something that is not a GET.
void http_connection(UniqueFd fd) {
  char buf[kHttpRequestMax];
  std::size_t used = 0;
  std::string out;
  for (;;) {
    ssize_t got = ::recv(fd.get(), buf + used, sizeof(buf) - used, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return;
    used += static_cast<std::size_t>(got);
    std::string_view pending(buf, used);
    bool close_after = false;
    out.clear();
    for (;;) {
      auto end = pending.find("\r\n\r\n");
      if (end == std::string_view::npos) break;
      if (pending.substr(0, 4) != "GET ") {
        out += kHttpBad;
        close_after = true;
        break;
      }
      out += kHttpOk;
      pending.remove_prefix(end + 4);
    }
    if (!close_after && pending.size() == sizeof(buf)) {
      out += kHttpBad;  // headers too long
      close_after = true;
    }
    if (!out.empty() && !send_all(fd.get(), out)) return;
    if (close_after) return;
    std::memmove(buf, pending.data(), pending.size());
    used = pending.size();
  }
}

Result<void> http_serve(std::uint16_t port) {
  auto listener = listen_any(port);
  if (!listener) return std::unexpected(listener.error());
  // The listener is non-blocking (listen_any): wait for it with poll.
  for (;;) {
    pollfd p{.fd = listener->get(), .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, -1) < 0) {
      if (errno == EINTR) continue;
      return fail_errno("poll", errno);
    }
    for (;;) {
      UniqueFd fd(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!fd) break;  // EAGAIN, or an aborted connection
      int one = 1;
      ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      try {
        std::thread(http_connection, std::move(fd)).detach();
      } catch (const std::system_error&) {
        // No thread: the connection is closed (fd was moved into the
        // failed thread's arguments and destroyed with them).
      }
    }
  }
}

// --- client ----------------------------------------------------------------

// One transaction: connect, 1-byte request, 1-byte reply (the time to first
// byte, in microseconds), then the server's close.
Result<double> transact(const sockaddr_in& target) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket", errno);
  const timeval timeout{kIoTimeoutSeconds, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const auto start = Clock::now();
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&target), sizeof(target)) != 0)
    return fail_errno("connect", errno);
  char byte = 'q';
  if (::send(fd.get(), &byte, 1, MSG_NOSIGNAL) != 1)
    return fail_errno("sending the request", errno);
  ssize_t got = ::recv(fd.get(), &byte, 1, 0);
  if (got != 1)
    return got == 0 ? fail(Errc::kIo, "the server closed without a reply")
                    : fail_errno("receiving the reply", errno);
  const double ttfb = micros_since(start);
  got = ::recv(fd.get(), &byte, 1, 0);
  if (got != 0)
    return got < 0 ? fail_errno("waiting for the server's close", errno)
                   : fail(Errc::kIo, "the server sent more than one byte");
  return ttfb;
}

// Counts failed transactions and keeps the first message.
struct Failures {
  std::uint64_t count = 0;
  std::string first;
  void add(const Error& error) {
    if (count++ == 0) first = error.message;
  }
};

int client_ttfb(const sockaddr_in& target, std::uint64_t samples, std::uint64_t warmup) {
  Failures failures;
  for (std::uint64_t i = 0; i < warmup; ++i)
    if (auto t = transact(target); !t) failures.add(t.error());
  std::vector<double> samples_us;
  samples_us.reserve(samples);
  for (std::uint64_t i = 0; i < samples; ++i) {
    auto t = transact(target);
    if (t)
      samples_us.push_back(*t);
    else
      failures.add(t.error());
  }
  json out{{"samples_us", samples_us}, {"errors", failures.count}, {"first_error", failures.first}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

int client_rate(const sockaddr_in& target, std::uint64_t threads, double seconds) {
  std::mutex mutex;
  std::vector<double> latencies_us;
  Failures failures;
  std::atomic<std::uint64_t> connections{0};
  const auto start = Clock::now();
  const auto deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> workers;
  for (std::uint64_t t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      std::vector<double> mine;
      Failures my_failures;
      while (Clock::now() < deadline) {
        const auto begin = Clock::now();
        if (auto ok = transact(target); ok) {
          mine.push_back(micros_since(begin));
        } else {
          my_failures.add(ok.error());
        }
      }
      connections += mine.size();
      std::lock_guard lock(mutex);
      latencies_us.insert(latencies_us.end(), mine.begin(), mine.end());
      if (my_failures.count != 0) {
        if (failures.count == 0) failures.first = my_failures.first;
        failures.count += my_failures.count;
      }
    });
  }
  for (auto& w : workers) w.join();
  const double elapsed = micros_since(start) / 1e6;
  std::sort(latencies_us.begin(), latencies_us.end());
  auto stalls = std::count_if(latencies_us.begin(), latencies_us.end(),
                              [](double us) { return us >= kStallUs; });
  json out{{"connections", connections.load()},
           {"seconds", elapsed},
           {"errors", failures.count},
           {"first_error", failures.first},
           {"p50_us", percentile(latencies_us, 50)},
           {"p99_us", percentile(latencies_us, 99)},
           {"max_us", latencies_us.empty() ? 0.0 : latencies_us.back()},
           {"stalls", stalls}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace

int serve_main(const std::vector<std::string>& args) {
  if (args.size() != 1) return usage_error("usage: serve PORT");
  auto port = parse_number(args[0], "PORT");
  if (!port || *port == 0 || *port > 65535) return usage_error("serve: PORT must be 1-65535");
  ::signal(SIGPIPE, SIG_IGN);
  auto server = Server::open(static_cast<std::uint16_t>(*port));
  if (!server) return report_failure(server.error());
  auto ran = server->run();
  return report_failure(ran.error());
}

int http_main(const std::vector<std::string>& args) {
  if (args.size() != 1) return usage_error("usage: http PORT");
  auto port = parse_number(args[0], "PORT");
  if (!port || *port == 0 || *port > 65535) return usage_error("http: PORT must be 1-65535");
  ::signal(SIGPIPE, SIG_IGN);
  auto ran = http_serve(static_cast<std::uint16_t>(*port));
  return report_failure(ran.error());
}

int client_main(const std::vector<std::string>& args) {
  if (args.size() != 4 || (args[0] != "ttfb" && args[0] != "rate"))
    return usage_error(
        "usage: client ttfb IP:PORT SAMPLES WARMUP | client rate IP:PORT THREADS SECONDS");
  ::signal(SIGPIPE, SIG_IGN);
  auto target = parse_endpoint(args[1]);
  if (!target) return report_failure(target.error());
  auto first = parse_number(args[2], args[0] == "ttfb" ? "SAMPLES" : "THREADS");
  if (!first) return report_failure(first.error());
  if (args[0] == "ttfb") {
    auto warmup = parse_number(args[3], "WARMUP");
    if (!warmup) return report_failure(warmup.error());
    return client_ttfb(*target, *first, *warmup);
  }
  double seconds = 0;
  auto [end, ec] = std::from_chars(args[3].data(), args[3].data() + args[3].size(), seconds);
  if (ec != std::errc() || end != args[3].data() + args[3].size() || seconds <= 0 || *first == 0)
    return usage_error("client rate: THREADS and SECONDS must be positive");
  return client_rate(*target, *first, seconds);
}

}  // namespace trustfence::bench::attest
