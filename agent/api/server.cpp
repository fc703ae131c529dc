#include "trustfence/api/server.hpp"

#include <fcntl.h>
#include <grp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>

#include "flush_reply.hpp"
#include "unix_address.hpp"

namespace trustfence::api {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr std::size_t kReadChunk = 16 * 1024;
constexpr std::size_t kMaxGroups = 65536;  // NGROUPS_MAX
constexpr std::size_t kMaxProcStatus = 64 * 1024;
constexpr std::size_t kMaxGroupEntry = 1 << 20;

json error_reply(std::string message) { return json{{"error", std::move(message)}}; }

std::string error_line(std::string message) {
  return error_reply(std::move(message)).dump(-1, ' ', false, json::error_handler_t::replace) +
         "\n";
}

// Creates dir and its missing parents with mode 0755, whatever the umask.
Result<void> ensure_directory(const fs::path& dir) {
  if (dir.empty()) return {};
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return {};
    return fail(Errc::kInvalidArgument,
                "api-socket directory " + dir.string() + " exists and is not a directory");
  }
  if (errno != ENOENT) return fail_errno("api-socket directory " + dir.string(), errno);
  if (dir.has_parent_path() && dir.parent_path() != dir)
    if (auto ok = ensure_directory(dir.parent_path()); !ok) return ok;
  if (::mkdir(dir.c_str(), 0755) != 0) {
    if (errno == EEXIST) return {};  // made meanwhile by someone else
    return fail_errno("creating api-socket directory " + dir.string(), errno);
  }
  if (::chmod(dir.c_str(), 0755) != 0) return fail_errno("chmod 0755 " + dir.string(), errno);
  return {};
}

// Removes a socket file nobody answers on (an agent that died); refuses to
// touch a live one or anything that is not a socket.
Result<void> remove_stale_socket(const std::string& path, const sockaddr_un& addr) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return fail_errno("api-socket " + path, errno);
  }
  if (!S_ISSOCK(st.st_mode))
    return fail(Errc::kInvalidArgument,
                "api-socket " + path + " exists and is not a socket; not replacing it");
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!probe) return fail_errno("socket", errno);
  // A full backlog (EAGAIN) is as live as an accepted connection.
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0 ||
      errno == EAGAIN)
    return fail(Errc::kIo, "another agent is serving on api-socket " + path +
                               "; stop it or configure another api-socket");
  if (errno != ECONNREFUSED) return fail_errno("probing api-socket " + path, errno);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return fail_errno("removing stale api-socket " + path, errno);
  return {};
}

Result<gid_t> resolve_group(const std::string& name) {
  std::vector<char> buffer(4096);
  for (;;) {
    group entry{};
    group* found = nullptr;
    int err = ::getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (err == ERANGE && buffer.size() < kMaxGroupEntry) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (err != 0) return fail_errno("looking up api-socket-group '" + name + "'", err);
    if (found != nullptr) return found->gr_gid;
    break;
  }
  // A bare number names a group that has no entry (containers, NSS-less hosts).
  gid_t gid = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), gid);
  if (!name.empty() && ec == std::errc() && end == name.data() + name.size()) return gid;
  return fail(Errc::kNotFound, "api-socket-group '" + name + "': no such group");
}

// Bounded read of /proc/PID/status. The pid is the caller's at connect time;
// SO_PEERGROUPS, race-free, is preferred where the kernel has it.
std::optional<std::vector<gid_t>> proc_groups(pid_t pid) {
  if (pid <= 0) return std::nullopt;  // not visible from our pid namespace
  std::string path = "/proc/" + std::to_string(pid) + "/status";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string text(kMaxProcStatus, '\0');
  std::size_t used = 0;
  while (used < text.size()) {
    ssize_t n = ::read(fd.get(), text.data() + used, text.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    used += static_cast<std::size_t>(n);
  }
  text.resize(used);
  return groups_from_proc_status(text);
}

std::optional<std::vector<gid_t>> peer_groups(int fd, pid_t pid) {
  std::vector<gid_t> groups(64);
  for (;;) {
    auto len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      return groups;
    }
    std::size_t needed = len / sizeof(gid_t);
    if (errno == ERANGE && needed > groups.size() && needed <= kMaxGroups) {
      groups.resize(needed);
      continue;
    }
    if (errno == ENOPROTOOPT) return proc_groups(pid);
    return std::nullopt;
  }
}

// The request line as a JSON object with a string "command", or the error
// to answer.
Result<json> parse_request(std::string_view line) {
  bool too_deep = false;
  json request = json::parse(
      line,
      [&too_deep](int depth, json::parse_event_t, json&) {
        if (depth > kMaxRequestDepth) too_deep = true;
        return !too_deep;
      },
      false);
  if (too_deep)
    return fail(Errc::kInvalidArgument,
                "request nested deeper than " + std::to_string(kMaxRequestDepth));
  if (request.is_discarded()) return fail(Errc::kInvalidArgument, "request is not valid JSON");
  if (!request.is_object()) return fail(Errc::kInvalidArgument, "request must be a JSON object");
  auto command = request.find("command");
  if (command == request.end() || !command->is_string())
    return fail(Errc::kInvalidArgument, "request has no \"command\" string");
  return request;
}

}  // namespace

struct Server::Client {
  ClientId id = 0;
  UniqueFd fd;
  std::string in;
  std::string out;
  std::size_t sent = 0;
  bool answered = false;
  bool waiting_writable = false;
  runtime::EventLoop::TimerId timer = 0;
};

json to_json(const ServerStats& stats) {
  return json{{"requests", stats.requests},
              {"denied", stats.denied},
              {"oversized", stats.oversized},
              {"timed_out", stats.timed_out},
              {"rejected_busy", stats.rejected_busy}};
}

Server::Server(runtime::EventLoop& loop, Handler handler, ServerLimits limits)
    : loop_(loop), handler_(std::move(handler)), limits_(limits) {}

Result<std::unique_ptr<Server>> Server::start(runtime::EventLoop& loop,
                                              const config::ApiConfig& config, Handler handler,
                                              ServerLimits limits) {
  if (!handler) return fail(Errc::kInvalidArgument, "api server: no request handler");
  if (limits.max_clients == 0 || limits.max_request_bytes == 0)
    return fail(Errc::kInvalidArgument, "api server: limits must be positive");
  auto addr = unix_address(config.socket);
  if (!addr) return std::unexpected(addr.error());
  std::optional<gid_t> group;
  if (!config.group.empty()) {
    auto gid = resolve_group(config.group);
    if (!gid) return std::unexpected(gid.error());
    group = *gid;
  }
  if (auto ok = ensure_directory(fs::path(config.socket).parent_path()); !ok)
    return std::unexpected(ok.error());
  if (auto ok = remove_stale_socket(config.socket, *addr); !ok) return std::unexpected(ok.error());

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket", errno);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
    if (errno == EADDRINUSE)  // another agent started between our probe and bind
      return fail(Errc::kIo, "another agent is serving on api-socket " + config.socket);
    return fail_errno("binding api-socket " + config.socket, errno);
  }
  std::unique_ptr<Server> server(new Server(loop, std::move(handler), limits));
  server->own_euid_ = ::geteuid();
  server->group_ = group;
  server->group_name_ = config.group;
  // From here on the destructor unlinks the file if a later step fails.
  struct stat st {};
  if (::lstat(config.socket.c_str(), &st) != 0)
    return fail_errno("api-socket " + config.socket, errno);
  server->path_ = config.socket;
  server->socket_dev_ = st.st_dev;
  server->socket_ino_ = st.st_ino;

  // Before listen(): nobody can connect while the mode is still the umask's.
  if (::chmod(config.socket.c_str(), group ? 0660 : 0600) != 0)
    return fail_errno("chmod api-socket " + config.socket, errno);
  if (group && ::chown(config.socket.c_str(), static_cast<uid_t>(-1), *group) != 0)
    return fail_errno("chgrp api-socket " + config.socket + " to " + config.group, errno);
  if (::listen(fd.get(), SOMAXCONN) != 0)
    return fail_errno("listen on api-socket " + config.socket, errno);
  Server* self = server.get();
  auto acceptor = runtime::Acceptor::start(
      loop, std::move(fd), "api-socket " + config.socket,
      [self](UniqueFd client, const sockaddr_storage&) { self->admit(std::move(client)); });
  if (!acceptor) return std::unexpected(acceptor.error());
  server->acceptor_ = std::move(*acceptor);
  return server;
}

Server::~Server() {
  for (auto& [id, client] : clients_) {
    loop_.remove(client->fd.get());
    loop_.cancel(client->timer);
  }
  clients_.clear();
  acceptor_.reset();
  struct stat st {};
  if (!path_.empty() && ::lstat(path_.c_str(), &st) == 0 && st.st_dev == socket_dev_ &&
      st.st_ino == socket_ino_)
    ::unlink(path_.c_str());
}

void Server::admit(UniqueFd fd) {
  if (clients_.size() >= limits_.max_clients) {
    ++stats_.rejected_busy;
    // Best effort: the socket buffer is empty, so a short line fits.
    auto line = error_line("busy: " + std::to_string(limits_.max_clients) +
                           " API clients already connected; retry");
    (void)::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    return;
  }
  auto client = std::make_unique<Client>();
  client->id = next_client_++;
  client->fd = std::move(fd);
  ClientId id = client->id;
  if (auto ok = loop_.add(client->fd.get(), EPOLLIN,
                          [this, id](std::uint32_t events) { on_client_ready(id, events); });
      !ok) {
    spdlog::warn("api: watching a client of {}: {}", path_, ok.error().message);
    return;
  }
  client->timer = loop_.after(limits_.request_timeout, [this, id] { on_timeout(id); });
  Client& c = *clients_.emplace(id, std::move(client)).first->second;
  if (auto why = refuse_reason(c.fd.get())) {
    ++stats_.denied;
    spdlog::debug("api: refused a caller of {}: {}", path_, *why);
    answer(c, error_reply("permission denied: " + *why));
  }
}

std::optional<std::string> Server::refuse_reason(int fd) const {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return describe_errno("reading the caller's credentials", errno);
  if (cred.uid == 0 || cred.uid == own_euid_) return std::nullopt;
  std::string who = "uid " + std::to_string(cred.uid) + " (pid " + std::to_string(cred.pid) + ")";
  if (!group_) return who + " is neither root nor the agent's user";
  if (cred.gid == *group_) return std::nullopt;
  auto groups = peer_groups(fd, cred.pid);
  if (groups && std::ranges::find(*groups, *group_) != groups->end()) return std::nullopt;
  return who + " is neither root, the agent's user, nor in group " + group_name_;
}

void Server::on_client_ready(ClientId id, std::uint32_t events) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  // After the answer only writability (or the error that ends it) matters.
  if (c.answered) {
    flush(c);
    return;
  }
  if ((events & EPOLLERR) != 0) {
    close_client(id);
    return;
  }
  read_request(c);
}

void Server::read_request(Client& c) {
  char chunk[kReadChunk];
  const std::size_t cap = limits_.max_request_bytes;
  for (;;) {
    // One byte past the cap tells an oversized request from a full one.
    std::size_t room = cap + 1 - c.in.size();
    ssize_t n = ::recv(c.fd.get(), chunk, std::min(sizeof(chunk), room), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) close_client(c.id);
      return;
    }
    std::size_t scanned = c.in.size();
    c.in.append(chunk, static_cast<std::size_t>(n));
    std::size_t newline = c.in.find('\n', scanned);
    bool complete = newline != std::string::npos || n == 0;  // EOF also ends it
    std::size_t length = newline != std::string::npos ? newline + 1 : c.in.size();
    if (length > cap) {
      ++stats_.oversized;
      answer(c, error_reply("request too large: over " + std::to_string(cap) + " bytes"));
      return;
    }
    if (!complete) continue;
    if (newline == std::string::npos && c.in.empty()) {  // left without asking
      close_client(c.id);
      return;
    }
    ++stats_.requests;
    c.in.resize(std::min(c.in.size(), newline));
    auto request = parse_request(c.in);
    if (!request) {
      answer(c, error_reply(request.error().message));
      return;
    }
    json reply;
    try {
      reply = handler_(*request);
    } catch (const std::exception& e) {
      spdlog::warn("api: {} failed: {}", (*request)["command"].get<std::string>(), e.what());
      reply = error_reply(std::string("internal error: ") + e.what());
    } catch (...) {
      reply = error_reply("internal error");
    }
    answer(c, reply);
    return;
  }
}

void Server::answer(Client& c, const json& reply) {
  try {
    c.out = reply.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  } catch (const std::exception& e) {
    c.out = error_line(std::string("internal error: ") + e.what());
  }
  c.answered = true;
  c.in = std::string();  // release the request buffer
  loop_.cancel(c.timer);
  ClientId id = c.id;
  c.timer = loop_.after(limits_.reply_timeout, [this, id] { on_timeout(id); });
  flush(c);
}

void Server::flush(Client& c) {
  switch (flush_reply(loop_, c.fd.get(), c.out, c.sent, c.waiting_writable)) {
    case Flushed::kBlocked:
      return;
    case Flushed::kGone:
      close_client(c.id);
      return;
    case Flushed::kDone:
      break;
  }
  close_client(c.id);
}

void Server::on_timeout(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  c.timer = 0;
  ++stats_.timed_out;
  if (!c.answered) {
    auto line = error_line("timeout: no complete request within " +
                           std::to_string(limits_.request_timeout.count()) + " ms");
    (void)::send(c.fd.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  close_client(id);
}

void Server::close_client(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  loop_.remove(it->second->fd.get());
  if (it->second->timer != 0) loop_.cancel(it->second->timer);
  clients_.erase(it);  // closes the fd
}

std::optional<std::vector<gid_t>> groups_from_proc_status(std::string_view status) {
  constexpr std::string_view kKey = "Groups:";
  std::size_t at = 0;
  while (at < status.size() && !status.substr(at).starts_with(kKey)) {
    at = status.find('\n', at);
    if (at == std::string_view::npos) return std::nullopt;
    ++at;
  }
  if (at >= status.size()) return std::nullopt;
  std::string_view line = status.substr(at + kKey.size());
  line = line.substr(0, line.find('\n'));
  std::vector<gid_t> groups;
  std::size_t i = 0;
  while (i < line.size()) {
    if (line[i] == ' ' || line[i] == '\t') {
      ++i;
      continue;
    }
    gid_t gid = 0;
    auto [end, ec] = std::from_chars(line.data() + i, line.data() + line.size(), gid);
    if (ec != std::errc() || groups.size() >= kMaxGroups) return std::nullopt;
    groups.push_back(gid);
    i = static_cast<std::size_t>(end - line.data());
  }
  return groups;
}

}  // namespace trustfence::api
