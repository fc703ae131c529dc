#pragma once

// The agent's Prometheus endpoint: a minimal HTTP/1.1 server on the agent's
// one event loop (config key `metrics`), never blocking it.
//
//   GET /metrics  200, Content-Type text/plain; version=0.0.4; charset=utf-8,
//                 the text of Handlers::metrics (an Exposition's text()).
//   GET /healthz  200 "ok": liveness; answered by the loop itself, so an
//                 answer means the loop runs.
//   GET /readyz   200 or 503, the body the reason Handlers::ready gives.
//   other paths   404. A query string (`/metrics?x=y`) is ignored.
//   HEAD          as GET without the body (HTTP requires HEAD wherever GET
//                 is served). Any other method: 405 with `Allow: GET, HEAD`.
//   malformed     400 (request line, header syntax, missing Host in
//                 HTTP/1.1); 505 for HTTP versions other than 1.x.
//
// One request per connection: every response carries `Connection: close`
// and a Content-Length; a request body, or anything after the head, is read
// and discarded, never answered. The head (request line and headers) is
// capped (431 over limits.max_head_bytes) and timed (408 after
// limits.head_timeout); at most limits.max_clients connections are served at
// once, the next ones are sent a best-effort 503 and closed at once. A
// handler that throws is answered 500, never a crash. Replies are buffered
// and written as the socket takes them; a reader that stops reading is cut
// at limits.reply_timeout.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include <nlohmann/json.hpp>

#include "trustfence/common/net.hpp"
#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"
#include "trustfence/runtime/acceptor.hpp"

namespace trustfence::api {

class Exposition;

inline constexpr std::size_t kMaxHttpHeadBytes = 8 * 1024;
inline constexpr std::chrono::milliseconds kHttpHeadTimeout{2000};
inline constexpr std::size_t kMaxHttpClients = 16;
// The exposition may be large; a scraper that stops reading must not hold
// its slot forever.
inline constexpr std::chrono::milliseconds kHttpReplyTimeout{10'000};

struct MetricsServerLimits {
  std::size_t max_clients = kMaxHttpClients;
  std::size_t max_head_bytes = kMaxHttpHeadBytes;
  std::chrono::milliseconds head_timeout = kHttpHeadTimeout;
  std::chrono::milliseconds reply_timeout = kHttpReplyTimeout;
};

struct MetricsServerStats {
  std::uint64_t requests = 0;            // complete request heads read (any answer)
  std::uint64_t scrapes = 0;             // /metrics answered 200
  std::uint64_t not_ready = 0;           // /readyz answered 503
  std::uint64_t not_found = 0;           // 404
  std::uint64_t method_not_allowed = 0;  // 405
  std::uint64_t bad_requests = 0;        // 400 and 505
  std::uint64_t oversized = 0;           // 431: head over max_head_bytes
  std::uint64_t timed_out = 0;           // closed by the head (408) or reply timer
  std::uint64_t rejected_busy = 0;       // over max_clients, closed at once
  std::uint64_t handler_errors = 0;      // a handler threw: 500
};

// {"requests": n, "scrapes": n, ...}: for the agent's "stats".
nlohmann::json to_json(const MetricsServerStats& stats);
// The same counters as trustfence_metrics_http_* families.
void append_to(Exposition& out, const MetricsServerStats& stats);

class MetricsServer {
 public:
  // Both run on the loop thread, once per request; they may throw (500).
  struct Handlers {
    std::function<std::string()> metrics;  // required: the exposition text
    // {ready, reason}; empty means always ready.
    std::function<std::pair<bool, std::string>()> ready;
  };

  // Listens on address (port 0 picks a free port: see port()), SO_REUSEADDR
  // so a restarted agent binds while old connections linger in TIME_WAIT.
  // Errors name the address: "metrics = 127.0.0.1:9464: bind: Address
  // already in use". loop must outlive the server.
  static Result<std::unique_ptr<MetricsServer>> start(runtime::EventLoop& loop,
                                                      const net::SocketAddress& address,
                                                      Handlers handlers,
                                                      MetricsServerLimits limits = {});

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  // Removes every fd from the loop and closes it. Not from inside a handler.
  ~MetricsServer();

  std::uint16_t port() const { return port_; }             // the bound port
  const std::string& address() const { return address_; }  // as in messages
  // Loop thread only (or once the loop has stopped).
  const MetricsServerStats& stats() const { return stats_; }
  std::size_t clients() const { return clients_.size(); }

 private:
  struct Client;
  struct Response;
  using ClientId = std::uint64_t;

  MetricsServer(runtime::EventLoop& loop, Handlers handlers, MetricsServerLimits limits);

  void admit(UniqueFd fd);
  void on_client_ready(ClientId id, std::uint32_t events);
  void read_head(Client& client);
  Response respond_to(std::string_view head);
  Response route(std::string_view method, std::string_view path);
  void answer(Client& client, const Response& response, bool with_body = true);
  void flush(Client& client);
  void drain(Client& client);
  void on_timeout(ClientId id);
  void close_client(ClientId id);
  void rearm(Client& client, std::chrono::milliseconds delay);

  runtime::EventLoop& loop_;
  Handlers handlers_;
  MetricsServerLimits limits_;
  std::unique_ptr<runtime::Acceptor> acceptor_;
  std::string address_;
  std::uint16_t port_ = 0;
  std::unordered_map<ClientId, std::unique_ptr<Client>> clients_;
  ClientId next_client_ = 1;
  MetricsServerStats stats_;
};

}  // namespace trustfence::api
