#pragma once

// The agent's query API: a Unix stream socket served from the agent's one
// event loop, never blocking it.
//
// Protocol. A client connects and writes ONE request: a JSON object on one
// line, ending in '\n' (or in the client shutting down its write side), at
// most kMaxRequestBytes including the newline. It must carry a string
// "command", e.g.
//
//   {"command":"conns","include_closed":false}
//   {"command":"conn","cookie":1234}
//   {"command":"stats"}
//
// The server answers ONE JSON document on one line, ending in '\n', and
// closes the connection. A failure is {"error":"message"}; the server itself
// answers with one for: a caller that is not allowed ("permission denied:
// ..."), too many clients ("busy: ..."), an oversized request ("request too
// large: ..."), a request that is not a JSON object with a string "command",
// and a handler that threw. Whatever the handler answers is sent as is.
//
// Who may ask (SO_PEERCRED, checked per connection): uid 0, the agent's own
// effective uid, or a member of api-socket-group (primary or supplementary
// group). The socket file is 0600, or 0660 owned by that group.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"
#include "trustfence/config/config.hpp"
#include "trustfence/runtime/acceptor.hpp"

namespace trustfence::api {

inline constexpr std::size_t kMaxRequestBytes = 64 * 1024;
inline constexpr std::size_t kMaxClients = 32;
inline constexpr std::chrono::milliseconds kRequestTimeout{2000};
// A reply may be megabytes (every tracked connection); a reader that stops
// reading must not hold its slot forever.
inline constexpr std::chrono::milliseconds kReplyTimeout{10'000};
// Nesting deeper than any request needs is refused before it reaches code
// that recurses over the document.
inline constexpr int kMaxRequestDepth = 32;

struct ServerLimits {
  std::size_t max_clients = kMaxClients;
  std::size_t max_request_bytes = kMaxRequestBytes;
  std::chrono::milliseconds request_timeout = kRequestTimeout;
  std::chrono::milliseconds reply_timeout = kReplyTimeout;
};

struct ServerStats {
  std::uint64_t requests = 0;       // complete requests read (answered or refused)
  std::uint64_t denied = 0;         // callers refused by SO_PEERCRED
  std::uint64_t oversized = 0;      // requests over max_request_bytes
  std::uint64_t timed_out = 0;      // clients closed by the request or reply timer
  std::uint64_t rejected_busy = 0;  // clients over max_clients, closed at once
};

// {"requests": n, "denied": n, ...}: the server's section of "stats".
nlohmann::json to_json(const ServerStats& stats);

class Server {
 public:
  // Runs on the loop thread. An exception, or a request that is not an
  // object with a string "command", becomes an error reply, never a crash.
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

  // Creates the socket's directory if missing (0755); replaces a stale
  // socket file only if nothing answers on it, and never a file that is not
  // a socket. loop must outlive the server.
  static Result<std::unique_ptr<Server>> start(runtime::EventLoop& loop,
                                               const config::ApiConfig& config, Handler handler,
                                               ServerLimits limits = {});

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  // Removes every fd from the loop, closes them, and unlinks the socket file
  // if it is still the one this server created. Not from inside the handler.
  ~Server();

  const std::string& path() const { return path_; }
  const ServerStats& stats() const { return stats_; }
  std::size_t clients() const { return clients_.size(); }

 private:
  struct Client;
  using ClientId = std::uint64_t;

  Server(runtime::EventLoop& loop, Handler handler, ServerLimits limits);

  void admit(UniqueFd fd);
  void on_client_ready(ClientId id, std::uint32_t events);
  void read_request(Client& client);
  void answer(Client& client, const nlohmann::json& reply);
  void flush(Client& client);
  void on_timeout(ClientId id);
  void close_client(ClientId id);
  std::optional<std::string> refuse_reason(int fd) const;

  runtime::EventLoop& loop_;
  Handler handler_;
  ServerLimits limits_;
  std::unique_ptr<runtime::Acceptor> acceptor_;
  std::string path_;
  dev_t socket_dev_ = 0;  // identify the file we bound, to unlink only it
  ino_t socket_ino_ = 0;
  uid_t own_euid_ = 0;
  std::optional<gid_t> group_;
  std::string group_name_;  // as configured, for messages
  std::unordered_map<ClientId, std::unique_ptr<Client>> clients_;
  ClientId next_client_ = 1;
  ServerStats stats_;
};

// The supplementary groups of a /proc/PID/status text ("Groups:\t1 2 3");
// nullopt when the line is missing or malformed. For kernels without
// SO_PEERGROUPS.
std::optional<std::vector<gid_t>> groups_from_proc_status(std::string_view status);

}  // namespace trustfence::api
