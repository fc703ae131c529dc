#include "trustfence/api/metrics_server.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "flush_reply.hpp"
#include "trustfence/api/prometheus.hpp"

namespace trustfence::api {
namespace {

using json = nlohmann::json;
using namespace std::string_view_literals;

constexpr std::size_t kReadChunk = 16 * 1024;
// After the response, what the client still sends (a body, a pipelined
// request) is read and dropped until it closes: closing a socket with unread
// data sends a reset that can destroy the response in flight. Bounded.
constexpr std::chrono::milliseconds kDrainTimeout{1000};
constexpr std::size_t kMaxDrainBytes = 64 * 1024;
constexpr std::size_t kMaxMethodBytes = 32;

constexpr std::string_view kExpositionType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kTextType = "text/plain; charset=utf-8";

bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return "!#$%&'*+-.^_`|~"sv.find(c) != std::string_view::npos;
}

bool is_token(std::string_view text) {
  return !text.empty() && std::ranges::all_of(text, is_tchar);
}

bool iequals(std::string_view a, std::string_view b) {
  return std::ranges::equal(a, b, [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

// Visible ASCII: no spaces or controls in a request target.
bool is_target(std::string_view text) {
  return !text.empty() && std::ranges::all_of(text, [](char c) { return c > 0x20 && c < 0x7f; });
}

// Field values: no controls but HTAB (obs-text, bytes >= 0x80, allowed).
bool is_field_value(std::string_view text) {
  return std::ranges::all_of(text, [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
  });
}

std::string_view trim_ows(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
  }
  return "Unknown";
}

// A request head, or the status that refuses it (400, 505).
struct ParsedHead {
  int status = 0;
  std::string_view method;
  std::string_view path;  // without the query
};

ParsedHead bad(int status) { return ParsedHead{status, {}, {}}; }

// The path of an origin-form ("/metrics?x") or absolute-form
// ("http://host/metrics") target; empty when it is neither.
std::string_view path_of(std::string_view target) {
  for (std::string_view scheme : {"http://"sv, "https://"sv}) {
    if (target.size() > scheme.size() && iequals(target.substr(0, scheme.size()), scheme)) {
      target.remove_prefix(scheme.size());
      auto slash = target.find_first_of("/?");
      if (slash == 0) return {};  // no authority
      target = slash == std::string_view::npos ? "/"sv : target.substr(slash);
      if (target.front() == '?') return "/";
      break;
    }
  }
  if (target.empty() || target.front() != '/') return {};
  return target.substr(0, target.find('?'));
}

// head: from the request line up to, not including, the blank line that
// ends it. Lines end in CRLF or LF alone (RFC 9112 lets a server accept LF).
ParsedHead parse_head(std::string_view head) {
  std::vector<std::string_view> lines;
  while (!head.empty()) {
    auto nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    head = nl == std::string_view::npos ? std::string_view() : head.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find('\r') != std::string_view::npos) return bad(400);  // bare CR
    lines.push_back(line);
  }
  if (lines.empty()) return bad(400);

  // request-line = method SP request-target SP HTTP-version
  std::string_view line = lines.front();
  auto sp1 = line.find(' ');
  auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return bad(400);
  ParsedHead parsed;
  parsed.method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(parsed.method) || parsed.method.size() > kMaxMethodBytes || !is_target(target))
    return bad(400);
  if (version.size() != 8 || !version.starts_with("HTTP/") || !std::isdigit(version[5]) ||
      version[6] != '.' || !std::isdigit(version[7]))
    return bad(400);
  if (version[5] != '1') return bad(505);
  parsed.path = path_of(target);
  if (parsed.path.empty() && target != "*") return bad(400);

  int hosts = 0;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    std::string_view field = lines[i];
    auto colon = field.find(':');
    // No obs-fold (a line starting with whitespace), no space before ':'.
    if (colon == std::string_view::npos || !is_token(field.substr(0, colon))) return bad(400);
    if (!is_field_value(trim_ows(field.substr(colon + 1)))) return bad(400);
    if (iequals(field.substr(0, colon), "host")) ++hosts;
  }
  // RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one before.
  if (hosts > 1 || (hosts == 0 && version == "HTTP/1.1")) return bad(400);
  parsed.status = 0;
  return parsed;
}

std::string render(int status, std::string_view content_type, std::string_view body, bool with_body,
                   std::string_view extra_headers = {}) {
  std::string out = "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  out += reason_phrase(status);
  out += "\r\nContent-Type: ";
  out += content_type;
  out += "\r\nContent-Length: ";
  out += std::to_string(body.size());
  out += "\r\n";
  out += extra_headers;
  out += "Connection: close\r\n\r\n";
  if (with_body) out += body;
  return out;
}

}  // namespace

struct MetricsServer::Response {
  int status = 200;
  std::string_view content_type = kTextType;
  std::string body;
  std::string_view extra_headers;  // each ending in CRLF
};

struct MetricsServer::Client {
  enum class State { kReading, kWriting, kDraining };

  // The length of the head once its blank line is in `in` (leading blank
  // lines skipped, as RFC 9112 asks), scanning each byte once.
  std::optional<std::size_t> find_head_end() {
    for (;;) {
      auto nl = in.find('\n', line_start);
      if (nl == std::string::npos) return std::nullopt;
      std::string_view line(in.data() + line_start, nl - line_start);
      line_start = nl + 1;
      if (line.empty() || line == "\r") {
        if (seen_line) return line_start;
        head_start = line_start;
        continue;
      }
      seen_line = true;
    }
  }

  ClientId id = 0;
  UniqueFd fd;
  State state = State::kReading;
  std::string in;
  std::size_t line_start = 0;
  std::size_t head_start = 0;
  bool seen_line = false;
  std::string out;
  std::size_t sent = 0;
  std::size_t drained = 0;
  bool waiting_writable = false;
  runtime::EventLoop::TimerId timer = 0;
};

json to_json(const MetricsServerStats& stats) {
  return json{{"requests", stats.requests},
              {"scrapes", stats.scrapes},
              {"not_ready", stats.not_ready},
              {"not_found", stats.not_found},
              {"method_not_allowed", stats.method_not_allowed},
              {"bad_requests", stats.bad_requests},
              {"oversized", stats.oversized},
              {"timed_out", stats.timed_out},
              {"rejected_busy", stats.rejected_busy},
              {"handler_errors", stats.handler_errors}};
}

void append_to(Exposition& out, const MetricsServerStats& stats) {
  out.counter("trustfence_metrics_http_requests_total",
              "HTTP requests read by the metrics endpoint.", {}, stats.requests);
  out.counter("trustfence_metrics_http_scrapes_total", "GET /metrics answered with the exposition.",
              {}, stats.scrapes);
  constexpr std::string_view kRejected = "trustfence_metrics_http_rejected_total";
  constexpr std::string_view kRejectedHelp =
      "Requests and connections of the metrics endpoint not answered 200, by reason.";
  const std::pair<std::string_view, std::uint64_t> reasons[] = {
      {"not-ready", stats.not_ready},
      {"not-found", stats.not_found},
      {"method-not-allowed", stats.method_not_allowed},
      {"bad-request", stats.bad_requests},
      {"oversized", stats.oversized},
      {"timeout", stats.timed_out},
      {"busy", stats.rejected_busy},
      {"handler-error", stats.handler_errors}};
  for (const auto& [reason, count] : reasons)
    out.counter(kRejected, kRejectedHelp, {{"reason", reason}}, count);
}

MetricsServer::MetricsServer(runtime::EventLoop& loop, Handlers handlers,
                             MetricsServerLimits limits)
    : loop_(loop), handlers_(std::move(handlers)), limits_(limits) {}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(runtime::EventLoop& loop,
                                                            const net::SocketAddress& address,
                                                            Handlers handlers,
                                                            MetricsServerLimits limits) {
  const std::string where = "metrics = " + address.str();
  if (!handlers.metrics) return fail(Errc::kInvalidArgument, where + ": no metrics handler");
  if (limits.max_clients == 0 || limits.max_head_bytes == 0)
    return fail(Errc::kInvalidArgument, where + ": limits must be positive");
  sockaddr_storage addr{};
  socklen_t addr_len = address.to_sockaddr(addr);
  UniqueFd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno(where + ": socket", errno);
  int one = 1;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
    return fail_errno(where + ": SO_REUSEADDR", errno);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), addr_len) != 0)
    return fail_errno(where + ": bind", errno);
  if (::listen(fd.get(), SOMAXCONN) != 0) return fail_errno(where + ": listen", errno);
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0)
    return fail_errno(where + ": getsockname", errno);
  std::uint16_t port = bound.ss_family == AF_INET
                           ? ntohs(reinterpret_cast<const sockaddr_in&>(bound).sin_port)
                           : ntohs(reinterpret_cast<const sockaddr_in6&>(bound).sin6_port);

  std::unique_ptr<MetricsServer> server(new MetricsServer(loop, std::move(handlers), limits));
  server->port_ = port;
  server->address_ = net::SocketAddress(address.ip(), port).str();
  MetricsServer* self = server.get();
  auto acceptor = runtime::Acceptor::start(
      loop, std::move(fd), "metrics " + server->address_,
      [self](UniqueFd client, const sockaddr_storage&) { self->admit(std::move(client)); });
  if (!acceptor) return std::unexpected(acceptor.error());
  server->acceptor_ = std::move(*acceptor);
  return server;
}

MetricsServer::~MetricsServer() {
  for (auto& [id, client] : clients_) {
    loop_.remove(client->fd.get());
    if (client->timer != 0) loop_.cancel(client->timer);
  }
  clients_.clear();
  acceptor_.reset();
}

void MetricsServer::admit(UniqueFd fd) {
  if (clients_.size() >= limits_.max_clients) {
    ++stats_.rejected_busy;
    // Best effort, never waiting: take what the client already sent (so the
    // close is not a reset that eats the answer), say why, close.
    char discard[kReadChunk];
    (void)::recv(fd.get(), discard, sizeof(discard), MSG_DONTWAIT);
    auto reply = render(503, kTextType, "busy: too many metrics clients; retry\n", true);
    (void)::send(fd.get(), reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    return;
  }
  auto client = std::make_unique<Client>();
  client->id = next_client_++;
  client->fd = std::move(fd);
  ClientId id = client->id;
  if (auto ok = loop_.add(client->fd.get(), EPOLLIN,
                          [this, id](std::uint32_t events) { on_client_ready(id, events); });
      !ok) {
    spdlog::warn("metrics: watching a client of {}: {}", address_, ok.error().message);
    return;
  }
  Client& c = *clients_.emplace(id, std::move(client)).first->second;
  rearm(c, limits_.head_timeout);
}

void MetricsServer::rearm(Client& c, std::chrono::milliseconds delay) {
  if (c.timer != 0) loop_.cancel(c.timer);
  ClientId id = c.id;
  c.timer = loop_.after(delay, [this, id] { on_timeout(id); });
}

void MetricsServer::on_client_ready(ClientId id, std::uint32_t events) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  switch (c.state) {
    case Client::State::kReading:
      if ((events & EPOLLERR) != 0) {
        close_client(id);
        return;
      }
      read_head(c);
      return;
    case Client::State::kWriting:
      flush(c);
      return;
    case Client::State::kDraining:
      drain(c);
      return;
  }
}

void MetricsServer::read_head(Client& c) {
  char chunk[kReadChunk];
  const std::size_t cap = limits_.max_head_bytes;
  for (;;) {
    // One byte past the cap tells an oversized head from a full one.
    std::size_t room = cap + 1 - c.in.size();
    ssize_t n = ::recv(c.fd.get(), chunk, std::min(sizeof(chunk), room), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) close_client(c.id);
      return;
    }
    if (n == 0) {  // the client stopped sending before the head ended
      if (c.in.find_first_not_of("\r\n") == std::string::npos) {
        close_client(c.id);  // left without asking
        return;
      }
      ++stats_.requests;
      ++stats_.bad_requests;
      answer(c, Response{400, kTextType, "bad request: incomplete request head\n", {}});
      return;
    }
    c.in.append(chunk, static_cast<std::size_t>(n));
    auto end = c.find_head_end();
    if ((end && *end > cap) || (!end && c.in.size() > cap)) {
      ++stats_.oversized;
      answer(c, Response{431,
                         kTextType,
                         "request head too large: over " + std::to_string(cap) + " bytes\n",
                         {}});
      return;
    }
    if (!end) continue;
    ++stats_.requests;
    // Without the blank line that ends it; what follows is never answered.
    std::string_view head(c.in.data() + c.head_start, *end - c.head_start);
    head.remove_suffix(head.ends_with("\r\n") ? 2 : 1);
    ParsedHead parsed = parse_head(head);
    bool with_body = parsed.method != "HEAD";
    answer(c,
           parsed.status != 0 ? Response{parsed.status,
                                         kTextType,
                                         std::string(reason_phrase(parsed.status)) + "\n",
                                         {}}
                              : route(parsed.method, parsed.path),
           with_body);
    if (parsed.status != 0) ++stats_.bad_requests;
    return;
  }
}

MetricsServer::Response MetricsServer::route(std::string_view method, std::string_view path) {
  if (method != "GET" && method != "HEAD") {
    ++stats_.method_not_allowed;
    return Response{405, kTextType, "method not allowed: GET or HEAD only\n",
                    "Allow: GET, HEAD\r\n"};
  }
  try {
    if (path == "/metrics") {
      Response response{200, kExpositionType, handlers_.metrics(), {}};
      ++stats_.scrapes;
      return response;
    }
    if (path == "/healthz") return Response{200, kTextType, "ok\n", {}};
    if (path == "/readyz") {
      auto [ready, reason] =
          handlers_.ready ? handlers_.ready() : std::pair<bool, std::string>{true, "ok"};
      if (reason.empty()) reason = ready ? "ok" : "not ready";
      if (!ready) ++stats_.not_ready;
      return Response{ready ? 200 : 503, kTextType, std::move(reason) + "\n", {}};
    }
  } catch (const std::exception& e) {
    ++stats_.handler_errors;
    spdlog::warn("metrics: {} {} failed: {}", method, path, e.what());
    return Response{500, kTextType, "internal error\n", {}};
  } catch (...) {
    ++stats_.handler_errors;
    spdlog::warn("metrics: {} {} failed", method, path);
    return Response{500, kTextType, "internal error\n", {}};
  }
  ++stats_.not_found;
  return Response{404, kTextType, "not found: try /metrics, /healthz or /readyz\n", {}};
}

void MetricsServer::answer(Client& c, const Response& response, bool with_body) {
  c.out = render(response.status, response.content_type, response.body, with_body,
                 response.extra_headers);
  c.state = Client::State::kWriting;
  c.in = std::string();  // release the request buffer
  rearm(c, limits_.reply_timeout);
  flush(c);
}

void MetricsServer::flush(Client& c) {
  switch (flush_reply(loop_, c.fd.get(), c.out, c.sent, c.waiting_writable)) {
    case Flushed::kBlocked:
      return;
    case Flushed::kGone:
      close_client(c.id);
      return;
    case Flushed::kDone:
      break;
  }
  // All sent: end our side, then wait for the client's end (see kDrainTimeout).
  c.out = std::string();
  c.state = Client::State::kDraining;
  if (::shutdown(c.fd.get(), SHUT_WR) != 0 ||
      (c.waiting_writable && !loop_.modify(c.fd.get(), EPOLLIN))) {
    close_client(c.id);
    return;
  }
  rearm(c, kDrainTimeout);
  drain(c);
}

void MetricsServer::drain(Client& c) {
  char chunk[kReadChunk];
  for (;;) {
    ssize_t n = ::recv(c.fd.get(), chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    c.drained += n > 0 ? static_cast<std::size_t>(n) : 0;
    if (n <= 0 || c.drained > kMaxDrainBytes) {
      close_client(c.id);
      return;
    }
  }
}

void MetricsServer::on_timeout(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  c.timer = 0;
  if (c.state == Client::State::kReading) {
    ++stats_.timed_out;
    auto reply = render(408, kTextType,
                        "timeout: no complete request head within " +
                            std::to_string(limits_.head_timeout.count()) + " ms\n",
                        true);
    (void)::send(c.fd.get(), reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  } else if (c.state == Client::State::kWriting) {
    ++stats_.timed_out;
  }
  close_client(id);
}

void MetricsServer::close_client(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  loop_.remove(it->second->fd.get());
  if (it->second->timer != 0) loop_.cancel(it->second->timer);
  clients_.erase(it);  // closes the fd
}

}  // namespace trustfence::api
