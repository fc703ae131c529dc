// The Prometheus endpoint over real loopback TCP, served by a real event loop
// on its own thread: routes, HTTP framing, limits, timeouts, curl.

#include "trustfence/api/metrics_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/process.hpp"
#include "trustfence/api/prometheus.hpp"
#include "trustfence/common/net.hpp"
#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"
#include "trustfence/runtime/event_loop.hpp"

namespace trustfence::testing {
namespace {

using namespace std::string_literals;
using std::chrono::milliseconds;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kExpositionType = "text/plain; version=0.0.4; charset=utf-8";
const std::string kMetricsText = "# HELP tf_up Agent up.\n# TYPE tf_up gauge\ntf_up 1\n";

net::SocketAddress loopback(std::uint16_t port = 0) {
  return net::SocketAddress(*net::IpAddress::parse("127.0.0.1"), port);
}

// A MetricsServer on 127.0.0.1, a free port, served by an EventLoop on its
// own thread (the idea of serving_loop.hpp). The loop is touched only from
// its thread: stop() wakes it through a pipe and joins, after which the test
// thread may read (or destroy) the server. port() is fixed at start.
class MetricsLoop {
 public:
  static Result<std::unique_ptr<MetricsLoop>> start(api::MetricsServer::Handlers handlers,
                                                    api::MetricsServerLimits limits = {}) {
    auto loop = runtime::EventLoop::create();
    if (!loop) return std::unexpected(loop.error());
    std::unique_ptr<MetricsLoop> serving(new MetricsLoop(std::move(*loop)));
    auto server =
        api::MetricsServer::start(serving->loop_, loopback(), std::move(handlers), limits);
    if (!server) return std::unexpected(server.error());
    serving->server_ = std::move(*server);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("pipe2", errno);
    serving->wake_read_.reset(fds[0]);
    serving->wake_write_.reset(fds[1]);
    MetricsLoop* self = serving.get();
    if (auto ok = self->loop_.add(self->wake_read_.get(), EPOLLIN,
                                  [self](std::uint32_t) { self->loop_.stop(); });
        !ok)
      return std::unexpected(ok.error());
    serving->port_ = serving->server_->port();
    serving->thread_ =
        std::thread([self] { self->result_ = self->loop_.run(std::chrono::seconds(1)); });
    return serving;
  }

  ~MetricsLoop() {
    stop();
    server_.reset();  // before the loop it is registered with
  }

  void stop() {
    if (!thread_.joinable()) return;
    char byte = 0;
    (void)::write(wake_write_.get(), &byte, 1);
    thread_.join();
  }

  std::uint16_t port() const { return port_; }
  // Only after stop().
  api::MetricsServer& server() { return *server_; }
  runtime::EventLoop& loop() { return loop_; }
  void destroy_server() { server_.reset(); }
  const Result<void>& result() const { return result_; }

 private:
  explicit MetricsLoop(runtime::EventLoop loop) : loop_(std::move(loop)) {}

  runtime::EventLoop loop_;
  std::unique_ptr<api::MetricsServer> server_;
  std::uint16_t port_ = 0;
  UniqueFd wake_read_;
  UniqueFd wake_write_;
  std::thread thread_;
  Result<void> result_;
};

UniqueFd connect_tcp(std::uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return {};
  return fd;
}

bool send_text(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

struct Received {
  std::string text;
  bool closed = false;  // EOF or reset seen before the deadline
};

// Everything until the server closes, or the deadline.
Received read_until_closed(int fd, milliseconds timeout = milliseconds(5000)) {
  Received out;
  auto deadline = Clock::now() + timeout;
  char buf[65536];
  for (;;) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return out;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) {
      out.closed = true;
      return out;
    }
    out.text.append(buf, static_cast<std::size_t>(n));
  }
}

struct HttpResponse {
  int status = 0;                              // 0: no parsable status line
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  bool closed = false;
  std::string raw;
};

HttpResponse parse_response(Received got) {
  HttpResponse r;
  r.closed = got.closed;
  r.raw = got.text;
  auto end = got.text.find("\r\n\r\n");
  if (!got.text.starts_with("HTTP/1.1 ") || end == std::string::npos) return r;
  r.status = std::stoi(got.text.substr(9, 3));
  std::size_t at = got.text.find("\r\n") + 2;
  while (at < end) {
    auto eol = got.text.find("\r\n", at);
    std::string line = got.text.substr(at, eol - at);
    auto colon = line.find(':');
    std::string name = line.substr(0, colon);
    for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    r.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
    at = eol + 2;
  }
  r.body = got.text.substr(end + 4);
  return r;
}

// One raw exchange: bytes out, the whole answer back.
HttpResponse http_exchange(std::uint16_t port, std::string_view bytes,
                           milliseconds timeout = milliseconds(5000)) {
  UniqueFd fd = connect_tcp(port);
  if (!fd) return {};
  send_text(fd.get(), bytes);
  return parse_response(read_until_closed(fd.get(), timeout));
}

HttpResponse get(std::uint16_t port, std::string_view path) {
  return http_exchange(port, "GET " + std::string(path) +
                                 " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 "User-Agent: test\r\nAccept: */*\r\n\r\n");
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void serve(api::MetricsServer::Handlers handlers, api::MetricsServerLimits limits = {}) {
    auto serving = MetricsLoop::start(std::move(handlers), limits);
    ASSERT_TRUE(serving) << serving.error().message;
    serving_ = std::move(*serving);
  }
  void serve(api::MetricsServerLimits limits = {}) {
    serve(api::MetricsServer::Handlers{
              [] { return kMetricsText; },
              [this] {
                return std::pair<bool, std::string>{ready_.load(), ready_ ? "" : "no SVID yet"};
              }},
          limits);
  }
  std::uint16_t port() const { return serving_->port(); }
  // Stops the loop so the counters may be read from this thread.
  const api::MetricsServerStats& stopped_stats() {
    serving_->stop();
    return serving_->server().stats();
  }

  std::atomic<bool> ready_{true};
  std::unique_ptr<MetricsLoop> serving_;
};

TEST_F(MetricsServerTest, ServesMetricsWithTheExpositionContentType) {
  serve();
  auto r = get(port(), "/metrics");
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.headers["content-type"], kExpositionType);
  EXPECT_EQ(r.headers["content-length"], std::to_string(kMetricsText.size()));
  EXPECT_EQ(r.headers["connection"], "close");
  EXPECT_EQ(r.body, kMetricsText);
  EXPECT_TRUE(r.closed);
  const auto& stats = stopped_stats();
  EXPECT_EQ(stats.requests, 1u);
  EXPECT_EQ(stats.scrapes, 1u);
}

TEST_F(MetricsServerTest, HealthzAnswersOk) {
  serve();
  auto r = get(port(), "/healthz");
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body, "ok\n");
  EXPECT_EQ(r.headers["content-type"], "text/plain; charset=utf-8");
}

TEST_F(MetricsServerTest, ReadyzFollowsTheHandler) {
  serve();
  auto ready = get(port(), "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.raw;
  EXPECT_EQ(ready.body, "ok\n");
  ready_ = false;
  auto not_ready = get(port(), "/readyz");
  EXPECT_EQ(not_ready.status, 503) << not_ready.raw;
  EXPECT_EQ(not_ready.body, "no SVID yet\n");
  EXPECT_EQ(stopped_stats().not_ready, 1u);
}

TEST_F(MetricsServerTest, ReadyWithoutAReadyHandler) {
  serve(api::MetricsServer::Handlers{[] { return kMetricsText; }, {}});
  EXPECT_EQ(get(port(), "/readyz").status, 200);
}

TEST_F(MetricsServerTest, HeadIsGetWithoutTheBody) {
  serve();
  auto r = http_exchange(port(), "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.headers["content-length"], std::to_string(kMetricsText.size()));
  EXPECT_EQ(r.body, "");
  EXPECT_TRUE(r.closed);
}

TEST_F(MetricsServerTest, RoutesAndMethods) {
  struct Case {
    const char* what;
    std::string request;
    int status;
  };
  const Case cases[] = {
      {"unknown path", "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404},
      {"prefix is not the path", "GET /metricsz HTTP/1.1\r\nHost: x\r\n\r\n", 404},
      {"root", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404},
      {"query ignored", "GET /metrics?name[]=tf_up HTTP/1.1\r\nHost: x\r\n\r\n", 200},
      {"absolute form", "GET http://127.0.0.1:9464/healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200},
      {"HTTP/1.0 needs no Host", "GET /healthz HTTP/1.0\r\n\r\n", 200},
      {"bare LF line ends", "GET /healthz HTTP/1.1\nHost: x\n\n", 200},
      {"leading blank line", "\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200},
      {"header value with tab", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A:\tb c\r\n\r\n", 200},
      {"POST", "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", 405},
      {"PUT unknown path", "PUT /nope HTTP/1.1\r\nHost: x\r\n\r\n", 405},
      {"lower-case get", "get /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405},
  };
  serve();
  for (const auto& c : cases) {
    auto r = http_exchange(port(), c.request);
    EXPECT_EQ(r.status, c.status) << c.what << "\n" << r.raw;
    EXPECT_TRUE(r.closed) << c.what;
    if (c.status == 405) {
      EXPECT_EQ(r.headers["allow"], "GET, HEAD") << c.what;
    }
  }
}

TEST_F(MetricsServerTest, MalformedRequestsAre400) {
  struct Case {
    const char* what;
    std::string request;
    int status;
  };
  const Case cases[] = {
      {"not HTTP", "hello there\r\n\r\n", 400},
      {"no version", "GET /metrics\r\nHost: x\r\n\r\n", 400},
      {"two spaces", "GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"trailing space", "GET /metrics HTTP/1.1 \r\nHost: x\r\n\r\n", 400},
      {"bad version", "GET /metrics HTTP/one\r\nHost: x\r\n\r\n", 400},
      {"relative target", "GET metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"control in target", std::string("GET /me\x01trics HTTP/1.1\r\nHost: x\r\n\r\n"), 400},
      {"HTTP/1.1 without Host", "GET /metrics HTTP/1.1\r\n\r\n", 400},
      {"two Hosts", "GET /metrics HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n", 400},
      {"header without colon", "GET /metrics HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400},
      {"space before colon", "GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400},
      {"obs-fold", "GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", 400},
      {"bare CR", "GET /metrics HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400},
      {"NUL in a value", "GET /metrics HTTP/1.1\r\nHost: x\0y\r\n\r\n"s, 400},
      {"method not a token", "G(T /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"incomplete head, then EOF", "GET /metrics HTTP/1.1\r\nHost: x\r\n", 400},
      {"partial request line, then EOF", "GET /metr", 400},
      {"HTTP/2", "GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", 505},
  };
  serve();
  for (const auto& c : cases) {
    UniqueFd fd = connect_tcp(port());
    ASSERT_TRUE(fd);
    send_text(fd.get(), c.request);
    ::shutdown(fd.get(), SHUT_WR);  // the EOF that ends the incomplete head
    auto r = parse_response(read_until_closed(fd.get()));
    EXPECT_EQ(r.status, c.status) << c.what << "\n" << r.raw;
    EXPECT_TRUE(r.closed) << c.what;
  }
  const auto& stats = stopped_stats();
  EXPECT_EQ(stats.bad_requests, std::size(cases));
  EXPECT_EQ(stats.scrapes, 0u);
}

TEST_F(MetricsServerTest, ConnectAndLeaveIsNotARequest) {
  serve();
  {
    UniqueFd fd = connect_tcp(port());
    ASSERT_TRUE(fd);
    ::shutdown(fd.get(), SHUT_WR);
    auto got = read_until_closed(fd.get());
    EXPECT_TRUE(got.closed);
    EXPECT_EQ(got.text, "");
  }
  EXPECT_EQ(get(port(), "/healthz").status, 200);
  EXPECT_EQ(stopped_stats().requests, 1u);
}

TEST_F(MetricsServerTest, OneResponsePerConnection) {
  serve();
  auto r = http_exchange(port(),
                         "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                         "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body, "ok\n");  // the pipelined request is dropped, not answered
  EXPECT_TRUE(r.closed);
}

TEST_F(MetricsServerTest, HandlerExceptionIs500AndServingGoesOn) {
  std::atomic<int> calls{0};
  serve(api::MetricsServer::Handlers{[&calls]() -> std::string {
                                       if (calls++ == 0)
                                         throw std::runtime_error("map read failed");
                                       return kMetricsText;
                                     },
                                     []() -> std::pair<bool, std::string> { throw 42; }});
  auto failed = get(port(), "/metrics");
  EXPECT_EQ(failed.status, 500) << failed.raw;
  EXPECT_EQ(failed.body, "internal error\n");  // the message stays in the log
  EXPECT_EQ(get(port(), "/readyz").status, 500);
  auto ok = get(port(), "/metrics");
  EXPECT_EQ(ok.status, 200) << ok.raw;
  EXPECT_EQ(ok.body, kMetricsText);
  EXPECT_EQ(stopped_stats().handler_errors, 2u);
}

// A head of exactly `size` bytes, blank line included.
std::string head_of_size(std::size_t size) {
  std::string start = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ";
  std::string end = "\r\n\r\n";
  return start + std::string(size - start.size() - end.size(), 'p') + end;
}

TEST_F(MetricsServerTest, HeadIsCappedAt8KiB) {
  EXPECT_EQ(api::kMaxHttpHeadBytes, 8u * 1024);
  serve();
  auto at_cap = http_exchange(port(), head_of_size(api::kMaxHttpHeadBytes));
  EXPECT_EQ(at_cap.status, 200) << at_cap.raw.substr(0, 200);
  auto over = http_exchange(port(), head_of_size(api::kMaxHttpHeadBytes + 1));
  EXPECT_EQ(over.status, 431) << over.raw.substr(0, 200);
  EXPECT_TRUE(over.closed);
  // A head that never ends, far over the cap: answered, not buffered.
  UniqueFd fd = connect_tcp(port());
  ASSERT_TRUE(fd);
  std::string flood = "GET /metrics HTTP/1.1\r\nX: " + std::string(64 * 1024, 'a');
  (void)send_text(fd.get(), flood);  // may fail once the server has closed
  auto r = parse_response(read_until_closed(fd.get()));
  EXPECT_TRUE(r.closed);
  EXPECT_EQ(stopped_stats().oversized, 2u);
}

TEST_F(MetricsServerTest, StalledClientClosedAfterTheHeadTimeout) {
  EXPECT_EQ(api::kHttpHeadTimeout, milliseconds(2000));
  serve();  // the default 2 s
  UniqueFd stalled = connect_tcp(port());
  ASSERT_TRUE(stalled);
  UniqueFd silent = connect_tcp(port());
  ASSERT_TRUE(silent);
  auto start = Clock::now();
  send_text(stalled.get(), "GET /metrics HTTP/1.1\r\nHost: x\r\n");  // never ends
  auto r = parse_response(read_until_closed(stalled.get()));
  auto waited = Clock::now() - start;
  EXPECT_TRUE(r.closed);
  EXPECT_EQ(r.status, 408) << r.raw;
  EXPECT_GE(waited, milliseconds(1900));
  EXPECT_LT(waited, milliseconds(4000));
  EXPECT_TRUE(read_until_closed(silent.get()).closed);
  // The loop served others meanwhile and still does.
  EXPECT_EQ(get(port(), "/healthz").status, 200);
  EXPECT_EQ(stopped_stats().timed_out, 2u);
}

TEST_F(MetricsServerTest, TimeoutRunsFromConnectNotFromTheLastByte) {
  serve(api::MetricsServerLimits{.head_timeout = milliseconds(300)});
  UniqueFd fd = connect_tcp(port());
  ASSERT_TRUE(fd);
  auto start = Clock::now();
  // A byte every 50 ms would keep a per-read timer alive forever.
  bool closed = false;
  while (Clock::now() - start < milliseconds(3000) && !closed) {
    if (!send_text(fd.get(), "G")) break;
    pollfd p{fd.get(), POLLIN, 0};
    closed = ::poll(&p, 1, 50) > 0;
  }
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
  EXPECT_TRUE(read_until_closed(fd.get()).closed);
}

TEST_F(MetricsServerTest, SeventeenthConcurrentClientTurnedAway) {
  EXPECT_EQ(api::kMaxHttpClients, 16u);
  // Long head timeout: the 16 must still hold their slots at the end.
  serve(api::MetricsServerLimits{.head_timeout = milliseconds(20'000)});
  std::vector<UniqueFd> held;
  for (std::size_t i = 0; i < api::kMaxHttpClients; ++i) {
    held.push_back(connect_tcp(port()));
    ASSERT_TRUE(held.back());
  }
  // Accepted in connect order, so the 17th is the one refused.
  auto start = Clock::now();
  UniqueFd extra = connect_tcp(port());
  ASSERT_TRUE(extra);
  auto refused = parse_response(read_until_closed(extra.get(), milliseconds(2000)));
  EXPECT_TRUE(refused.closed);
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
  EXPECT_EQ(refused.status, 503) << refused.raw;
  for (auto& fd : held) {
    pollfd p{fd.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0) << "a held client was closed";
  }
  // A held client is served; once it is done its slot takes a newcomer.
  send_text(held[0].get(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(parse_response(read_until_closed(held[0].get())).status, 200);
  held[0].reset();
  HttpResponse later;
  for (int attempt = 0; attempt < 50 && later.status != 200; ++attempt) {
    later = get(port(), "/metrics");  // the slot frees once the server saw our close
    if (later.status != 200) std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(later.status, 200);
  held.clear();
  const auto& stats = stopped_stats();
  EXPECT_GE(stats.rejected_busy, 1u);  // more if a retry above came before our close
}

TEST_F(MetricsServerTest, LargeExpositionIsWrittenAsTheSocketTakesIt) {
  std::string big;
  for (int i = 0; big.size() < 8 * 1024 * 1024; ++i)
    big += "tf_conn_age_seconds{cookie=\"" + std::to_string(i) + "\"} 1.5\n";
  serve(api::MetricsServer::Handlers{[&big] { return big; }, {}});
  UniqueFd fd = connect_tcp(port());
  ASSERT_TRUE(fd);
  send_text(fd.get(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  std::this_thread::sleep_for(milliseconds(200));  // let the socket buffers fill
  auto r = parse_response(read_until_closed(fd.get(), milliseconds(10'000)));
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.body == big) << "body of " << r.body.size() << " bytes, want " << big.size();
  // The loop was not blocked meanwhile.
  EXPECT_EQ(get(port(), "/healthz").status, 200);
}

TEST_F(MetricsServerTest, SlowReaderCutAtTheReplyTimeout) {
  std::string big(16 * 1024 * 1024, 'x');
  serve(api::MetricsServer::Handlers{[&big] { return big; }, {}},
        api::MetricsServerLimits{.reply_timeout = milliseconds(300)});
  UniqueFd fd = connect_tcp(port());
  ASSERT_TRUE(fd);
  send_text(fd.get(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  std::this_thread::sleep_for(milliseconds(800));  // never reads in time
  auto got = read_until_closed(fd.get());
  EXPECT_TRUE(got.closed);
  EXPECT_LT(got.text.size(), big.size());
  EXPECT_EQ(stopped_stats().timed_out, 1u);
}

TEST_F(MetricsServerTest, CurlScrapes) {
  serve();
  std::string url = "http://127.0.0.1:" + std::to_string(port());
  auto body = run_command({"/usr/bin/curl", "-s", "--max-time", "10", url + "/metrics"});
  ASSERT_TRUE(body) << body.error().message;
  EXPECT_EQ(body->exit_code, 0) << body->err;
  EXPECT_EQ(body->out, kMetricsText);
  auto meta = run_command({"/usr/bin/curl", "-s", "--max-time", "10", "-o", "/dev/null", "-w",
                           "%{http_code} %{content_type}", url + "/metrics"});
  ASSERT_TRUE(meta) << meta.error().message;
  EXPECT_EQ(meta->out, "200 " + std::string(kExpositionType));
  ready_ = false;
  auto readyz = run_command(
      {"/usr/bin/curl", "-s", "--max-time", "10", "-w", " %{http_code}", url + "/readyz"});
  ASSERT_TRUE(readyz) << readyz.error().message;
  EXPECT_EQ(readyz->out, "no SVID yet\n 503");
  auto post = run_command({"/usr/bin/curl", "-s", "--max-time", "10", "-o", "/dev/null", "-w",
                           "%{http_code}", "-d", "x=1", url + "/metrics"});
  ASSERT_TRUE(post) << post.error().message;
  EXPECT_EQ(post->out, "405");
}

TEST(MetricsServerStart, PortInUseNamesTheAddress) {
  auto loop = runtime::EventLoop::create();
  ASSERT_TRUE(loop);
  api::MetricsServer::Handlers handlers{[] { return std::string(); }, {}};
  auto first = api::MetricsServer::start(*loop, loopback(), handlers);
  ASSERT_TRUE(first) << first.error().message;
  std::uint16_t port = (*first)->port();
  ASSERT_NE(port, 0);
  EXPECT_EQ((*first)->address(), "127.0.0.1:" + std::to_string(port));
  auto second = api::MetricsServer::start(*loop, loopback(port), handlers);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().message,
            "metrics = 127.0.0.1:" + std::to_string(port) + ": bind: Address already in use");
}

TEST(MetricsServerStart, NeedsAMetricsHandler) {
  auto loop = runtime::EventLoop::create();
  ASSERT_TRUE(loop);
  auto server = api::MetricsServer::start(*loop, loopback(), {});
  ASSERT_FALSE(server);
  EXPECT_EQ(server.error().code, Errc::kInvalidArgument);
  EXPECT_THAT(server.error().message, HasSubstr("metrics = 127.0.0.1:0"));
}

TEST(MetricsServerStart, ServesIPv6Loopback) {
  auto loop = runtime::EventLoop::create();
  ASSERT_TRUE(loop);
  auto server =
      api::MetricsServer::start(*loop, net::SocketAddress(*net::IpAddress::parse("::1"), 0),
                                api::MetricsServer::Handlers{[] { return std::string(); }, {}});
  if (!server && server.error().message.find("Cannot assign") != std::string::npos)
    GTEST_SKIP() << "no IPv6 loopback here";
  ASSERT_TRUE(server) << server.error().message;
  EXPECT_NE((*server)->port(), 0);
  EXPECT_EQ((*server)->address(), "[::1]:" + std::to_string((*server)->port()));
}

TEST_F(MetricsServerTest, DestructorRemovesItsFdsFromTheLoop) {
  serve();
  UniqueFd idle = connect_tcp(port());
  ASSERT_TRUE(idle);
  EXPECT_EQ(get(port(), "/healthz").status, 200);  // the idle one was accepted before
  serving_->stop();
  // The idle client, and the one just served if its close is not seen yet.
  std::size_t clients = serving_->server().clients();
  EXPECT_GE(clients, 1u);
  EXPECT_EQ(serving_->loop().watched(), 2 + clients);  // + listener, wake pipe
  EXPECT_EQ(serving_->loop().timers(), clients);       // one timer each
  serving_->destroy_server();
  EXPECT_EQ(serving_->loop().watched(), 1u);
  EXPECT_EQ(serving_->loop().timers(), 0u);
  EXPECT_TRUE(read_until_closed(idle.get()).closed);
}

TEST(MetricsServerStats, ExportedAsJsonAndExposition) {
  api::MetricsServerStats stats;
  stats.requests = 7;
  stats.scrapes = 5;
  stats.rejected_busy = 1;
  auto json = api::to_json(stats);
  EXPECT_EQ(json["requests"], 7);
  EXPECT_EQ(json["rejected_busy"], 1);
  api::Exposition out;
  api::append_to(out, stats);
  EXPECT_EQ(out.skipped(), 0u);
  EXPECT_THAT(out.text(), HasSubstr("trustfence_metrics_http_requests_total 7\n"));
  EXPECT_THAT(out.text(), HasSubstr("trustfence_metrics_http_scrapes_total 5\n"));
  EXPECT_THAT(out.text(), HasSubstr("trustfence_metrics_http_rejected_total{reason=\"busy\"} 1\n"));
}

}  // namespace
}  // namespace trustfence::testing
